"""
A wsgi-sse server for the cross-process presence tests, run with
``twistd -ny server.py``: the backplane comes from $WSGI_SSE_BACKPLANE_URL,
the presence interval from $PRESENCE_INTERVAL.

The cookie ``user`` names a stream's owner.  GET /presence?channel=c answers
the channel's presence as JSON; POST /disconnect?identity=u ends u's streams
in every process.  GET /presence-memory answers what the other processes'
reports take (estimated bytes, channels, overflow); POST
/presence-bound?total=n&process=m sets the bounds on them.
"""

import json
import os
from urllib.parse import parse_qs

import wsgi_sse
from wsgi_sse import Allowed, make_application
from wsgi_sse._presence import _current_hub


def authorize(request):
    """Everyone may join; the cookie 'user' names who the stream belongs to."""
    return Allowed(True, identity=request.cookies.get("user"))


def app(environ, start_response):
    """/presence and /disconnect."""
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ["PATH_INFO"] == "/presence":
        now = wsgi_sse.presence(query["channel"])
        body = json.dumps({"identities": dict(now.identities), "guests": now.guests})
    elif environ["PATH_INFO"] == "/presence-memory":
        tracker = _current_hub().presence
        body = json.dumps(
            {
                "remote_bytes": getattr(tracker, "remote_bytes", None),
                "overflow": getattr(tracker, "overflow", None),
                "channels": len(tracker.channels()),
            }
        )
    elif environ["PATH_INFO"] == "/presence-bound":
        tracker = _current_hub().presence
        tracker.max_remote_bytes = int(query.get("total", tracker.max_remote_bytes))
        tracker.max_process_bytes = int(query.get("process", tracker.max_process_bytes))
        body = "{}"
    elif environ["PATH_INFO"] == "/disconnect":
        wsgi_sse.disconnect(identity=query["identity"])
        body = "{}"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


application = make_application(
    app,
    authorize=authorize,
    presence_interval=float(os.environ.get("PRESENCE_INTERVAL", "10")),
)
