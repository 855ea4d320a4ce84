"""
The WSGI container: twisted.web's, its environ completed the way WSGI servers
such as waitress give it.

twisted.web reads a request's whole body (de-chunking it) before the app is
called, but describes it as it came off the wire: a chunked body keeps
C{HTTP_TRANSFER_ENCODING: chunked} and an empty C{CONTENT_LENGTH}.
Frameworks then read nothing (Flask: an empty body) or try to de-chunk it a
second time (Bottle: a 400).  L{WSGIContainer} gives the app the body's real
length, no transfer coding, and C{wsgi.input_terminated}.

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.server import NOT_DONE_YET
from twisted.web.wsgi import WSGIResource, _WSGIResponse

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from twisted.python.threadpool import ThreadPool
    from twisted.web.server import Request

__all__ = ["WSGIContainer", "complete_environ"]


class WSGIContainer(WSGIResource):
    """A C{WSGIResource} whose environ describes the body the app will read."""

    def __init__(self, reactor: Any, threadpool: ThreadPool, application: WSGIApplication) -> None:
        super().__init__(reactor, threadpool, application)  # type: ignore[no-untyped-call]

    def render(self, request: Request) -> Any:
        """Build the environ, complete it, and run the app in the thread pool."""
        response = _WSGIResponse(
            self._reactor,
            self._threadpool,
            self._application,
            request,
        )
        complete_environ(response.environ, request)
        response.start()
        return NOT_DONE_YET


def complete_environ(environ: dict[str, Any], request: Request) -> None:
    """
    Complete the environ twisted.web built the way waitress builds it.

    - The body twisted.web has already read in full: its length in
      C{CONTENT_LENGTH} when it came with a transfer coding (chunked) or,
      over HTTP/2, without a length; no C{HTTP_TRANSFER_ENCODING}; and
      C{wsgi.input_terminated = True} (reading C{wsgi.input} to its end is
      always safe).
    - No C{CONTENT_LENGTH} or C{CONTENT_TYPE} when the request has none
      (twisted.web sets them to C{""}, which breaks the common
      C{int(environ.get("CONTENT_LENGTH", 0))}).
    - A header sent several times is joined with C{", "} (RFC 9110), not
      C{","}; C{Cookie} headers with C{"; "}, as cookie parsers expect.
    """
    environ["wsgi.input_terminated"] = True
    coded = environ.pop("HTTP_TRANSFER_ENCODING", None) is not None
    if coded or not environ.get("CONTENT_LENGTH"):
        # Chunked over HTTP/1.1, or an HTTP/2 body sent without a length.
        length = _remaining(request.content)
        if coded or length:
            environ["CONTENT_LENGTH"] = str(length)
    if not environ.get("CONTENT_LENGTH"):
        environ.pop("CONTENT_LENGTH", None)
    if not environ.get("CONTENT_TYPE"):
        environ.pop("CONTENT_TYPE", None)
    for name, values in request.requestHeaders.getAllRawHeaders():
        if len(values) > 1:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            if key in environ:
                # Cookie pairs are separated by "; " (RFC 6265; HTTP/2 sends
                # each cookie in a header of its own, RFC 9113 8.2.3).
                separator = "; " if key == "HTTP_COOKIE" else ", "
                joined = separator.join(v.decode("latin-1") for v in values)
                environ[key] = joined.replace("\n", " ")


def _remaining(content: Any) -> int:
    """The bytes left to read in a request body's file (none: C{0})."""
    if content is None:
        return 0
    position = content.tell()
    content.seek(0, 2)
    end = content.tell()
    content.seek(position)
    return int(end - position)
