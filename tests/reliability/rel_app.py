"""
The WSGI app the reliability suite serves in child processes.

- ``GET /state``: what the server holds (clients, subscribers, per-address
  counters, RSS, peak RSS), as JSON, when run by ``rel_server.py``;
- ``POST /pump?n=&size=&pause=&channel=``: broadcast ``n`` events
  ``{"i": k, "pad": ..., "channel": ...}``
  from a worker thread (returns at once);
- ``POST /spray?n=&prefix=&size=``: broadcast one event to each of ``n``
  channels ``<prefix>0`` ... from a worker thread (returns at once);
- ``GET /slow?t=``: answer after ``t`` seconds (a WSGI request in flight);
- ``POST /form``: read the body in pieces, as a framework's form parser
  would, and answer its length and field count as JSON;
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


def _spray(n: int, prefix: str, size: int) -> None:
    pad = "x" * size
    for i in range(n):
        broadcast({"i": i, "pad": pad}, channel=f"{prefix}{i}")


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
    if path == "/form" and environ["REQUEST_METHOD"] == "POST":
        stream = environ["wsgi.input"]
        # Without a length (a chunked body) read to the end of the input.
        remaining = int(environ.get("CONTENT_LENGTH") or 1 << 62)
        length = fields = 0
        while remaining > 0:
            piece = stream.read(min(remaining, 1 << 16))
            if not piece:
                break
            remaining -= len(piece)
            length += len(piece)
            fields += piece.count(b"&")
        body = json.dumps({"length": length, "fields": fields + (1 if length else 0)}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]
    if path == "/spray" and environ["REQUEST_METHOD"] == "POST":
        threading.Thread(
            target=_spray,
            args=(
                int(query.get("n", "1")),
                query.get("prefix", "spray-"),
                int(query.get("size", "10")),
            ),
            daemon=True,
        ).start()
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [b"spraying"]
    if path == "/slow":
        time.sleep(float(query.get("t", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow done"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
