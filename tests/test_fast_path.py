"""
The write fast path (events sent straight to the socket, pre-framed once per
event) and the batched publishing: real sockets, real server.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import pytest
from support import StreamClient as Reader
from support import http_request, parse_stream, serve

from wsgi_sse import Hub
from wsgi_sse._broadcast import Broadcaster
from wsgi_sse._client import _chunk, send_to_each


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every path with a short page."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def only_client(server: Any) -> Any:
    """The server-side StreamClient of the one connected stream."""
    (client,) = server.service.sse_resource.clients
    return client


def raw_stream(port: int, *, version: str = "HTTP/1.1", rcvbuf: int | None = None) -> socket.socket:
    """Open a stream on a raw socket (optionally with a tiny receive buffer) and send the GET."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /sse {version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def read_until(sock: socket.socket, done: Any, timeout: float = 20.0, data: bytes = b"") -> bytes:
    """Read from C{sock} until C{done(data)} is true; return C{data} and everything read."""
    deadline = time.monotonic() + timeout
    while not done(data):
        assert time.monotonic() < deadline, f"timed out with {len(data)} bytes"
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data


def dechunk(body: bytes, *, partial: bool = False) -> bytes:
    """
    Decode an HTTP/1.1 chunked body strictly (every chunk complete and
    framed); with C{partial}, decode the complete chunks at its start.
    """
    out = b""
    while body:
        if partial and b"\r\n" not in body:
            break
        size_line, rest = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if partial and len(rest) < size + 2:
            break
        assert rest[size : size + 2] == b"\r\n", "bad chunk framing"
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def test_chunk_is_framed_once_per_event() -> None:
    """The chunk framing is exact, and the same wire object gets the same framed bytes."""
    wire = b"id: x-1\ndata: hi\n\n"
    framed = _chunk(wire)
    assert framed == b"12\r\nid: x-1\ndata: hi\n\n\r\n"
    assert _chunk(wire) is framed
    other = b"data: a longer event than the first one\n\n"
    assert _chunk(other) == b"%x\r\n%b\r\n" % (len(other), other)


def test_fan_out_hands_other_subscribers_the_event_in_order() -> None:
    """send_to_each() calls send(wire) on subscribers that are not streams, each once, in order."""
    received: list[tuple[str, bytes]] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def send(self, wire: bytes) -> None:
            received.append((self.name, wire))

    wire = b"id: x-2\ndata: hi\n\n"
    send_to_each([Recorder("a"), Recorder("b")], wire)
    assert received == [("a", wire), ("b", wire)]


def test_fan_out_follows_subscribers_joining_and_leaving_between_events() -> None:
    """Each event reaches exactly the subscribers of that moment, in the order they joined."""
    received: list[tuple[str, bytes]] = []

    class Recorder:
        def __init__(self, name: str, drop: Any = None) -> None:
            self.name, self.drop = name, drop

        def send(self, wire: bytes) -> None:
            received.append((self.name, wire))
            if self.drop is not None:
                self.drop()

    hub = Hub()
    a, b, c = Recorder("a"), Recorder("b"), Recorder("c")
    hub.subscribe(a, ["news"])
    hub.subscribe(b, ["news"])
    hub.publish("news", b"data: 1\n")
    hub.subscribe(c, ["news"])
    hub.publish("news", b"data: 2\n")
    hub.unsubscribe(a)
    hub.publish("news", b"data: 3\n")
    # A subscriber that drops another during a fan-out: that one still gets
    # this event (the fan-out's snapshot), and not the next.
    d = Recorder("d", drop=lambda: hub.unsubscribe(c))
    hub.unsubscribe(b)
    hub.subscribe(d, ["news"])
    hub.subscribe(b, ["news"])
    hub.publish("news", b"data: 4\n")
    hub.publish("news", b"data: 5\n")
    order = [(name, wire.split(b"data: ")[1][:1].decode()) for name, wire in received]
    assert order == [
        ("a", "1"), ("b", "1"),
        ("a", "2"), ("b", "2"), ("c", "2"),
        ("b", "3"), ("c", "3"),
        ("c", "4"), ("d", "4"), ("b", "4"),
        ("d", "5"), ("b", "5"),
    ]  # fmt: skip


def test_http11_stream_takes_fast_path_and_stays_well_framed() -> None:
    """A plain HTTP/1.1 stream is written straight to its socket; chunks stay intact."""
    with serve(hello_app) as server:
        with server.stream() as reader:
            server.wait_clients(1)
            assert reader.chunked
            server.call(lambda: [server.service.hub.publish("default", b"data: %d\n" % i)
                                 for i in range(50)])  # fmt: skip
            events = reader.wait_events(50)
            assert [e.data for e in events] == [str(i) for i in range(50)]
            assert server.call(lambda: only_client(server)._sock is not None)


def test_http10_stream_is_unchunked_on_the_generic_path() -> None:
    """An HTTP/1.0 client gets the raw event stream (no chunk framing) via request.write."""
    with serve(hello_app) as server:
        sock = raw_stream(server.port, version="HTTP/1.0")
        try:
            head = read_until(sock, lambda d: b"\r\n\r\n" in d)
            assert b"transfer-encoding" not in head.lower()
            server.wait_clients(1)
            assert server.call(lambda: only_client(server)._sock) is None
            server.call(server.service.hub.publish, "default", b"data: plain\n")
            data = read_until(sock, lambda d: b"data: plain\n\n" in d, data=head)
            body = data.split(b"\r\n\r\n", 1)[1]
            assert body.endswith(b"data: plain\n\n")
            assert b"\r\n" not in body
        finally:
            sock.close()


def test_partial_send_then_buffered_remainder_keeps_byte_order() -> None:
    """When the kernel takes part of an event, the rest is queued and later events follow it."""
    count, size = 60, 50_000
    with serve(hello_app, max_buffer=64 << 20, max_pause=60.0) as server:
        sock = raw_stream(server.port, rcvbuf=4096)
        try:
            start = read_until(sock, lambda d: b"retry:" in d)
            server.wait_clients(1)

            def publish_all() -> int:
                client = only_client(server)
                # A small send buffer makes the kernel accept only part of a
                # 50 kB event: the fast path must queue the remainder.
                client._transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
                hub = server.service.hub
                for i in range(count):
                    hub.publish("default", b"data: %d:%s\n" % (i, b"x" * size))
                transport = client._transport
                return (
                    len(transport.dataBuffer) + transport._tempDataLen + sum(map(len, client._held))
                )

            queued = server.call(publish_all)
            assert queued > 0, "the kernel took everything: the test did not exercise the fallback"
            last = b"data: %d:" % (count - 1)
            data = read_until(sock, lambda d: last in d and d.endswith(b"\n\n\r\n"), data=start)
            body = dechunk(data.split(b"\r\n\r\n", 1)[1])
            events = parse_stream(body.decode()).events
            assert [e.data.split(":")[0] for e in events] == [str(i) for i in range(count)]
            assert all(e.data.endswith("x" * size) for e in events)
        finally:
            sock.close()


def test_paused_client_is_still_capped() -> None:
    """A reader that stops reading is paused, its events held, then dropped past max_buffer."""
    with serve(hello_app, max_buffer=200_000, max_pause=60.0) as server:
        sock = raw_stream(server.port, rcvbuf=4096)
        try:
            read_until(sock, lambda d: b"retry:" in d)
            server.wait_clients(1)
            resource = server.service.sse_resource

            def publish(n: int) -> bool:
                client = only_client(server)
                client._transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
                for i in range(n):
                    server.service.hub.publish("default", b"data: %d:%s\n" % (i, b"y" * 20_000))
                return bool(client.closed)

            assert server.call(publish, 60)
            server.wait_clients(0)
            assert server.call(lambda: resource.stats.dropped_slow) == 1
        finally:
            sock.close()


def test_resumed_client_returns_to_fast_path_in_order() -> None:
    """After a pause, held events come first, then new events on the fast path, in order."""
    with serve(hello_app, max_buffer=64 << 20, max_pause=60.0) as server:
        sock = raw_stream(server.port, rcvbuf=4096)
        try:
            start = read_until(sock, lambda d: b"retry:" in d)
            server.wait_clients(1)

            def publish(start: int, n: int) -> bool:
                client = only_client(server)
                for i in range(start, start + n):
                    server.service.hub.publish("default", b"data: %d:%s\n" % (i, b"z" * 30_000))
                return bool(client.paused)

            assert server.call(publish, 0, 100), "the client was never paused"
            data = read_until(
                sock, lambda d: b"data: 99:" in d and d.endswith(b"\n\n\r\n"), data=start
            )
            deadline = time.monotonic() + 10
            while server.call(lambda: only_client(server).paused):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert server.call(lambda: only_client(server)._sock is not None)
            server.call(publish, 100, 3)
            data = read_until(
                sock, lambda d: b"data: 102:" in d and d.endswith(b"\n\n\r\n"), data=data
            )
            events = parse_stream(dechunk(data.split(b"\r\n\r\n", 1)[1]).decode()).events
            assert [e.data.split(":")[0] for e in events] == [str(i) for i in range(103)]
        finally:
            sock.close()


def test_started_stream_sheds_request_state_but_keeps_logged_headers() -> None:
    """A started stream keeps only the headers the access log reads, and no body buffer."""
    with serve(hello_app) as server:
        with Reader(server.port, headers={"User-Agent": "probe/1", "X-Other": "big"}):
            server.wait_clients(1)

            def inspect() -> tuple[Any, Any, Any, Any]:
                request = only_client(server).request
                headers = request.requestHeaders
                return (
                    headers.getRawHeaders(b"user-agent"),
                    headers.getRawHeaders(b"x-other"),
                    list(request.responseHeaders.getAllRawHeaders()),
                    request.content,
                )

            agent, other, response_headers, content = server.call(inspect)
            assert list(agent) == [b"probe/1"]
            assert other is None
            assert response_headers == []
            assert content is None


class Recorder:
    """A subscriber that records every write it gets."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def send(self, wire: bytes) -> None:
        self.writes.append(wire)


def test_publish_many_writes_once_with_ids_history_and_replay() -> None:
    """publish_many gives each event its id and history entry, and subscribers one write."""
    hub = Hub(instance_id="t", clock=_FixedClock())
    sub = Recorder()
    hub.subscribe(sub, ["a"])
    assert hub.publish_many("a", [b"data: 1\n", b"data: 2\n", b"data: 3\n"]) == 1
    assert sub.writes == [b"id: t-1\ndata: 1\n\nid: t-2\ndata: 2\n\nid: t-3\ndata: 3\n\n"]
    assert hub.last_id == "t-3"
    assert hub.stats.events_published == 3 and hub.stats.deliveries == 3
    replayed = hub.replay(["a"], "t-1")
    assert replayed is not None and [e.id for e in replayed] == ["t-2", "t-3"]


class _FixedClock:
    def seconds(self) -> float:
        return 1000.0


class _QueueingReactor:
    """Collects what is handed to callFromThread or timed with callLater, to run it later."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callFromThread(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, args))

    def callLater(self, delay: float, fn: Any, *args: Any) -> None:
        assert delay == 0
        self.calls.append((fn, args))

    def run(self) -> None:
        """Run the reactor's turns until nothing more was handed over."""
        while self.calls:
            fn, args = self.calls.pop(0)
            fn(*args)


def test_queued_broadcasts_are_batched_in_order_across_channels() -> None:
    """Queued broadcasts drain in one call: per-channel runs joined, order kept."""
    hub = Hub(instance_id="q", clock=_FixedClock())
    both, only_b = Recorder(), Recorder()
    hub.subscribe(both, ["a", "b"])
    hub.subscribe(only_b, ["b"])
    reactor = _QueueingReactor()
    broadcaster = Broadcaster(hub, reactor=reactor)
    for data, channel in (("1", "a"), ("2", "a"), ("3", "b"), ("4", "a")):
        broadcaster.broadcast(data, channel=channel)
    assert len(reactor.calls) == 1, "one reactor hand-off for the whole batch"
    reactor.run()
    assert both.writes == [
        b"id: q-1\ndata: 1\n\nid: q-2\ndata: 2\n\n",
        b"id: q-3\ndata: 3\n\n",
        b"id: q-4\ndata: 4\n\n",
    ]
    assert only_b.writes == [b"id: q-3\ndata: 3\n\n"]
    broadcaster.broadcast("5", channel="b")
    assert len(reactor.calls) == 1, "a new batch is scheduled once the previous one ran"


def test_failing_publish_does_not_lose_the_rest_of_the_batch() -> None:
    """An exception from one publish is logged and the events queued after it still go out."""
    hub = Hub(instance_id="f", clock=_FixedClock())
    sub = Recorder()
    hub.subscribe(sub, ["a"])

    class Exploding(Recorder):
        def send(self, wire: bytes) -> None:
            raise RuntimeError("boom")

    hub.subscribe(Exploding(), ["bad"])
    reactor = _QueueingReactor()
    broadcaster = Broadcaster(hub, reactor=reactor)
    broadcaster.broadcast("x", channel="bad")
    broadcaster.broadcast("y", channel="a")
    from twisted.logger import globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        reactor.run()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert sub.writes == [b"id: f-2\ndata: y\n\n"]
    assert any(e.get("log_failure") is not None for e in seen)


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's dict layout")
def test_stream_objects_keep_shared_attribute_dicts_after_page_views() -> None:
    """A stream opened after page views keeps small (key-shared) channel and request dicts."""
    with serve(hello_app) as server:
        for method in ("GET", "POST"):
            http_request(server.port, method, "/page", body=b"a=1")
        with Reader(server.port):
            server.wait_clients(1)

            def sizes() -> tuple[int, int]:
                request = only_client(server).request
                return sys.getsizeof(vars(request.channel)), sys.getsizeof(vars(request))

            channel_size, request_size = server.call(sizes)
            # A private (unshared) table for ~27 names is 1,584 bytes.
            assert channel_size < 1000
            assert request_size < 1000


def test_unix_socket_stream_takes_fast_path(tmp_path: Any) -> None:
    """Behind a proxy on a UNIX socket, streams are written straight to the socket too."""
    path = str(tmp_path / "sse.sock")
    with serve(hello_app, listen=f"unix:{path}") as server:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        try:
            sock.connect(path)
            sock.sendall(b"GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head = read_until(sock, lambda d: b"retry:" in d)
            server.wait_clients(1)
            server.call(lambda: [server.service.hub.publish("default", b"data: %d\n" % i)
                                 for i in range(20)])  # fmt: skip
            assert server.call(lambda: isinstance(only_client(server)._sock, socket.socket))
            data = read_until(sock, lambda d: b"data: 19\n" in d, data=head)
            body = dechunk(data.split(b"\r\n\r\n", 1)[1], partial=True)
            assert [e.data for e in parse_stream(body.decode()).events] == [
                str(i) for i in range(20)
            ]
        finally:
            sock.close()
