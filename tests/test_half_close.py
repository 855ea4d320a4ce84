"""
A client that sends its request and then half-closes the connection (its
TCP FIN: C{shutdown(SHUT_WR)}, as C{nc -N} and some health checkers do)
gets its whole answer, then the connection is closed: one request or several
pipelined ones, HTTP/1.1 or 1.0, with a body, answered at once or from the
WSGI thread pool.  A request cut short by the half-close is not handed to
the application, and the connection closes at once; an event stream whose
client half-closes is over, as when its client goes away.  Real server,
raw sockets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    RunningServer,
    dechunk,
    logged,
    self_signed_cert,
    serve,
    set_lean,
    tls_listen,
    wait_until,
)
from twisted.internet import tcp

BIG = 1 << 20
calls: list[str] = []
entered = threading.Event()
release = threading.Event()


def app(environ: dict[str, Any], start_response: Any) -> Any:
    """
    Echo the method, path and body; C{/slow} waits for the test, then
    answers in three pieces (chunked).
    """
    path = environ["PATH_INFO"]
    calls.append(path)
    body = environ["wsgi.input"].read()
    if path == "/big":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(BIG))])
        return [b"x" * BIG]
    if path == "/slow":
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one ", b"two ", b"three"])
    answer = b"%s %s %s" % (environ["REQUEST_METHOD"].encode(), path.encode(), body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    with serve(app) as server:
        yield server


@pytest.fixture(params=["one pass", "line parser"])
def server(running: RunningServer, request: Any) -> Iterator[RunningServer]:
    """The server, reading simple requests in one pass or with twisted.web's parser."""
    set_lean(running, request.param == "one pass")
    del calls[:]
    entered.clear()
    release.clear()
    try:
        yield running
    finally:
        release.set()
        set_lean(running, True)


def half_close(port: int, request: bytes) -> bytes:
    """Send C{request}, half-close, and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return read_to_end(sock)


def read_to_end(sock: socket.socket) -> bytes:
    """What arrives until EOF (a timeout fails: the server did not close)."""
    data = b""
    while True:
        more = sock.recv(65536)
        if not more:
            return data
        data += more


def answers(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split C{data} into (status line, body) pairs; bodies have a Content-Length."""
    found = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"a cut head: {head!r}"
        lines = head.split(b"\r\n")
        length = int(next(h for h in lines if h.lower().startswith(b"content-length:"))[15:])
        assert len(data) >= length, f"a cut body: {data!r}"
        found.append((lines[0], data[:length]))
        data = data[length:]
    return found


def reading(server: RunningServer, sock: socket.socket) -> bool:
    """Whether the server still reads C{sock}'s connection (has not seen its end)."""
    port = sock.getsockname()[1]

    def check() -> bool:
        from twisted.internet import reactor

        for selectable in reactor.getReaders():  # type: ignore[attr-defined]
            if isinstance(selectable, tcp.Server) and selectable.getPeer().port == port:
                return True
        return False

    return bool(server.call(check))


def wait_for_end(server: RunningServer, sock: socket.socket) -> None:
    """Wait until the server has read the end of what C{sock} sent (its half-close)."""
    wait_until(lambda: not reading(server, sock), what="the server to read the EOF")


GET_11 = b"GET /page HTTP/1.1\r\nHost: example.test\r\n\r\n"
GET_11_CLOSE = b"GET /page HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
GET_10 = b"GET /page HTTP/1.0\r\nHost: example.test\r\n\r\n"
POST = b"POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 9\r\n\r\nname=half"


@pytest.mark.parametrize("request_bytes", [GET_11, GET_11_CLOSE], ids=["keep-alive", "close"])
def test_get_then_half_close_is_answered_then_closed(
    server: RunningServer, request_bytes: bytes
) -> None:
    """A GET, then a half-close: the whole answer, then EOF (every time)."""
    for _ in range(20):
        got = answers(half_close(server.port, request_bytes))
        assert got == [(b"HTTP/1.1 200 OK", b"GET /page ")]


def test_http10_get_then_half_close_is_answered(server: RunningServer) -> None:
    """An HTTP/1.0 GET, then a half-close: the whole answer, then EOF."""
    for _ in range(20):
        got = answers(half_close(server.port, GET_10))
        assert got == [(b"HTTP/1.0 200 OK", b"GET /page ")]


def test_post_with_body_then_half_close_is_answered(server: RunningServer) -> None:
    """A POST with its whole body, then a half-close: the app read the body; the answer, EOF."""
    for _ in range(20):
        got = answers(half_close(server.port, POST))
        assert got == [(b"HTTP/1.1 200 OK", b"POST /form name=half")]


def test_pipelined_requests_then_half_close_are_all_answered_in_order(
    server: RunningServer,
) -> None:
    """Three requests in one write, then a half-close: three answers in order, then EOF."""
    pipelined = (
        b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nxyz"
        b"GET /c HTTP/1.1\r\nHost: example.test\r\n\r\n"
    )
    for _ in range(10):
        got = answers(half_close(server.port, pipelined))
        assert got == [
            (b"HTTP/1.1 200 OK", b"GET /a "),
            (b"HTTP/1.1 200 OK", b"POST /b xyz"),
            (b"HTTP/1.1 200 OK", b"GET /c "),
        ]


def test_half_close_while_the_app_runs_in_the_pool(server: RunningServer) -> None:
    """The half-close arrives while the app runs: its streamed answer is written whole, then EOF."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: example.test\r\n\r\n")
        assert entered.wait(10)
        sock.shutdown(socket.SHUT_WR)
        wait_for_end(server, sock)
        release.set()
        data = read_to_end(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    assert body.endswith(b"0\r\n\r\n") and dechunk(body) == b"one two three"


def test_half_close_after_a_partial_head_closes_without_calling_the_app(
    server: RunningServer,
) -> None:
    """Part of a head, then a half-close: closed at once, nothing sent, the app not called."""
    for partial in (b"GET /page HTTP/1.1\r\nHost: exa", b"GET /pa"):
        assert half_close(server.port, partial) == b""
    assert calls == []


def test_half_close_in_a_body_closes_without_calling_the_app(server: RunningServer) -> None:
    """A body cut short by the half-close is not handed to the app as if complete."""
    cut = b"POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nabc"
    chunked = (
        b"POST /form HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n"
    )
    for request_bytes in (cut, chunked):
        assert half_close(server.port, request_bytes) == b""
    assert calls == []


def test_half_close_after_a_whole_request_and_part_of_the_next(server: RunningServer) -> None:
    """The whole request is answered, the partial one dropped, then EOF."""
    for _ in range(10):
        got = answers(
            half_close(
                server.port,
                b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nabc",
            )
        )
        assert got == [(b"HTTP/1.1 200 OK", b"GET /a ")]
    assert calls == ["/a"] * 10


def test_half_close_of_an_idle_kept_alive_connection_closes_it(server: RunningServer) -> None:
    """A request answered, then a half-close between requests: EOF."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET_11)
        data = b""
        while not answers_complete(data):
            more = sock.recv(65536)
            assert more
            data += more
        sock.shutdown(socket.SHUT_WR)
        assert read_to_end(sock) == b""


def test_half_close_while_an_answer_is_still_being_sent(server: RunningServer) -> None:
    """
    The half-close arrives after the request was answered but before the
    client took the whole answer: the rest is sent, then EOF.
    """
    for _ in range(3):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: example.test\r\n\r\n")
            first = sock.recv(4096)
            assert first.startswith(b"HTTP/1.1 200 OK")
            sock.shutdown(socket.SHUT_WR)
            wait_for_end(server, sock)
            got = answers(first + read_to_end(sock))
        assert got == [(b"HTTP/1.1 200 OK", b"x" * BIG)]


def answers_complete(data: bytes) -> bool:
    try:
        return bool(answers(data))
    except AssertionError:
        return False


# -- event streams: a half-close ends them, as any client that goes away ------------

authorizing = threading.Event()
authorized = threading.Event()


def slow_authorize(request: Any) -> bool:
    """Let every stream in, once the test says so."""
    authorizing.set()
    authorized.wait(10)
    return True


def test_event_stream_whose_client_half_closes_is_over() -> None:
    """
    An event stream's client half-closes: the stream ends and the
    connection closes (browsers never half-close a stream; a FIN is how a
    closed tab is noticed), every time.
    """
    with serve(app) as server:
        for _ in range(5):
            with server.stream("/sse?channel=news") as stream:
                server.wait_clients(1)
                server.service.broadcaster.broadcast_and_wait("before", channel="news")
                stream.wait_events(1)
                stream.sock.shutdown(socket.SHUT_WR)
                server.wait_clients(0)
                read_to_end(stream.sock)
                assert server.service.broadcaster.broadcast_and_wait("after", channel="news") == 0


def test_event_stream_opened_after_its_client_half_closed_is_over() -> None:
    """A half-close while C{authorize} runs: the stream it opens ends at once."""
    authorizing.clear()
    authorized.clear()
    with serve(app, authorize=slow_authorize) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /sse?channel=news HTTP/1.1\r\nHost: example.test\r\n\r\n")
            assert authorizing.wait(10)
            sock.shutdown(socket.SHUT_WR)
            wait_for_end(server, sock)
            authorized.set()
            read_to_end(sock)
            server.wait_clients(0)
            assert server.service.broadcaster.broadcast_and_wait("after", channel="news") == 0


# -- other transports ------------------------------------------------------------


def test_half_close_over_a_unix_socket_is_answered(tmp_path: Path) -> None:
    """Over a UNIX socket (a reverse proxy on the same host) too: the answer, then EOF."""
    path = str(tmp_path / "s")
    with serve(app, listen=f"unix:{path}"):
        for request_bytes in (GET_11, POST):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                sock.sendall(request_bytes)
                sock.shutdown(socket.SHUT_WR)
                got = answers(read_to_end(sock))
            assert len(got) == 1 and got[0][0] == b"HTTP/1.1 200 OK"


def test_tls_connection_half_closed_under_tls_is_closed(tmp_path: Path) -> None:
    """
    Over TLS the half-close of the TCP connection under it closes the
    connection at once (Twisted's TLS layer), with nothing logged as an
    error; the server goes on serving.
    """
    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(["http/1.1"])
    entered.clear()
    release.clear()
    with logged(fields=True) as lines, serve(app, listen=tls_listen(cert, key)) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert entered.wait(10)
            # The TCP half-close, under TLS (no close_notify).
            with socket.socket(fileno=os.dup(tls.fileno())) as under:
                under.shutdown(socket.SHUT_WR)
            wait_for_end(server, tls)
            release.set()
            with contextlib.suppress(OSError):
                assert tls.recv(4096) == b""
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(GET_11_CLOSE)
            assert answers(read_to_end(tls)) == [(b"HTTP/1.1 200 OK", b"GET /page ")]
    assert not [line for line in lines if "log_failure" in line]
