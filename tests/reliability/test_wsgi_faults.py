"""The WSGI app raising, hanging, or exhausting its thread pool."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support import http_request, serve

from wsgi_sse import broadcast

THREADS = 3
release = threading.Event()
entered = threading.Semaphore(0)


def faulty_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """/raise raises, /hang blocks until released, anything else says hello."""
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("view exploded")
    if path == "/raise-late":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Any:
            yield b"partial"
            raise RuntimeError("iterator exploded")

        return body()  # type: ignore[return-value]
    if path == "/hang":
        entered.release()
        release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"released"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


class _Request(threading.Thread):
    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.result: tuple[int, bytes] | None = None

    def run(self) -> None:
        status, _, body = http_request(self.port, "GET", self.path, timeout=30)
        self.result = (status, body)


def test_raising_view_is_a_500_and_streams_go_on() -> None:
    """A view that raises (before or while answering) costs only its own request."""
    with serve(faulty_app, threads=THREADS) as server:
        with server.stream() as stream:
            server.wait_clients(1)
            for _ in range(THREADS * 3):
                assert http_request(server.port, "GET", "/raise")[0] == 500
                # (HTTP/1.0: a body cut short has its connection reset.)
                with pytest.raises(ConnectionResetError):
                    http_request(server.port, "GET", "/raise-late")
            broadcast("alive")
            assert stream.wait_events(1)[0].data == "alive"
            assert http_request(server.port, "GET", "/")[2] == b"hello"
            assert server.client_count() == 1


def test_exhausted_pool_keeps_streams_and_heartbeats_flowing_and_recovers() -> None:
    """With every WSGI thread blocked, streams open and events and heartbeats flow; it recovers."""
    release.clear()
    with serve(faulty_app, threads=THREADS, heartbeat=0.2) as server:
        with server.stream() as stream:
            server.wait_clients(1)
            hung = [_Request(server.port, "/hang") for _ in range(THREADS + 2)]
            for request in hung:
                request.start()
            for _ in range(THREADS):
                assert entered.acquire(timeout=10)
            queued = _Request(server.port, "/")
            queued.start()
            time.sleep(0.3)
            assert queued.result is None  # the pool really is exhausted

            # Streams: new ones open, events flow (from this thread and from
            # the reactor), and heartbeats keep coming.
            with server.stream() as late:
                server.wait_clients(2)
                comments_before = len(stream.parser.comments)
                for n in range(20):
                    broadcast({"n": n})
                late.wait_events(20)
                stream.wait_events(20)
                stream.wait_for(lambda c: len(c.parser.comments) >= comments_before + 3, 5)
            assert [e.data for e in stream.events] == [f'{{"n":{n}}}' for n in range(20)]

            # Unblock: every queued request is answered, the pool serves again.
            release.set()
            for request in [*hung, queued]:
                request.join(15)
            assert [r.result for r in hung] == [(200, b"released")] * len(hung)
            assert queued.result == (200, b"hello")
            assert http_request(server.port, "GET", "/")[2] == b"hello"
            broadcast("after")
            assert stream.wait_events(21)[-1].data == "after"
