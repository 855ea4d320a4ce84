"""
The WSGI app the reliability suite serves in child processes.

- ``GET /state``: what the server holds (clients, subscribers, per-address
  counters, RSS, peak RSS), as JSON, when run by ``rel_server.py``;
- ``POST /pump?n=&size=&pause=&channel=``: broadcast ``n`` events
  ``{"i": k, "pad": ..., "channel": ...}``
  from a worker thread (returns at once);
- ``GET /slow?t=``: answer after ``t`` seconds (a WSGI request in flight);
- anything else: ``hello``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from wsgi_sse import broadcast

# Set by rel_server.py: a callable returning the server's state (reactor thread).
STATE: Any = None


def _pump(n: int, size: int, pause: float, channel: str | None) -> None:
    pad = "x" * size
    for i in range(n):
        broadcast({"i": i, "pad": pad, "channel": channel}, channel=channel)
        if pause:
            time.sleep(pause)


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Serve the suite's control endpoints."""
    path = environ["PATH_INFO"]
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/state" and STATE is not None:
        from twisted.internet import reactor
        from twisted.internet.threads import blockingCallFromThread

        body = json.dumps(blockingCallFromThread(reactor, STATE, "reset" in query)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/pump" and environ["REQUEST_METHOD"] == "POST":
        threading.Thread(
            target=_pump,
            args=(
                int(query.get("n", "1")),
                int(query.get("size", "10")),
                float(query.get("pause", "0")),
                query.get("channel"),
            ),
            daemon=True,
        ).start()
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [b"pumping"]
    if path == "/slow":
        time.sleep(float(query.get("t", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow done"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
