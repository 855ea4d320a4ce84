"""
Bottle integration: hold an event stream from a view.

    from bottle import Bottle, abort
    from wsgi_sse.contrib.bottle import hold_stream

    app = Bottle()

    @app.get("/jobs/<job_id:int>/events")
    def job_events(job_id):
        if not allowed(job_id):
            abort(403)
        return hold_stream(f"job-{job_id}")

Bottle is imported when this module is, never by C{import wsgi_sse}.
"""

from __future__ import annotations

from bottle import HTTPResponse

from .._views import hold_body, hold_headers

__all__ = ["hold_stream"]


def hold_stream(*channels: str, initial: object = None) -> HTTPResponse:
    """
    Answer a route with an event stream on C{channels}, held by the server
    after the route returns (its thread is free at once).  C{initial}, if
    not L{None}, is sent first as an C{init} event.  May be called in any
    thread.

    @raise ValueError: for no channel or a name that cannot be a channel.
    @raise TypeError: if C{initial} cannot be encoded.
    """
    return HTTPResponse(hold_body(initial), headers=dict(hold_headers(*channels)))
