"""Slowloris: request headers trickled one byte at a time are shed."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

from support import http_request, serve

from wsgi_sse import broadcast


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer every request with hello."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def _trickle(port: int, paths: list[str], seconds: float) -> list[tuple[bytes, bool]]:
    """
    Open one connection per path and send its request head one byte per
    0.1 s; return what each received and whether the server closed it.
    """
    socks = []
    heads = []
    for path in paths:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
        heads.append(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 200}\r\n\r\n".encode())
    received = [b""] * len(paths)
    closed = [False] * len(paths)
    deadline = time.monotonic() + seconds
    position = 0
    try:
        while time.monotonic() < deadline and not all(closed):
            for i, sock in enumerate(socks):
                if closed[i]:
                    continue
                with contextlib.suppress(BlockingIOError):
                    while True:
                        data = sock.recv(4096)
                        if not data:
                            closed[i] = True
                            break
                        received[i] += data
                if closed[i] or position >= len(heads[i]):
                    continue
                try:
                    sock.send(heads[i][position : position + 1])
                except OSError:
                    closed[i] = True
            position += 1
            time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
    return list(zip(received, closed, strict=True))


def test_trickled_headers_are_shed_and_others_are_served() -> None:
    """Trickling clients on the SSE and WSGI paths get 408 and are closed; others are served."""
    with serve(hello_app, header_timeout=1.0) as server:
        with server.stream() as stream:
            server.wait_clients(1)
            start = time.monotonic()
            results = _trickle(server.port, ["/sse"] * 10 + ["/page"] * 10, seconds=6.0)
            elapsed = time.monotonic() - start
            for received, closed in results:
                assert closed
                assert received.startswith(b"HTTP/1.1 408 ")
            assert elapsed < 4.0
            # Meanwhile, and afterwards, everyone else is served.
            assert http_request(server.port, "GET", "/page")[2] == b"hello"
            broadcast("still here")
            (event,) = stream.wait_events(1)
            assert event.data == "still here"
            # An open stream is not subject to the header deadline.
            time.sleep(1.5)
            broadcast("later")
            assert stream.wait_events(2)[1].data == "later"
            assert server.client_count() == 1


def test_silent_connection_is_closed_at_the_header_deadline() -> None:
    """A connection that sends nothing at all is closed after the header timeout."""
    with serve(hello_app, header_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert data.startswith(b"HTTP/1.1 408 ")


def test_keep_alive_connection_serves_requests_after_the_deadline() -> None:
    """Each request on a kept-alive connection gets its own header deadline."""
    with serve(hello_app, header_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            for _ in range(3):
                sock.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"0\r\n\r\n"):
                    data += sock.recv(4096)
                assert data.startswith(b"HTTP/1.1 200 ") and b"hello" in data
                time.sleep(0.3)


def test_default_header_timeout_is_thirty_seconds() -> None:
    """The site a service builds gives request headers 30 seconds and idles out at 180."""
    with serve(hello_app) as server:
        assert server.service.site.header_timeout == 30.0
        assert server.service.site.timeOut == 180.0
