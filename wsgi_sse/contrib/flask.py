"""
Flask integration: hold an event stream from a view.

    from flask import Flask, abort
    from wsgi_sse.contrib.flask import hold_stream

    app = Flask(__name__)

    @app.get("/jobs/<int:job_id>/events")
    def job_events(job_id):
        if not allowed(job_id):
            abort(403)
        return hold_stream(f"job-{job_id}")

Flask is imported when this module is, never by C{import wsgi_sse}.
"""

from __future__ import annotations

from flask import Response

from .._views import hold_body, hold_headers

__all__ = ["hold_stream"]


def hold_stream(*channels: str, initial: object = None, identity: str | None = None) -> Response:
    """
    Answer a view with an event stream on C{channels}, held by the server
    after the view returns (its thread is free at once).  C{initial}, if
    not L{None}, is sent first as an C{init} event; C{identity} (the user
    the view authenticated) is who the stream belongs to, for
    L{presence<wsgi_sse.presence>} and L{disconnect<wsgi_sse.disconnect>}.
    May be called in any thread.

    @raise ValueError: for no channel or a name that cannot be a channel,
        or an identity a stream cannot carry.
    @raise TypeError: if C{initial} cannot be encoded.
    """
    return Response(hold_body(initial), headers=hold_headers(*channels, identity=identity))
