"""
The stream's opening ``retry:`` and its heartbeats, as clients we did not
write read them: httpx-sse and npm ``eventsource`` (Chromium and htmx have
their own tests under tests/browser/).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse
from support import ROOT, end_streams_until_reconnected, serve, subprocess_env

from wsgi_sse import broadcast


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer every page with hello."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_httpx_sse_sees_no_empty_messages_and_gets_the_retry() -> None:
    """httpx-sse yields only the events (heartbeats between them); the first carries the retry."""
    with serve(hello_app, heartbeat=0.05, retry=4321, retry_jitter=0) as server:
        seen: list[ServerSentEvent] = []
        done = threading.Event()

        def read() -> None:
            with (
                httpx.Client(timeout=30) as client,
                connect_sse(client, "GET", server.url + "/sse") as source,
            ):
                for sse in source.iter_sse():
                    seen.append(sse)
                    if sse.data == "last":
                        done.set()
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        server.wait_clients(1)
        beats = server.service.sse_resource.stats
        for data in ("first", "second", "last"):
            # Let heartbeats go out between events, after an id was seen.
            sent = server.call(lambda: beats.bytes_written)
            deadline = time.monotonic() + 10
            while server.call(lambda: beats.bytes_written) < sent + 6:
                assert time.monotonic() < deadline, "no heartbeat went out"
                time.sleep(0.02)
            broadcast(data)
        assert done.wait(30)
        reader.join(10)
    assert [(e.event, e.data) for e in seen] == [
        ("message", "first"),
        ("message", "second"),
        ("message", "last"),
    ]
    assert [e.retry for e in seen] == [4321, None, None]
    assert all(e.id for e in seen)


def test_npm_eventsource_applies_the_opening_retry_before_any_event() -> None:
    """npm eventsource reconnects after the server's retry (100 ms), read before any event."""
    assert (ROOT / "tests" / "js" / "node_modules" / "eventsource").exists(), (
        "run `npm ci` in tests/js (scripts/bootstrap.sh does)"
    )
    with serve(hello_app, retry=100, retry_jitter=0) as server:
        proc = subprocess.Popen(
            ["node", "read_events.mjs", server.url + "/sse", "1000"],
            cwd=ROOT / "tests" / "js",
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline()) == "open"
            # Five reconnects: 0.5 s at 100 ms each; the package's own 3 s
            # default would need 15 s.
            reconnects = end_streams_until_reconnected(server, 5, timeout=12)
        finally:
            proc.kill()
            proc.communicate()
    assert reconnects >= 5, reconnects
