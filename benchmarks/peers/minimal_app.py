"""
The least a WSGI application can do to answer ``POST /knock``: read the
form, answer ``ok``.  The ladder of ``benchmarks/requestcost.py`` serves it
under twisted.web's WSGI container and under wsgi-sse.
"""

from urllib.parse import parse_qs


def app(environ, start_response):
    """Read the posted form; answer C{ok}, as the floor does."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    parse_qs(environ["wsgi.input"].read(length).decode("latin-1"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
