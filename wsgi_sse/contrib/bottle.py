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


def hold_stream(
    *channels: str, initial: object = None, identity: str | None = None
) -> HTTPResponse:
    """
    Answer a route with an event stream on C{channels}, held by the server
    after the route returns (its thread is free at once).  C{initial}, if
    not L{None}, is sent first as an C{init} event; C{identity} (the user
    the route authenticated) is who the stream belongs to, for
    L{presence<wsgi_sse.presence>} and L{disconnect<wsgi_sse.disconnect>}.
    May be called in any thread.

    @raise ValueError: for no channel or a name that cannot be a channel,
        or an identity a stream cannot carry.
    @raise TypeError: if C{initial} cannot be encoded.
    """
    return HTTPResponse(
        hold_body(initial), headers=dict(hold_headers(*channels, identity=identity))
    )
