"""
Openings written together after the reactor's reads (L{write_soon}): the
bytes arrive whole and in order with whatever is written after them, a
close waits for them, a connection gone first is passed over, and no
connection is registered with the poller to send them.  Real reactor, real
sockets; also through the server, many streams opened at once; and, for
what the flush does with a connection aborted after its write, a fake
transport on a Clock.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import _crochet, serve, wait_until
from twisted.internet.protocol import Factory, Protocol

from wsgi_sse import _lean
from wsgi_sse._lean import write_soon


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


class Listener:
    """A Twisted TCP listener in crochet's reactor thread; each connection goes to C{on_connect}."""

    def __init__(self, on_connect: Callable[[Any], None]) -> None:
        self.crochet = _crochet()
        self.on_connect = on_connect
        self.errors: list[BaseException] = []
        self.lost: list[Any] = []
        listener = self

        class Handed(Protocol):
            def connectionMade(self) -> None:
                try:
                    listener.on_connect(self.transport)
                except BaseException as error:  # reported by the test
                    listener.errors.append(error)

            def connectionLost(self, reason: Any = None) -> None:
                listener.lost.append(reason)

        @self.crochet.run_in_reactor
        def listen() -> Any:
            from twisted.internet import reactor

            return reactor.listenTCP(0, Factory.forProtocol(Handed), interface="127.0.0.1")

        self.port = listen().wait(10)
        self.number = self.port.getHost().port

    def call(self, fn: Callable[[], Any]) -> Any:
        return self.crochet.run_in_reactor(fn)().wait(10)

    def close(self) -> None:
        self.crochet.run_in_reactor(self.port.stopListening)().wait(10)


@pytest.fixture
def listener() -> Iterator[Callable[[Callable[[Any], None]], Listener]]:
    made: list[Listener] = []

    def make(on_connect: Callable[[Any], None]) -> Listener:
        made.append(Listener(on_connect))
        return made[-1]

    yield make
    for each in made:
        each.close()


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the server closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def writer_registered(listener: Listener) -> list[bool]:
    """Whether each transport in C{held} is among the reactor's writers, now."""

    def check() -> list[bool]:
        from twisted.internet import reactor

        writers = set(reactor.getWriters())
        return [transport in writers for transport in held]

    return listener.call(check)


def direct_send(transport: Any, data: bytes) -> None:
    """
    A write as a stream's fast path makes it (L{StreamClient.send}): straight
    to the socket unless something waits in the transport's buffer.
    """
    if not transport.dataBuffer and not transport._tempDataLen:
        sent = transport.socket.send(data)
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


# Transports the listener of a test keeps, to look at after the turn.
held: list[Any] = []


def test_later_writes_wait_behind_the_queued_bytes(listener: Any) -> None:
    """Bytes written after write_soon in the same turn, directly or not, arrive after its bytes."""

    def on_connect(transport: Any) -> None:
        write_soon(transport, b"first;")
        direct_send(transport, b"second;")
        transport.write(b"third;")
        write_soon(transport, b"fourth;")
        transport.loseConnection()

    server = listener(on_connect)
    with socket.create_connection(("127.0.0.1", server.number)) as sock:
        assert read_all(sock) == b"first;second;third;fourth;"
    assert server.errors == []


def test_queued_bytes_are_sent_after_the_turn_without_the_poller(listener: Any) -> None:
    """
    The queued bytes are not sent during the turn that queued them, and are
    sent after it without the connection ever being registered as a writer.
    """
    seen: list[Any] = []

    def on_connect(transport: Any) -> None:
        from twisted.internet import reactor

        write_soon(transport, b"opening")
        # Still only in the transport's buffer, and no writer registered.
        seen.append((transport._tempDataLen, transport in reactor.getWriters()))
        held.append(transport)

    server = listener(on_connect)
    held.clear()
    with socket.create_connection(("127.0.0.1", server.number)) as sock:
        sock.settimeout(10)
        data = b""
        while len(data) < len(b"opening"):
            data += sock.recv(100)
        assert data == b"opening"
        wait_until(lambda: bool(held))
        assert seen == [(len(b"opening"), False)]
        assert writer_registered(server) == [False]
        assert server.call(lambda: (held[0]._tempDataLen, held[0].dataBuffer)) == (0, b"")
    held.clear()


def test_close_waits_for_the_queued_bytes(listener: Any) -> None:
    """loseConnection right after write_soon: the bytes go out first, then the close."""
    body = b"x" * 1000

    def on_connect(transport: Any) -> None:
        write_soon(transport, body)
        transport.loseConnection()

    server = listener(on_connect)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.number)) as sock:
            assert read_all(sock) == body


def test_a_connection_aborted_before_the_write_is_passed_over(listener: Any) -> None:
    """A connection aborted in the same turn: nothing sent, no error, the others still written."""
    count = [0]

    def on_connect(transport: Any) -> None:
        count[0] += 1
        write_soon(transport, b"opening")
        if count[0] == 1:
            transport.abortConnection()

    server = listener(on_connect)
    first = socket.create_connection(("127.0.0.1", server.number))
    second = socket.create_connection(("127.0.0.1", server.number))
    try:
        first.settimeout(10)
        with pytest.raises(ConnectionResetError):
            # (An abort is a reset: what was queued never went out.)
            first.recv(100)
        second.settimeout(10)
        assert second.recv(100) == b"opening"
    finally:
        first.close()
        second.close()
    wait_until(lambda: len(server.lost) >= 1)
    assert server.errors == []
    assert server.call(lambda: _lean._unsent) == {}


def test_more_than_the_buffer_size_is_written_as_usual(listener: Any) -> None:
    """Data larger than the transport's buffer size is handed to write (which pauses a producer)."""
    big = bytes(range(256)) * 1024  # 256 KiB, past the 64 KiB buffer size

    def on_connect(transport: Any) -> None:
        write_soon(transport, big)
        transport.loseConnection()

    server = listener(on_connect)
    with socket.create_connection(("127.0.0.1", server.number)) as sock:
        assert read_all(sock) == big
    assert server.errors == []


def test_many_streams_opened_at_once_each_get_their_opening() -> None:
    """
    Stream requests sent back to back, many read in one reactor turn: every
    stream gets its whole head and opening, and none of their connections
    was registered as a writer to send it.
    """
    registered: list[Any] = []
    with serve(hello_app) as server:
        from twisted.internet import reactor

        def spy() -> None:
            original = reactor.addWriter

            def add_writer(writer: Any) -> None:
                registered.append(writer)
                original(writer)

            reactor.addWriter = add_writer  # type: ignore[method-assign]

        def unspy() -> None:
            del reactor.addWriter

        server.call(spy)
        socks = []
        try:
            for _ in range(60):
                socks.append(socket.create_connection(("127.0.0.1", server.port)))
            for sock in socks:
                sock.sendall(b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            for sock in socks:
                sock.settimeout(10)
                data = b""
                deadline = time.monotonic() + 10
                while b"retry:" not in data or not data.endswith(b"\r\n"):
                    assert time.monotonic() < deadline, data
                    data += sock.recv(4096)
                assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            server.wait_clients(60)
        finally:
            server.call(unspy)
            for sock in socks:
                sock.close()
        assert registered == []


def test_what_the_kernel_does_not_take_is_left_to_the_reactor(listener: Any) -> None:
    """A send buffer too small for the bytes: the rest is written when the socket drains."""
    body = bytes(range(256)) * 200  # 51,200 bytes, under the transport's buffer size

    def on_connect(transport: Any) -> None:
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        write_soon(transport, body)
        held.append(transport)

    held.clear()
    server = listener(on_connect)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.number))
        wait_until(lambda: bool(held))
        # The first send took only part: the reactor holds the rest.
        wait_until(lambda: server.call(lambda: len(held[0].dataBuffer) - held[0].offset) > 0)
        sock.settimeout(10)
        data = b""
        while len(data) < len(body):
            data += sock.recv(65536)
        assert data == body
        server.call(held[0].loseConnection)
    held.clear()


def echo_path_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_pipelined_answers_arrive_whole_and_in_order() -> None:
    """Requests pipelined on one kept-alive connection: the queued answers in their order."""
    paths = [f"/page/{n}" for n in range(8)]
    with serve(echo_path_app) as server:
        request = b"".join(
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode() for path in paths
        )
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(10)
            sock.sendall(request)
            data = b""
            deadline = time.monotonic() + 10
            while data.count(b"HTTP/1.1 200 OK") < len(paths) or not data.endswith(
                paths[-1].encode()
            ):
                assert time.monotonic() < deadline, data
                data += sock.recv(65536)
        bodies = [answer.rsplit(b"\r\n\r\n", 1)[1] for answer in data.split(b"HTTP/1.1 ")[1:]]
        assert bodies == [path.encode() for path in paths]


class _QueuedTransport:
    """A transport's state as write_soon and its flush read it, and what the flush calls."""

    bufferSize = 65536

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.connected = True
        self.disconnecting = False
        self._writeDisconnected = False
        self._aborting = False
        self._tempDataBuffer: list[bytes] = []
        self._tempDataLen = 0
        self.dataBuffer = b""
        self.calls: list[str] = []

    def doWrite(self) -> None:
        self.calls.append("doWrite")

    def startWriting(self) -> None:
        self.calls.append("startWriting")


def test_an_abort_after_the_write_leaves_the_poller_alone() -> None:
    """
    Aborted in the same turn (abortConnection makes its doWrite a no-op and
    closes on the next turn): the flush neither writes it nor registers it
    as a writer; a connection queued beside it is written.
    """
    from twisted.internet.task import Clock

    clock = Clock()
    aborted, other = _QueuedTransport(clock), _QueuedTransport(clock)
    write_soon(aborted, b"opening")
    write_soon(other, b"opening")
    aborted._aborting = True
    clock.advance(0)
    assert aborted.calls == []
    assert other.calls == ["doWrite", "startWriting"]  # (its doWrite here sends nothing)
    assert _lean._unsent == {}


def iterations_spied(listener: Listener) -> tuple[list[int], Callable[[], None]]:
    """Count the reactor's polls (C{doIteration}); returns the count and an undo."""
    polls = [0]

    def spy() -> None:
        from twisted.internet import reactor

        original = reactor.doIteration

        def counted(timeout: Any) -> None:
            polls[0] += 1
            original(timeout)

        reactor.doIteration = counted  # type: ignore[method-assign]

    def unspy() -> None:
        from twisted.internet import reactor

        del reactor.doIteration

    listener.call(spy)
    return polls, lambda: listener.call(unspy)


def test_a_closing_connection_is_written_and_closed_after_the_turn(listener: Any) -> None:
    """
    write_soon then loseConnection: the bytes are sent and the connection is
    closed once the turn is done, without another poll of the reactor to
    learn that its socket is writable.
    """
    polls: list[int] = []
    seen: list[tuple[int, int]] = []

    def on_connect(transport: Any) -> None:
        write_soon(transport, b"x" * 1000)
        transport.loseConnection()
        made = polls[0]
        # (Wrapping the listener's connectionLost: the poll count when it closed.)
        protocol = transport.protocol
        lost = protocol.connectionLost

        def connection_lost(reason: Any = None) -> None:
            seen.append((made, polls[0]))
            lost(reason)

        protocol.connectionLost = connection_lost

    server = listener(on_connect)
    polls, undo = iterations_spied(server)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.number)) as sock:
                assert read_all(sock) == b"x" * 1000
        wait_until(lambda: len(seen) == 5)
    finally:
        undo()
    assert all(made == closed for made, closed in seen), seen
    assert server.errors == []


def test_a_closing_connection_the_kernel_does_not_take_at_once_gets_it_all(listener: Any) -> None:
    """
    A send buffer too small for the queued bytes of a closing connection:
    the rest follows, then the close.
    """
    body = bytes(range(256)) * 200

    def on_connect(transport: Any) -> None:
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        write_soon(transport, body)
        transport.loseConnection()

    server = listener(on_connect)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.number))
        time.sleep(0.2)  # (the first send fills the small buffers; the rest waits for the reader)
        assert read_all(sock) == body
    wait_until(lambda: len(server.lost) >= 1)
    assert server.errors == []


class _ClosingReactor:
    """A reactor for the flush of closing transports: a Clock, and the close it is asked for."""

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.callLater = self.clock.callLater
        self.closed: list[tuple[Any, Any, bool]] = []

    def _disconnectSelectable(self, selectable: Any, why: Any, is_read: bool) -> None:
        self.closed.append((selectable, why, is_read))


def test_a_closing_connection_with_a_producer_is_left_to_the_reactor() -> None:
    """
    loseConnection with a producer registered waits for the producer to be
    unregistered: the flush neither writes nor closes it.
    """
    reactor = _ClosingReactor()
    transport = _QueuedTransport(reactor)
    write_soon(transport, b"opening")
    transport.disconnecting = True
    transport.producer = object()
    reactor.clock.advance(0)
    assert transport.calls == []
    assert reactor.closed == []


def test_a_closing_connection_whose_write_fails_is_closed_with_the_error() -> None:
    """
    The write of a closing connection fails: the connection is lost with
    the error, which is logged.
    """
    from twisted.logger import globalLogPublisher

    reactor = _ClosingReactor()
    transport = _QueuedTransport(reactor)
    transport.producer = None
    failure = OSError("write failed")

    def failing_write() -> None:
        raise failure

    transport.doWrite = failing_write  # type: ignore[method-assign]
    write_soon(transport, b"opening")
    transport.disconnecting = True
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        reactor.clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert reactor.closed == [(transport, failure, False)]
    assert [event["log_failure"].value for event in logged if "log_failure" in event] == [failure]
