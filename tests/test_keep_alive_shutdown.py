"""
HTTP/1.1 connections at a graceful shutdown: a real server on a loopback
port, raw sockets as clients.
"""

from __future__ import annotations

import gc
import socket
import threading
from typing import Any

from support import _crochet, serve, wait_until

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


def test_shutdown_answers_a_paused_connection_with_close() -> None:
    """
    A connection whose reading is paused at the stop (it sent more requests
    behind one in flight than twisted.web reads ahead) is answered with
    Connection: close and closed, like every other: the requests behind are
    left for the client to send again, to whatever listens by then.
    """
    entered.clear()
    release.clear()
    with serve(app, shutdown_timeout=10) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as pipelined:
            stopping = stop_with_reading_paused(server, pipelined, "/slow")
            head, body = answer(pipelined)
            assert body == b"/slow" and b"Connection: close" in head.split(b"\r\n")
            assert closed(pipelined)
            stopping.wait(15)


def stop_with_reading_paused(server: Any, pipelined: socket.socket, path: str) -> Any:
    """
    Ask C{path} (an answer that waits for the test) on C{pipelined}, then
    24 KB of requests behind it, more than twisted.web reads ahead: reading
    pauses.  Then stop the server and let the answer go on; return the
    stop's pending result.
    """
    ask(pipelined, path)
    assert entered.wait(10)
    for _ in range(600):
        ask(pipelined, "/page")
    wait_until(lambda: server.call(lambda: _paused(server.service.site)), what="reading paused")
    stopping = _crochet().run_in_reactor(server.service.stopService)()
    release.set()
    return stopping


def _paused(site: Any) -> bool:
    """Whether one of C{site}'s connections is open, answering, but not being read."""
    from twisted.internet import reactor
    from twisted.web.http import HTTPChannel

    from wsgi_sse._site import _http11_channel

    readers = {_http11_channel(getattr(s, "protocol", None)) for s in reactor.getReaders()}
    return any(
        isinstance(c, HTTPChannel)
        and getattr(c, "site", None) is site
        and c.transport is not None
        and c.requests
        and c not in readers
        for c in gc.get_objects()
    )


def streaming_app(environ: dict[str, Any], start_response: Any) -> Any:
    """At /stream, a body in two pieces, the second once the test releases it."""
    if environ["PATH_INFO"] != "/stream":
        return app(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain")])

    def pieces() -> Any:
        yield b"first,"
        entered.set()
        release.wait(10)
        yield b"second"

    return pieces()


def test_shutdown_closes_a_paused_connection_after_an_answer_already_started() -> None:
    """
    An answer whose head went out before the stop, on a connection whose
    reading is paused: the connection closes once the answer is complete,
    and the requests behind it are not answered.
    """
    entered.clear()
    release.clear()
    with serve(streaming_app, shutdown_timeout=10) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as pipelined:
            stopping = stop_with_reading_paused(server, pipelined, "/stream")
            data = b""
            while True:
                more = pipelined.recv(65536)
                if not more:
                    break  # closed by the server
                data += more
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"Transfer-Encoding: chunked" in head.split(b"\r\n")
            assert body == b"6\r\nfirst,\r\n6\r\nsecond\r\n0\r\n\r\n"  # and nothing after it
            stopping.wait(15)
