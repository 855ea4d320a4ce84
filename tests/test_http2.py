"""HTTP/2 over TLS: real h2 clients (httpx, curl, the h2 library) against the real server."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import crochet
import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
from hyperframe.frame import Frame, GoAwayFrame
from support import self_signed_cert, serve, tls_listen

from wsgi_sse._hub import CLOSE_BODY


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the protocol the WSGI app saw."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello over " + environ["SERVER_PROTOCOL"].encode()]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate made for this test run."""
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def tls_context(cert: Path) -> ssl.SSLContext:
    """A client context trusting C{cert} and offering h2."""
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


class H2Client:
    """
    A raw HTTP/2 client on the h2 library: it decides which streams it
    acknowledges (reads), and can stop reading the socket altogether.
    """

    def __init__(
        self,
        port: int,
        cert: Path,
        *,
        window: int | None = None,
        rcvbuf: int | None = None,
        preface: bool = True,
    ) -> None:
        raw = socket.socket()
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.connect(("127.0.0.1", port))
        self.sock = tls_context(cert).wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.data: dict[int, bytes] = defaultdict(bytes)
        self.status: dict[int, str] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.closed = False
        self.clean_close = False
        self.goaway: GoAwayFrame | None = None  # the first GOAWAY received
        self.events: list[Any] = []  # every h2 event and GOAWAY frame, in order
        self._unparsed = b""
        if preface:
            self.conn.initiate_connection()
            if window is not None:
                codes = h2.settings.SettingCodes
                self.conn.update_settings({codes.INITIAL_WINDOW_SIZE: window})
                self.conn.increment_flow_control_window(window)
            self.flush()

    def flush(self) -> None:
        """Send what h2 has queued."""
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path: str) -> int:
        """Send a GET; return its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "https")]
        self.conn.send_headers(stream_id, [*headers, (":authority", "localhost")], end_stream=True)
        self.flush()
        return stream_id

    def pump(self, timeout: float, reads: Callable[[int], bool] = lambda _: True) -> None:
        """Handle what arrives within C{timeout}; streams where C{reads} is false are not acked."""
        self.sock.settimeout(timeout)
        try:
            incoming = self.sock.recv(65536)
        except TimeoutError:
            return
        except (ConnectionError, ssl.SSLError):
            self.closed = True
            return
        if not incoming:
            # The server's TLS close_notify: a clean close.
            self.closed = self.clean_close = True
            return
        for event in self._receive(incoming):
            self.events.append(event)
            if isinstance(event, h2.events.ResponseReceived):
                self.status[event.stream_id] = dict(event.headers)[":status"]
            elif isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] += event.data
                size = event.flow_controlled_length
                if reads(event.stream_id):
                    self.conn.acknowledge_received_data(size, event.stream_id)
                elif size:
                    # Keep the connection open for the other streams.
                    self.conn.increment_flow_control_window(size)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset.add(event.stream_id)
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def _receive(self, incoming: bytes) -> list[Any]:
        """
        Hand complete frames to h2, except GOAWAY, kept here: h2 closes its
        connection on one at once (python-hyper/h2 issue 1181), where the
        server may still finish the open streams.
        """
        data = self._unparsed + incoming
        events: list[Any] = []
        start = 0
        while len(data) - start >= 9:
            end = start + 9 + int.from_bytes(data[start : start + 3], "big")
            if end > len(data):
                break
            if data[start + 3] == 0x07:
                frame, _ = Frame.parse_frame_header(memoryview(data[start : start + 9]))
                frame.parse_body(memoryview(data[start + 9 : end]))
                assert isinstance(frame, GoAwayFrame)
                self.goaway = self.goaway or frame
                events.append(frame)
            else:
                events.extend(self.conn.receive_data(data[start:end]))
            start = end
        self._unparsed = data[start:]
        return events

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0, **kwargs: Any) -> None:
        """Pump until C{predicate()} holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "h2 client: condition not reached"
            assert not self.closed or predicate(), "h2 client: connection closed"
            self.pump(0.1, **kwargs)

    def post(self, path: str, body: bytes, *, declare: bool) -> int:
        """Send a POST with C{body} (its length declared or not); return its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":path", path), (":scheme", "https")]
        headers.append((":authority", "localhost"))
        if declare:
            headers.append(("content-length", str(len(body))))
        self.conn.send_headers(stream_id, headers)
        self.flush()
        sent = 0
        while sent < len(body) and stream_id not in self.reset and not self.closed:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.pump(0.1)
                continue
            chunk = body[sent : sent + window]
            self.conn.send_data(stream_id, chunk, end_stream=sent + len(chunk) == len(body))
            self.flush()
            sent += len(chunk)
            self.pump(0.001)
        return stream_id

    def ping(self) -> None:
        """Send a PING (a frame that is not a request)."""
        self.conn.ping(b"12345678")
        self.flush()

    def ping_until_closed(self, limit: float = 10.0) -> float:
        """
        Send PINGs (until a GOAWAY arrives) and read, until the server closes
        the connection or C{limit} seconds pass; return the seconds taken.
        """
        started = time.monotonic()
        while not self.closed and time.monotonic() - started < limit:
            if not self.goaway:
                self.ping()
            self.pump(0.2)
        return time.monotonic() - started

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def test_pages_and_streams_share_one_h2_connection(cert: tuple[Path, Path]) -> None:
    """httpx (http2=True) multiplexes three streams and page views on one connection."""
    with serve(app, listen=tls_listen(*cert), heartbeat=0.3) as server:
        url = f"https://127.0.0.1:{server.port}"

        async def main() -> tuple[list[list[str]], list[str], set[str]]:
            async with httpx.AsyncClient(http2=True, verify=tls_context(cert[0])) as client:
                streams = [
                    client.stream("GET", f"{url}/sse?channel={channels}", timeout=10)
                    for channels in ("a", "b", "a&channel=b")
                ]
                responses = [await s.__aenter__() for s in streams]
                versions = {r.http_version for r in responses}
                readers = [r.aiter_lines() for r in responses]

                async def read_until(reader: Any, predicate: Callable[[list[str]], bool]) -> Any:
                    lines: list[str] = []
                    while not predicate(lines):
                        lines.append(await reader.__anext__())
                    return lines

                opened = lambda ls: any(x.startswith("retry:") for x in ls)  # noqa: E731
                await asyncio.gather(*(read_until(r, opened) for r in readers))
                pages = [await client.get(f"{url}/page/{i}") for i in range(3)]
                versions |= {p.http_version for p in pages}
                clients = server.service.sse_resource.clients
                shared = await asyncio.to_thread(
                    server.call, lambda: {id(c.request.channel._conn) for c in clients}
                )
                assert len(shared) == 1  # one HTTP/2 connection carries every stream
                bc = server.service.broadcaster
                await asyncio.to_thread(bc.broadcast_and_wait, "to-a", channel="a")
                await asyncio.to_thread(bc.broadcast_and_wait, "to-b", channel="b")
                got = await asyncio.gather(
                    *(
                        read_until(r, lambda ls, n=n: sum(x.startswith("data:") for x in ls) == n)
                        for r, n in zip(readers, (1, 1, 2), strict=True)
                    )
                )
                # Heartbeats arrive on an otherwise idle stream.
                beat = await read_until(readers[0], lambda ls: ":" in ls)
                for s in streams:
                    await s.__aexit__(None, None, None)
                return (
                    [[x for x in lines if x.startswith("data:")] for lines in got],
                    [p.text for p in pages] + beat[-1:],
                    versions,
                )

        data, texts, versions = asyncio.run(main())
        assert versions == {"HTTP/2"}
        assert data == [["data: to-a"], ["data: to-b"], ["data: to-a", "data: to-b"]]
        assert texts == ["hello over HTTP/2"] * 3 + [":"]
        server.wait_clients(0)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reads_a_stream_over_http2(cert: tuple[Path, Path]) -> None:
    """curl --http2 reads the stream and an event over HTTP/2."""
    with serve(app, listen=tls_listen(*cert)) as server:
        curl = subprocess.Popen(
            [
                "curl", "-sN", "--http2", "--cacert", str(cert[0]), "-m", "2",
                "-w", "\\nversion=%{http_version}\\n",
                f"https://127.0.0.1:{server.port}/sse?channel=c",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        server.wait_clients(1)
        server.service.broadcaster.broadcast_and_wait("over h2", channel="c")
        out, _ = curl.communicate(timeout=15)
        assert out.startswith(": connected\nretry: ")
        assert "data: over h2\n\n" in out and out.endswith("version=2\n")


def test_slow_h2_reader_is_reset_and_its_connection_lives_on(cert: tuple[Path, Path]) -> None:
    """A stream whose reader stops is reset (RST_STREAM); the other stream goes on."""
    with serve(app, listen=tls_listen(*cert), max_buffer=64 * 1024, heartbeat=0) as server:
        client = H2Client(server.port, cert[0])
        try:
            slow, live, reads = _bulk_and_live(client)
            bc = server.service.broadcaster
            for _ in range(20):  # 200 KB on the bulk channel, beyond window + max_buffer
                bc.broadcast_and_wait("x" * 10_000, channel="bulk")
                client.pump(0.01, reads=reads)
            client.wait(lambda: slow in client.reset, reads=reads)
            bc.broadcast_and_wait("still here", channel="live")
            client.wait(lambda: b"data: still here\n" in client.data[live], reads=reads)
            assert not client.closed and live not in client.reset
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["dropped_by_reason"] == {"buffer": 1}
            assert snapshot["clients"] == 1
        finally:
            client.close()


def test_h2_reader_with_a_huge_window_is_capped(cert: tuple[Path, Path]) -> None:
    """A client granting a 1 GiB window but not reading is dropped at max_buffer."""
    with serve(app, listen=tls_listen(*cert), max_buffer=128 * 1024, heartbeat=0) as server:
        client = H2Client(server.port, cert[0], window=1 << 30, rcvbuf=4096)
        try:
            stream = client.get("/sse?channel=bulk")
            client.wait(lambda: stream in client.status)
            server.wait_clients(1)
            bc = server.service.broadcaster
            for _ in range(400):  # 4 MB; the client reads nothing from now on
                bc.broadcast_and_wait("x" * 10_000, channel="bulk")
                if server.client_count() == 0:
                    break
            server.wait_clients(0)
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["dropped_by_reason"] == {"buffer": 1}
        finally:
            client.close()


def test_h2_connection_without_a_request_is_closed(cert: tuple[Path, Path]) -> None:
    """An h2 connection that sends no request within header_timeout is closed, PINGs or not."""
    with serve(app, listen=tls_listen(*cert), header_timeout=1.0) as server:
        client = H2Client(server.port, cert[0])
        try:
            took = client.ping_until_closed()
            assert client.closed and client.goaway
            assert took < 5
        finally:
            client.close()


def test_idle_h2_connection_is_closed_despite_pings(cert: tuple[Path, Path]) -> None:
    """After its last request, an h2 connection sending only PINGs is closed at idle_timeout."""
    with serve(app, listen=tls_listen(*cert), idle_timeout=1.0) as server:
        client = H2Client(server.port, cert[0])
        try:
            page = client.get("/page")
            client.wait(lambda: page in client.ended)
            assert client.data[page] == b"hello over HTTP/2"
            took = client.ping_until_closed()
            assert client.closed and client.goaway
            assert took < 5
        finally:
            client.close()


def test_open_h2_stream_outlives_idle_timeout(cert: tuple[Path, Path]) -> None:
    """Heartbeats keep an h2 stream and its connection past idle_timeout (and TCP_USER_TIMEOUT)."""
    with serve(app, listen=tls_listen(*cert), idle_timeout=1.0, heartbeat=0.3) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/sse")
            client.wait(lambda: stream in client.status)

            def user_timeout() -> int:
                (c,) = server.service.sse_resource.clients
                sock = c.request.channel._conn.transport.socket
                return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))

            # A peer that vanishes is found by the kernel once a heartbeat
            # stays unacknowledged (at least 30 s).
            assert server.call(user_timeout) == 30_000
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                client.pump(0.1)
            assert not client.closed and stream not in client.ended
            assert client.data[stream].split(b"\n").count(b":") >= 5  # heartbeats
        finally:
            client.close()


def test_beat_reaches_h2_and_tls_http11_streams(cert: tuple[Path, Path]) -> None:
    """beat() writes a comment to an h2 stream and to an HTTP/1.1 stream over TLS."""
    with serve(app, listen=tls_listen(*cert), heartbeat=0) as server:
        client = H2Client(server.port, cert[0])
        context = ssl.create_default_context(cafile=str(cert[0]))
        context.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        tls = context.wrap_socket(raw, server_hostname="localhost")
        try:
            stream = client.get("/sse")
            tls.sendall(b"GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n")
            server.wait_clients(2)
            client.wait(lambda: b"retry:" in client.data[stream])
            streams = server.service.sse_resource.streams
            server.call(lambda: (streams.beat(), streams.beat()))
            client.wait(lambda: client.data[stream].split(b"\n").count(b":") == 2)
            body = b""
            # The chunks (2 bytes each) of the two comments, after the opening.
            while body.count(b"\r\n2\r\n:\n") < 2:
                data = tls.recv(4096)
                assert data, f"stream ended: {body!r}"
                body += data
            assert b"Transfer-Encoding: chunked" in body
        finally:
            client.close()
            tls.close()


def test_shutdown_closes_idle_tls_http11_connection(cert: tuple[Path, Path]) -> None:
    """An HTTP/1.1-over-TLS connection kept alive after a page is closed at stop."""
    with serve(app, listen=tls_listen(*cert)) as server:
        context = ssl.create_default_context(cafile=str(cert[0]))
        context.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /page HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while not data.endswith(b"\r\n0\r\n\r\n"):  # the end of the chunked answer
                more = tls.recv(4096)
                assert more, f"closed before the answer: {data!r}"
                data += more
            assert b"hello over HTTP/1.1" in data and b"connection: close" not in data.lower()
            stopping = crochet.run_in_reactor(server.service.stopService)()
            assert tls.recv(4096) == b""  # the server's close_notify, then EOF
            stopping.wait(15)


def test_h2_shutdown_ends_streams_and_retries_later(cert: tuple[Path, Path]) -> None:
    """close() ends h2 streams cleanly; a new stream on the connection is told to retry."""
    with serve(app, listen=tls_listen(*cert), busy_retry_after=2) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/sse")
            client.wait(lambda: stream in client.status)
            server.call(server.service.sse_resource.close)
            client.wait(lambda: stream in client.ended)
            again = client.get("/sse")
            client.wait(lambda: again in client.ended)
            assert client.status[again] == "200"
            assert client.data[again].startswith(b": server is shutting down\nretry: ")
        finally:
            client.close()


def test_h2_shutdown_sends_goaway_finishes_what_was_asked_then_closes(
    cert: tuple[Path, Path],
) -> None:
    """
    Stopping the server sends GOAWAY (no error, naming the last stream it
    answers) before the event stream ends cleanly; a page in flight is
    still answered, a request sent after the GOAWAY is refused, then the
    connection closes.
    """
    entered, release = threading.Event(), threading.Event()

    def slow_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """Answer /slow once the test lets it; anything else at once."""
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    # Aborting the connection would wait for the shutdown timeout (60 s).
    with serve(slow_app, listen=tls_listen(*cert), shutdown_timeout=60) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/sse")
            client.wait(lambda: stream in client.status)
            slow = client.get("/slow")
            assert entered.wait(10)
            stopping = crochet.run_in_reactor(server.service.stopService)()
            client.wait(lambda: client.goaway is not None and stream in client.ended)
            late = client.get("/page")
            client.wait(lambda: late in client.reset)
            release.set()
            client.wait(lambda: client.closed)
        finally:
            release.set()
            client.close()
        stopping.wait(10)  # the connection closed: the server has stopped
    assert client.clean_close
    goaway = client.goaway
    assert goaway is not None
    assert goaway.error_code == 0 and goaway.last_stream_id == slow
    # The stream ended cleanly (no reset), after the GOAWAY: the client
    # knew not to reconnect over this connection.
    assert stream not in client.reset
    ended = [e.stream_id for e in client.events if isinstance(e, h2.events.StreamEnded)]
    assert client.events.index(goaway) < next(
        i for i, e in enumerate(client.events) if isinstance(e, h2.events.StreamEnded)
    )
    assert ended == [stream, slow] and client.data[slow] == b"done"
    refused = [e for e in client.events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in refused] == [(late, 7)]  # REFUSED_STREAM


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "streamed"])
def test_h2_request_body_over_the_limit_is_reset(cert: tuple[Path, Path], declare: bool) -> None:
    """An HTTP/2 body over max_request_body resets its stream; the connection serves on."""
    with serve(app, listen=tls_listen(*cert), max_request_body=100_000) as server:
        client = H2Client(server.port, cert[0])
        try:
            big = client.post("/upload", b"x" * 300_000, declare=declare)
            client.wait(lambda: big in client.reset)
            assert big not in client.status
            page = client.get("/page")
            client.wait(lambda: page in client.ended)
            assert client.data[page] == b"hello over HTTP/2"
            small = client.post("/upload", b"y" * 50_000, declare=declare)
            client.wait(lambda: small in client.ended)
            assert client.status[small] == "200"
        finally:
            client.close()


def test_h2_body_on_the_stream_path_is_reset(cert: tuple[Path, Path]) -> None:
    """The event stream takes no body over HTTP/2 either: such a stream is reset at once."""
    with serve(app, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.post("/sse", b"x" * 1000, declare=False)
            client.wait(lambda: stream in client.reset)
            assert server.client_count() == 0
        finally:
            client.close()


def test_h2_streamed_body_goes_on_beside_an_unread_finished_one(cert: tuple[Path, Path]) -> None:
    """
    A body written in full but not read (its end queued behind it) does not
    hold up another stream's streamed body on the same connection, and
    nothing is logged as an error.
    """
    from twisted.logger import globalLogPublisher

    piece = b"s" * 16_000

    def bodies(environ: dict[str, Any], start_response: Any) -> Any:
        """/big: 1 MB at once; /streamed: 1 MB, piece by piece."""
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/big":
            return [b"b" * 1_000_000]
        return (piece for _ in range(64))

    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        with serve(bodies, listen=tls_listen(*cert)) as server:
            client = H2Client(server.port, cert[0])
            try:
                # The connection's window and the streamed body's are
                # granted up front: no WINDOW_UPDATE is sent from then on,
                # so nothing but the server's own bookkeeping resumes it.
                client.conn.increment_flow_control_window(1 << 30)
                big = client.get("/big")
                streamed = client.get("/streamed")
                client.conn.increment_flow_control_window(1 << 30, stream_id=streamed)
                client.flush()
                client.conn.increment_flow_control_window = lambda *args, **kwargs: None
                reads = lambda stream_id: False  # noqa: E731
                client.wait(lambda: streamed in client.ended, reads=reads)
                assert client.data[streamed] == piece * 64
                assert big not in client.ended and not client.closed
            finally:
                client.close()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert errors == []


def test_h2_event_larger_than_max_buffer_resets_a_stalled_reader_at_once(
    cert: tuple[Path, Path],
) -> None:
    """
    One event larger than max_buffer, queued for an h2 stream whose reader
    sends no WINDOW_UPDATE, resets that stream as it is written (not at
    max_pause); the connection's other stream goes on.
    """
    with serve(app, listen=tls_listen(*cert), max_buffer=64 * 1024, max_pause=600) as server:
        client = H2Client(server.port, cert[0])
        try:
            slow, live, reads = _bulk_and_live(client)
            bc = server.service.broadcaster
            assert bc.broadcast_and_wait("z" * 1_000_000, channel="bulk") == 1
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["dropped_by_reason"] == {"buffer": 1}
            assert snapshot["clients"] == 1
            client.wait(lambda: slow in client.reset, reads=reads)
            bc.broadcast_and_wait("still here", channel="live")
            client.wait(lambda: b"data: still here\n" in client.data[live], reads=reads)
            assert not client.closed and live not in client.reset
        finally:
            client.close()


@pytest.mark.parametrize("reopen", ["window_update", "settings"])
def test_h2_response_waiting_for_its_window_leaves_the_server_idle(
    cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, reopen: str
) -> None:
    """
    A response whose client's window is spent waits without the server
    looping on it; once the client opens the window (a WINDOW_UPDATE, or a
    larger initial window in SETTINGS), the rest is sent.
    """
    from wsgi_sse import _site

    loops = [0]
    send = _site._StreamH2Connection._sendPrioritisedData

    def counted(self: Any, *args: Any) -> None:
        loops[0] += 1
        send(self, *args)

    monkeypatch.setattr(_site._StreamH2Connection, "_sendPrioritisedData", counted)
    body = b"b" * 1_000_000

    def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """A 1 MB page, returned whole."""
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    with serve(page, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/big")
            reads = lambda stream_id: False  # noqa: E731
            client.wait(lambda: len(client.data[stream]) == 65_535, reads=reads)
            before = server.call(lambda: loops[0])
            for _ in range(5):
                client.pump(0.1, reads=reads)
            assert server.call(lambda: loops[0]) - before < 10
            if reopen == "settings":
                codes = h2.settings.SettingCodes
                client.conn.update_settings({codes.INITIAL_WINDOW_SIZE: 1 << 24})
            else:
                client.conn.increment_flow_control_window(1 << 24, stream_id=stream)
            client.flush()
            client.wait(lambda: stream in client.ended, reads=reads)
            assert client.data[stream] == body
        finally:
            client.close()


def test_h2_connection_with_an_unread_response_is_closed_when_idle(
    cert: tuple[Path, Path],
) -> None:
    """A connection whose response waits for a window the client never opens ends when idle."""

    def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """A 1 MB page, returned whole."""
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"b" * 1_000_000]

    with serve(page, listen=tls_listen(*cert), idle_timeout=1.0) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/big")
            client.wait(lambda: client.closed, reads=lambda stream_id: False)
            assert client.goaway is not None and stream not in client.ended
        finally:
            client.close()


def test_h2_body_failing_midway_resets_its_stream(cert: tuple[Path, Path]) -> None:
    """
    A WSGI body that raises after its first piece resets its h2 stream (as
    HTTP/1.1 drops the connection): the client cannot take the piece for
    the whole body.  The connection serves on.
    """

    def failing(environ: dict[str, Any], start_response: Any) -> Any:
        """/fail: one piece, then an error; anything else: a page."""
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] != "/fail":
            return [b"fine"]

        def body() -> Any:
            yield b"first piece"
            raise RuntimeError("the body failed")

        return body()

    with serve(failing, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/fail")
            client.wait(lambda: stream in client.reset or stream in client.ended)
            assert stream in client.reset and stream not in client.ended
            page = client.get("/page")
            client.wait(lambda: page in client.ended)
            assert client.data[page] == b"fine"
        finally:
            client.close()


def test_h2_streamed_body_not_read_for_max_pause_is_reset(cert: tuple[Path, Path]) -> None:
    """
    A streamed body whose h2 reader sends no WINDOW_UPDATE for max_pause
    has its stream reset and the body closed; the connection serves on.
    """
    closed = threading.Event()

    class Body:
        """A long body that records its close()."""

        def __iter__(self) -> Any:
            for _ in range(200):
                yield b"s" * 16_000

        def close(self) -> None:
            closed.set()

    def streamed(environ: dict[str, Any], start_response: Any) -> Any:
        """/streamed: 3.2 MB, piece by piece; anything else: a page."""
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body() if environ["PATH_INFO"] == "/streamed" else [b"fine"]

    with serve(streamed, listen=tls_listen(*cert), max_pause=0.5) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/streamed")
            reads = lambda stream_id: False  # noqa: E731
            client.wait(lambda: stream in client.reset or stream in client.ended, reads=reads)
            assert stream in client.reset and closed.wait(10)
            page = client.get("/page")
            client.wait(lambda: page in client.ended)
            assert client.data[page] == b"fine"
        finally:
            client.close()


def test_h2_streamed_body_waits_for_a_reader_that_stops(cert: tuple[Path, Path]) -> None:
    """
    A streamed body whose h2 reader sends no WINDOW_UPDATE is handed over
    no further than over HTTP/1.1: 256 KiB past what the stream holds (64
    KiB), plus the piece in hand.  It goes on once the reader reads.
    """
    from wsgi_sse import _site, _wsgi

    piece = 16_000
    produced = [0]

    def streamed(environ: dict[str, Any], start_response: Any) -> Any:
        """A 3.2 MB body, piece by piece, counting what it produced."""
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Any:
            for _ in range(200):
                produced[0] += piece
                yield b"s" * piece

        return body()

    with serve(streamed, listen=tls_listen(*cert), max_pause=600) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/streamed")
            reads = lambda stream_id: False  # noqa: E731
            last = -1
            while produced[0] != last:  # until the body stops producing
                last = produced[0]
                for _ in range(3):
                    client.pump(0.1, reads=reads)
            held = produced[0] - len(client.data[stream])
            assert held <= _wsgi.MAX_AHEAD + _site._StreamH2Connection.STREAM_BUFFER + 2 * piece
            client.conn.increment_flow_control_window(1 << 24, stream_id=stream)
            client.flush()
            client.wait(lambda: stream in client.ended)
            assert client.data[stream] == b"s" * piece * 200
        finally:
            client.close()


@pytest.mark.parametrize("path", ["/whole", "/pieces"])
def test_h2_body_short_of_its_content_length_resets_its_stream(
    cert: tuple[Path, Path], path: str
) -> None:
    """
    A body shorter than the app's Content-Length resets its h2 stream (as
    HTTP/1.1 closes the connection after it), rather than ending a stream
    h2 calls malformed; the connection serves on.
    """

    def short(environ: dict[str, Any], start_response: Any) -> Any:
        """5 or 7 bytes of the 100 announced; /page: a page."""
        if environ["PATH_INFO"] == "/page":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"fine"]
        start_response("200 OK", [("Content-Length", "100")])
        return [b"short"] if environ["PATH_INFO"] == "/whole" else iter([b"short", b"er"])

    with serve(short, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get(path)
            client.wait(lambda: stream in client.reset)
            page = client.get("/page")
            client.wait(lambda: page in client.ended)
            assert client.data[page] == b"fine"
        finally:
            client.close()


def path_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the path the WSGI app was given."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("page", "400", b"invalid request target\n"),
        ("*", "400", b"invalid request target\n"),
        ("http://localhost/absolute", "200", b"/absolute"),
        ("/origin", "200", b"/origin"),
    ],
)
def test_h2_path_that_is_not_a_target_is_refused(
    cert: tuple[Path, Path], path: str, status: str, body: bytes
) -> None:
    """An HTTP/2 C{:path} neither a path nor an absolute URL gets 400, as over HTTP/1.1."""
    with serve(path_app, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get(path)
            client.wait(lambda: stream in client.ended)
            assert (client.status[stream], client.data[stream]) == (status, body)
            assert not client.closed
        finally:
            client.close()


def test_h2_static_file_shortened_while_sent_resets_its_stream(
    cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """A static file truncated while sent resets its h2 stream; the connection serves on."""
    from wsgi_sse import StaticFiles

    (tmp_path / "big.bin").write_bytes(b"a" * (4 * 1024 * 1024))
    (tmp_path / "small.txt").write_bytes(b"fine")
    files = {"/files": StaticFiles(str(tmp_path))}
    with serve(app, listen=tls_listen(*cert), resources=files) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/files/big.bin")
            # Not acknowledged: the server stops at the stream's window.
            client.wait(lambda: stream in client.status, reads=lambda _: False)
            (tmp_path / "big.bin").write_bytes(b"")
            client.wait(lambda: stream in client.reset or stream in client.ended)
            assert stream in client.reset and len(client.data[stream]) < 4 * 1024 * 1024
            small = client.get("/files/small.txt")
            client.wait(lambda: small in client.ended)
            assert client.data[small] == b"fine"
        finally:
            client.close()


def test_h2_held_stream_failing_after_its_first_bytes_is_reset(
    cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A stream a view holds whose setup fails once its first body was
    written is reset (never ended with END_STREAM, as if whole), and the
    server keeps no stream for it; the connection serves on, and the
    server shuts down cleanly.
    """
    from wsgi_sse import _streams, hold_body, hold_headers

    def broken(self: Any) -> None:
        raise RuntimeError("the heartbeat cannot start")

    monkeypatch.setattr(_streams.Streams, "_ensure_heartbeat", broken)

    def holding(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """/jobs holds the jobs channel; anything else is a page."""
        if environ["PATH_INFO"] != "/jobs":
            return app(environ, start_response)
        start_response("200 OK", hold_headers("jobs"))
        return [hold_body({"job": "7"})]

    with serve(holding, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.get("/jobs")
            client.wait(lambda: stream in client.reset or stream in client.ended)
            assert stream in client.reset and stream not in client.ended
            server.wait_clients(0)
            page = client.get("/page")
            client.wait(lambda: page in client.ended)
            assert client.data[page] == b"hello over HTTP/2"
        finally:
            client.close()


def _bulk_client(server: Any) -> Any:
    """The server's stream on the C{bulk} channel (reactor thread)."""
    return next(c for c in server.service.sse_resource.clients if c.channels == ("bulk",))


def _bulk_and_live(client: H2Client) -> tuple[int, int, Callable[[int], bool]]:
    """
    Open a stream of channel C{bulk}, whose reader will send no
    WINDOW_UPDATE, and one of C{live}, read as usual, and wait for both
    answers: their stream ids, and which streams to read (C{reads}).
    """
    slow, live = client.get("/sse?channel=bulk"), client.get("/sse?channel=live")

    def reads(stream_id: int) -> bool:
        return stream_id != slow

    client.wait(lambda: {slow, live} <= set(client.status), reads=reads)
    return slow, live, reads


def _fill_bulk(server: Any, client: H2Client, reads: Callable[[int], bool]) -> int:
    """
    Broadcast 10 kB events on C{bulk} until its stream, whose reader sends
    no WINDOW_UPDATE, is paused, then a few more (held for it); return how
    many were sent.
    """
    broadcaster = server.service.broadcaster
    sent = 0
    while not server.call(lambda: _bulk_client(server).paused):
        assert sent < 100, "the stream was never paused"
        broadcaster.broadcast_and_wait(f"{sent} {'x' * 10_000}", channel="bulk")
        client.pump(0.01, reads=reads)
        sent += 1
    for _ in range(5):
        broadcaster.broadcast_and_wait(f"{sent} {'x' * 10_000}", channel="bulk")
        sent += 1
    assert server.call(lambda: _bulk_client(server).held_bytes) > 0
    return sent


def _owner(request: Any) -> Any:
    """The bulk channel's streams belong to ada, the others to bob."""
    from wsgi_sse import Allowed

    return Allowed(True, identity="ada" if "bulk" in request.channels else "bob")


def test_h2_revoked_stream_whose_reader_stopped_is_reset_at_once(cert: tuple[Path, Path]) -> None:
    """
    disconnect() of an h2 stream whose reader stopped reading (its window
    spent, events held for it) resets it at once and frees what its
    connection queued for it; the connection's other stream goes on.
    """
    import wsgi_sse

    listen = tls_listen(*cert)
    with serve(app, listen=listen, authorize=_owner, max_pause=600, heartbeat=0) as server:
        client = H2Client(server.port, cert[0])
        try:
            slow, live, reads = _bulk_and_live(client)
            server.wait_clients(2)
            _fill_bulk(server, client, reads)
            connection = server.call(lambda: _bulk_client(server).request.channel._conn)
            wsgi_sse.disconnect(identity="ada")
            client.wait(lambda: slow in client.reset, reads=reads)
            assert slow not in client.ended
            left = server.call(lambda: (slow in connection.streams, connection.queued_bytes(slow)))
            assert left == (False, 0)
            server.wait_clients(1)
            server.service.broadcaster.broadcast_and_wait("still here", channel="live")
            client.wait(lambda: b"data: still here\n" in client.data[live], reads=reads)
            assert not client.closed and live not in client.reset
        finally:
            client.close()


def test_h2_stream_closed_while_its_reader_is_behind_ends_once_it_has_read_everything(
    cert: tuple[Path, Path],
) -> None:
    """
    close(channel) of an h2 stream whose reader is behind (its window spent,
    events held for it) ends it cleanly (END_STREAM) once the reader opens
    its window again: every event, then the close's id.
    """
    with serve(app, listen=tls_listen(*cert), max_pause=600, heartbeat=0) as server:
        client = H2Client(server.port, cert[0])
        try:
            slow = client.get("/sse?channel=bulk")
            reading = [False]
            reads = lambda stream_id: reading[0]  # noqa: E731
            client.wait(lambda: slow in client.status, reads=reads)
            server.wait_clients(1)
            sent = _fill_bulk(server, client, reads)
            server.service.broadcaster.close("bulk")
            server.call(lambda: None)  # the close has reached the stream
            assert slow not in client.ended and slow not in client.reset
            # The reader catches up: what it was not sent yet is acknowledged too.
            reading[0] = True
            client.conn.acknowledge_received_data(len(client.data[slow]), slow)
            client.flush()
            client.wait(lambda: slow in client.ended or slow in client.reset, reads=reads)
            assert slow in client.ended and slow not in client.reset
            text = client.data[slow].decode()
            events = [block for block in text.split("\n\n") if "data: " in block]
            numbers = [e.partition("data: ")[2].split(" ")[0] for e in events]
            assert numbers == [str(n) for n in range(sent)]
            assert text.rsplit("\n\n", 2)[-2].startswith("id: ")
            server.wait_clients(0)
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert (snapshot["ended"], snapshot["dropped_slow"]) == (1, 0)
        finally:
            client.close()


def test_h2_stream_closed_while_its_reader_is_stalled_is_reset_at_max_pause(
    cert: tuple[Path, Path],
) -> None:
    """
    close(channel) of an h2 stream whose reader never opens its window
    again does not keep the stream, and what it was owed, for as long as
    the connection lives: once max_pause has passed since it stopped, the
    stream is reset; the connection's other stream goes on.
    """
    with serve(app, listen=tls_listen(*cert), max_pause=2, heartbeat=0) as server:
        client = H2Client(server.port, cert[0])
        try:
            slow, live, reads = _bulk_and_live(client)
            server.wait_clients(2)
            _fill_bulk(server, client, reads)
            hub = server.service.hub

            def close_while_paused() -> bool:
                # In the reactor turn that checks it: the stream is paused.
                return _bulk_client(server).paused and hub.publish("bulk", CLOSE_BODY) == 1

            assert server.call(close_while_paused)
            client.wait(lambda: slow in client.reset, reads=reads)
            assert slow not in client.ended
            server.wait_clients(1)
            snapshot = server.call(server.service.sse_resource.snapshot)
            # Counted once, as what happened to it: reset, never ended cleanly.
            assert snapshot["ended"] == 0
            assert snapshot["dropped_by_reason"] == {"stalled": 1}
            server.service.broadcaster.broadcast_and_wait("still here", channel="live")
            client.wait(lambda: b"data: still here\n" in client.data[live], reads=reads)
            assert not client.closed and live not in client.reset
        finally:
            client.close()


def host_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the host fields and the content type the WSGI app was given."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    seen = [environ.get(key, "-") for key in ("HTTP_HOST", "SERVER_NAME", "CONTENT_TYPE")]
    return [" ".join(seen).encode()]


@pytest.mark.parametrize(
    ("extra", "status", "body"),
    [
        ([(":authority", "localhost:8443")], "200", b"localhost:8443 localhost -"),
        ([(":authority", "[::1]")], "200", b"[::1] ::1 -"),
        ([(":authority", "x"), ("host", "x")], "200", b"x x -"),
        ([(":authority", "evil.test/../x")], "400", b"invalid Host header\n"),
        ([("host", ":80")], "400", b"invalid Host header\n"),
        (
            [(":authority", "x"), ("content-type", "text/plain"), ("content-type", "text/html")],
            "400",
            b"more than one Content-Type header\n",
        ),
    ],
    ids=["authority", "ipv6", "authority-and-host", "path-in-authority", "no-host-name",
         "two-content-types"],
)  # fmt: skip
def test_h2_authority_is_checked_as_a_host(
    cert: tuple[Path, Path], extra: list[tuple[str, str]], status: str, body: bytes
) -> None:
    """C{:authority} (or C{Host}) must be host[:port], and counts once, as Host over HTTP/1.1."""
    with serve(host_app, listen=tls_listen(*cert)) as server:
        client = H2Client(server.port, cert[0])
        try:
            stream = client.conn.get_next_available_stream_id()
            headers = [(":method", "GET"), (":path", "/h"), (":scheme", "https"), *extra]
            client.conn.send_headers(stream, headers, end_stream=True)
            client.flush()
            client.wait(lambda: stream in client.ended)
            assert (client.status[stream], client.data[stream]) == (status, body)
            assert not client.closed
        finally:
            client.close()
