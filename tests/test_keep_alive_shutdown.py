"""
HTTP/1.1 connections at a graceful shutdown: a real server on a loopback
port, raw sockets as clients.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from support import _crochet, serve

entered = threading.Event()
release = threading.Event()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A page at once, or at /slow one that waits for the test."""
    if environ["PATH_INFO"] == "/slow":
        entered.set()
        release.wait(10)
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def ask(sock: socket.socket, path: str) -> None:
    """Send a GET of C{path} (HTTP/1.1, kept alive)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())


def answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one answer with a Content-Length: (its head, its body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(4096)
        assert more, f"closed before an answer: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(h for h in lines if h.lower().startswith(b"content-length:"))[15:])
    while len(body) < length:
        more = sock.recv(4096)
        assert more, "closed in the body"
        body += more
    assert len(body) == length, "more than the answer"
    return head, body


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (EOF) with nothing more sent."""
    return sock.recv(4096) == b""


def test_shutdown_closes_idle_keep_alive_and_answers_in_flight_with_close() -> None:
    """At stop: an idle kept-alive connection closes; answers in flight say Connection: close."""
    entered.clear()
    release.clear()
    with serve(app, shutdown_timeout=10) as server:
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in "abc"]
        idle, busy, fresh = sockets
        try:
            ask(idle, "/page")
            head, body = answer(idle)
            assert body == b"/page" and b"connection: close" not in head.lower()
            ask(busy, "/slow")
            assert entered.wait(10)
            stopping = _crochet().run_in_reactor(server.service.stopService)()
            assert closed(idle)
            # Accepted before the stop, nothing sent yet: left to send its
            # request (a static file, served without a WSGI thread).
            ask(fresh, "/sse.js")
            head, _ = answer(fresh)
            assert b"200 OK" in head and b"Connection: close" in head.split(b"\r\n")
            assert closed(fresh)
            release.set()
            head, body = answer(busy)
            assert body == b"/slow" and b"Connection: close" in head.split(b"\r\n")
            assert closed(busy)
            stopping.wait(15)
        finally:
            release.set()
            for sock in sockets:
                sock.close()
