"""
A streamed WSGI body waits for a client that reads slowly: the WSGI thread
hands over no more than a bounded amount ahead of what the connection has
sent, and a client that goes away (or reads nothing for max_pause) stops
the body and closes it.  Real sockets on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import serve, wait_until

PIECE = 256 * 1024
CAP = 32 * 1024 * 1024  # the most the body would ever produce
BOUND = CAP // 2  # far above what the kernel's buffers and the server's bound hold


class Body:
    """A body of up to CAP bytes that records how much it produced and its close()."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        while self.produced < CAP:
            piece = bytes([self.produced // PIECE % 251]) * PIECE
            self.produced += PIECE
            yield piece

    def close(self) -> None:
        assert not self.closed.is_set(), "closed twice"
        self.closed.set()


bodies: list[Body] = []


def app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/medium":
        start_response("200 OK", [("Content-Length", str(4 * PIECE))])
        return (b"m" * PIECE for _ in range(4))
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    body = Body()
    bodies.append(body)
    if environ["PATH_INFO"] == "/written":
        # The write() callable is held back the same way.
        try:
            for piece in body:
                write(piece)
        finally:
            body.close()
        return []
    return body


def _not_reading(port: int, path: str = "/big") -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _settled(body: Body) -> int:
    """What C{body} produced once it stopped producing (or reached its cap)."""
    last = -1
    while body.produced != last and body.produced < CAP:
        last = body.produced
        time.sleep(0.3)
    return body.produced


@pytest.fixture
def server() -> Iterator[Any]:
    bodies.clear()
    with serve(app) as running:
        yield running


def test_a_client_that_does_not_read_holds_the_body_back(server: Any) -> None:
    """The body waits for the client instead of piling up in the server; all of it arrives."""
    with _not_reading(server.port) as sock:
        wait_until(lambda: bodies and bodies[0].produced > 0, what="the body to start")
        body = bodies[0]
        assert _settled(body) < BOUND
        sock.settimeout(30)
        raw = bytearray()
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(1 << 20)
            assert data, "the connection closed early"
            raw += data
    chunks = raw.partition(b"\r\n\r\n")[2]
    # Each piece in a chunk of its own: its size line, its bytes, CRLF.
    framing = b"%x\r\n" % PIECE
    step = len(framing) + PIECE + 2
    assert len(chunks) == CAP // PIECE * step + len(b"0\r\n\r\n")
    for i in range(CAP // PIECE):
        start = i * step
        assert chunks[start : start + len(framing)] == framing
        assert chunks[start + len(framing)] == i % 251
    assert body.closed.is_set()


def test_the_connection_serves_the_next_body_after_a_held_one(server: Any) -> None:
    """Once a held body is done, the kept-alive connection streams the next one as well."""
    with _not_reading(server.port) as sock:
        wait_until(lambda: bodies and bodies[0].produced > 0, what="the body to start")
        assert _settled(bodies[0]) < BOUND
        sock.settimeout(30)
        stream = sock.makefile("rb")
        while stream.readline() != b"\r\n":
            pass
        while size := int(stream.readline(), 16):
            stream.read(size + 2)
        stream.readline()
        sock.sendall(b"GET /medium HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stream.readline() == b"HTTP/1.1 200 OK\r\n"
        while stream.readline() != b"\r\n":
            pass
        assert stream.read(4 * PIECE) == b"m" * 4 * PIECE


@pytest.mark.parametrize("path", ["/big", "/written"])
def test_a_client_that_leaves_stops_and_closes_the_body(server: Any, path: str) -> None:
    """A client that goes away while the body waits for it ends the body: close() is called."""
    with _not_reading(server.port, path):
        wait_until(lambda: bodies and bodies[0].produced > 0, what="the body to start")
        assert _settled(bodies[0]) < BOUND
    assert bodies[0].closed.wait(10)
    assert bodies[0].produced < BOUND


def test_a_client_that_reads_nothing_for_max_pause_is_dropped() -> None:
    """A reader stalled for max_pause seconds loses its connection, and the body is closed."""
    bodies.clear()
    with serve(app, max_pause=0.5) as running, _not_reading(running.port) as sock:
        wait_until(lambda: bodies and bodies[0].closed.is_set(), what="the body to be closed")
        assert bodies[0].produced < BOUND
        sock.settimeout(10)
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
