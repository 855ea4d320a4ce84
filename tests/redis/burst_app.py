"""
A WSGI app for the Redis tests and benchmark, run with ``python -m wsgi_sse
burst_app:app``: ``POST /burst?tag=T&n=N&channel=C`` broadcasts N events
``T:i`` from the view; ``POST /close?channel=C`` closes a channel; ``GET
/hold?channel=C`` holds a stream on it; ``GET /stats`` answers the
backplane's counters.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from wsgi_sse import broadcast, close, get_broadcaster, hold_headers


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Broadcast bursts, report stats."""
    path = environ["PATH_INFO"]
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/burst" and environ["REQUEST_METHOD"] == "POST":
        tag, n, channel = query["tag"], int(query.get("n", "1")), query.get("channel")
        stamp = query.get("stamp") == "1"
        for i in range(n):
            data = f"{tag}:{i}:{time.time():.6f}" if stamp else f"{tag}:{i}"
            broadcast(data, channel=channel)
        body = b"ok"
    elif path == "/close" and environ["REQUEST_METHOD"] == "POST":
        close(query["channel"])
        body = b"closed"
    elif path == "/hold":
        start_response("200 OK", hold_headers(query["channel"]))
        return []
    elif path == "/stats":
        hub = get_broadcaster().publisher
        body = json.dumps(hub.backplane.stats()).encode()  # type: ignore[attr-defined]
    else:
        body = b"burst app"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
