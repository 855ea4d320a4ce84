"""
HTTP/2 clients that misbehave on purpose: a request and its reset in one
read, floods of connection WINDOW_UPDATEs, connection errors and GOAWAYs
followed by more data, header lists over the HTTP/1.1 limits; and HTTP/1.1
over the same TLS port, refused mid-request.  The real server over TLS on a
loopback ephemeral port, a raw h2 client or a raw TLS socket.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, DataFrame
from support import logged, self_signed_cert, serve, tls_listen
from test_http2 import H2Client, tls_context


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A small page."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello over " + environ["SERVER_PROTOCOL"].encode()]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate made for this test run."""
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def _request(client: H2Client, path: str) -> int:
    """Queue a GET (END_STREAM) in the client's h2 without sending it; return its stream id."""
    stream_id: int = client.conn.get_next_available_stream_id()
    headers = [(":method", "GET"), (":path", path), (":scheme", "https")]
    client.conn.send_headers(stream_id, [*headers, (":authority", "localhost")], end_stream=True)
    return stream_id


# -- 1. a stream reset in the same read as its request ---------------------------


@pytest.mark.parametrize("then", ["nothing", "another_request"])
def test_h2_stream_reset_with_its_request_leaves_the_connections_other_streams_going(
    cert: tuple[Path, Path], then: str
) -> None:
    """
    A client opens a stream on the event stream's path and cancels it
    (RST_STREAM) in the same write, as a client that gives up on a request
    at once may: the connection's other streams go on, and a request sent
    after it is answered.
    """
    with serve(app, listen=tls_listen(*cert), heartbeat=0) as server:
        client = H2Client(server.port, cert[0])
        try:
            live = client.get("/sse?channel=live")
            client.wait(lambda: b"retry:" in client.data[live])
            cancelled = _request(client, "/sse?channel=other")
            client.conn.reset_stream(cancelled, ErrorCodes.CANCEL)
            page = _request(client, "/page") if then == "another_request" else None
            client.conn.ping(b"read it?")
            client.flush()  # HEADERS, RST_STREAM (and HEADERS), PING: one write
            # The server has read it all once the PING's answer is in.
            acked = lambda: any(  # noqa: E731
                isinstance(e, h2.events.PingAckReceived) for e in client.events
            )
            deadline = time.monotonic() + 5
            while not acked() and not client.closed and time.monotonic() < deadline:
                client.pump(0.1)
            server.service.broadcaster.broadcast_and_wait("still here", channel="live")
            deadline = time.monotonic() + 5
            while b"data: still here\n" not in client.data[live] and not client.closed:
                if time.monotonic() > deadline:
                    break
                client.pump(0.1)
            assert not client.closed, "the server dropped the connection"
            assert b"data: still here\n" in client.data[live], (
                "the connection's other stream gets no data any more"
            )
            if page is not None:
                client.wait(lambda: page in client.ended)
                assert client.data[page] == b"hello over HTTP/2"
        finally:
            client.close()


# -- 2. WINDOW_UPDATE frames on the connection cost every stream ------------------


def test_h2_connection_window_update_does_not_cost_the_work_of_every_stream(
    cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    WINDOW_UPDATE frames on the connection (stream 0, +1 each) from a
    client whose 99 streams wait for their own window: the reactor's work
    does not grow with frames times streams.
    """
    from twisted.web import _http2

    calls = [0]
    woken = _http2.H2Stream.windowUpdated

    def counted(self: Any) -> None:
        calls[0] += 1
        woken(self)

    monkeypatch.setattr(_http2.H2Stream, "windowUpdated", counted)
    with serve(app, listen=tls_listen(*cert), heartbeat=0) as server:
        client = H2Client(server.port, cert[0], preface=False)
        try:
            client.conn.initiate_connection()
            client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            client.flush()
            streams = [client.get("/sse?channel=bulk") for _ in range(99)]
            client.wait(lambda: set(streams) <= set(client.status))
            server.wait_clients(99)
            before = server.call(lambda: calls[0])
            for _ in range(5_000):
                client.conn.increment_flow_control_window(1)
            client.conn.ping(b"flooded!")
            started = time.monotonic()
            client.flush()
            client.wait(
                lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.events),
                timeout=60,
            )
            took = time.monotonic() - started
            wakeups = server.call(lambda: calls[0]) - before
            print(f"5,000 WINDOW_UPDATE frames: {wakeups} stream wakeups, {took:.2f} s")
            # Once per read (a 65 KB write arrives in a few reads) would be
            # a few hundred; once per frame and stream is 495,000.
            assert wakeups <= 99 * 100
        finally:
            client.close()


# -- 3. a connection that fails before its first request ---------------------------


def end_badly(client: H2Client, first: str) -> None:
    """A connection error (a CONTINUATION with no HEADERS), or the client's GOAWAY."""
    if first == "protocol_error":
        frame = ContinuationFrame(1)
        frame.data = b"x"
        client.sock.sendall(frame.serialize())
    else:
        client.conn.close_connection()
        client.flush()


def _seconds_until_closed(sock: ssl.SSLSocket, limit: float) -> float | None:
    """Read (and drop) what the server sends until it closes; None if still open at C{limit}."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (OSError, ssl.SSLError):
            return time.monotonic() - started
    return None


@pytest.mark.parametrize("first", ["protocol_error", "goaway"])
def test_h2_connection_without_a_request_is_closed_at_header_timeout_after_an_error(
    cert: tuple[Path, Path], first: str
) -> None:
    """
    C{header_timeout}: a connection must send its first request within
    it.  A connection whose first frame after the preface
    is a connection error (a CONTINUATION with no HEADERS), or a GOAWAY,
    and that then stays open without a request, is closed at
    C{header_timeout} (1 s here; plus the 2 s abort delay), as a silent
    one is.
    """
    with serve(app, listen=tls_listen(*cert), header_timeout=1.0, idle_timeout=10.0) as server:
        silent = H2Client(server.port, cert[0])
        client = H2Client(server.port, cert[0])
        try:
            end_badly(client, first)
            silent_took = _seconds_until_closed(silent.sock, 8)
            took = _seconds_until_closed(client.sock, 8)
            assert silent_took is not None and silent_took < 5  # the documented behaviour
            assert took is not None, "still open 8 s later (header_timeout 1 s)"
            assert took < 5
        finally:
            silent.close()
            client.close()


# -- 4. header limits the docs give -------------------------------------------------


@pytest.mark.parametrize("with_body", [False, True], ids=["no_body", "a_body_follows"])
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(f"x-h{i}", "1") for i in range(600)], b"too many request headers (more than 500)\n"),
        ([("x-big", "v" * 20_000)], b"request headers too large (more than 16384 bytes)\n"),
    ],
    ids=["600_headers", "one_20kB_header"],
)
def test_h2_request_headers_over_the_documented_limits_are_refused(
    cert: tuple[Path, Path], headers: list[tuple[str, str]], reason: bytes, with_body: bool
) -> None:
    """
    docs/security.md, "every limit and its default": all request headers
    16 KiB, 500 headers, past that a 431.  As over HTTP/1.1 on the same TLS
    port, an HTTP/2 request is answered 431, saying why, and the app never
    sees it; a body the client then sends is dropped, and the connection
    answers its next request.
    """
    seen: list[int] = []

    def counting(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(sum(k.startswith("HTTP_") for k in environ))
        return app(environ, start_response)

    with serve(counting, listen=tls_listen(*cert)) as server:
        context = tls_context(cert[0])
        context.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
            tls.sendall(f"GET /page HTTP/1.1\r\nHost: localhost\r\n{lines}\r\n".encode())
            assert tls.recv(100).startswith(b"HTTP/1.1 431 ")  # as documented
        client = H2Client(server.port, cert[0])
        try:
            stream_id = client.conn.get_next_available_stream_id()
            method = "POST" if with_body else "GET"
            pseudo = [(":method", method), (":path", "/page"), (":scheme", "https")]
            client.conn.send_headers(
                stream_id,
                [*pseudo, (":authority", "localhost"), *headers],
                end_stream=not with_body,
            )
            client.flush()
            client.wait(lambda: stream_id in client.ended)
            assert (client.status.get(stream_id), client.data[stream_id]) == ("431", reason)
            if with_body:
                # (Raw: the client's h2 knows the stream is over.)
                frame = DataFrame(stream_id, b"x" * 1000)
                frame.flags.add("END_STREAM")
                client.sock.sendall(frame.serialize())
            after = client.get("/page")
            client.wait(lambda: after in client.ended)
            assert (client.status[after], client.data[after]) == ("200", b"hello over HTTP/2")
            assert len(seen) == 1  # the next request only
        finally:
            client.close()


# -- 5. what a client sends after a connection error is kept ------------------------


@pytest.mark.parametrize("first", ["protocol_error", "goaway"])
def test_h2_connection_after_an_error_does_not_keep_what_the_client_sends(
    cert: tuple[Path, Path], first: str
) -> None:
    """
    After a connection error (a CONTINUATION with no HEADERS) or the
    client's GOAWAY, the server has sent its GOAWAY and is done with the
    connection: 64 MiB the client sends afterwards do not stay in the
    server's memory (either the server closes the connection, or it drops
    what it reads).
    """
    import psutil

    process = psutil.Process()
    with serve(app, listen=tls_listen(*cert), idle_timeout=30.0) as server:
        client = H2Client(server.port, cert[0])
        try:
            end_badly(client, first)
            time.sleep(0.2)
            server.call(lambda: None)
            before = process.memory_info().rss
            ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x0012345678"  # a PING frame
            chunk = ping * ((1 << 20) // len(ping))
            sent = 0
            client.sock.settimeout(5)
            try:
                while sent < 64 << 20:
                    client.sock.sendall(chunk)
                    sent += len(chunk)
            except (OSError, ssl.SSLError):
                pass  # the server closed the connection: nothing more is read
            time.sleep(0.5)
            server.call(lambda: None)  # the reactor has read what arrived
            grown = process.memory_info().rss - before
            print(f"sent {sent >> 20} MiB after the {first}; the process grew {grown >> 20} MiB")
            assert grown < 16 << 20
        finally:
            client.close()


@pytest.mark.parametrize("size", [20_000, 60_000])
def test_a_header_line_too_long_over_tls_is_answered_431(
    cert: tuple[Path, Path], size: int
) -> None:
    """
    HTTP/1.1 over TLS, a header line over 16 KiB, sent whole (in one TLS
    record or, past 16 KiB of record, several): a 431 and the end of the
    connection, as over plain TCP, with no error in the log.  (A TCP
    half-close under TLS had Twisted's TLS layer close the connection in
    the middle of the client's next bytes, and fail on it: no answer.)
    """
    with serve(app, listen=tls_listen(*cert)) as server, logged() as lines:
        context = tls_context(cert[0])
        context.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                b"GET /page HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"v" * size + b"\r\n\r\n"
            )
            answer = b""
            try:
                while data := tls.recv(65536):
                    answer += data
            except (OSError, ssl.SSLError):
                pass  # (closed before the client's close_notify)
        server.call(lambda: None)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(b"\r\n\r\nrequest header line too long\n")
    assert not [line for line in lines if "Unhandled" in line or "Traceback" in line]


def test_h2_request_target_over_the_request_line_limit_is_refused(
    cert: tuple[Path, Path],
) -> None:
    """
    A target longer than HTTP/1.1's request line may be (16 KiB) is a 414
    over HTTP/2 too, and the app never sees it; a request within it is
    answered on the same connection.
    """
    seen: list[str] = []

    def counting(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["QUERY_STRING"])
        return app(environ, start_response)

    with serve(counting, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            long = client.get("/page?" + "x" * 20_000)
            client.wait(lambda: long in client.ended)
            assert (client.status[long], client.data[long]) == ("414", b"request line too long\n")
            fine = client.get("/page?" + "x" * 10_000)
            client.wait(lambda: fine in client.ended)
            assert client.status[fine] == "200"
            assert seen == ["x" * 10_000]
        finally:
            client.close()
