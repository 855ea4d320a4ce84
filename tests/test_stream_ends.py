"""
Streams the server ends (revocation, close(channel), shutdown) while their
reader is behind, over real HTTP/1.1 sockets that stop reading.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from support import dechunk, serve, wait_until

import wsgi_sse
from wsgi_sse import Allowed, StreamRequest
from wsgi_sse._client import unsent_bytes
from wsgi_sse._hub import CLOSE_BODY

EVENT = "x" * 10_000


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def as_ada(request: StreamRequest) -> Allowed:
    """Every stream belongs to ada."""
    return Allowed(True, identity="ada")


def _stalled_reader(server: Any, path: str) -> tuple[socket.socket, Any]:
    """
    Open C{path} on a socket with a small receive buffer that reads nothing
    yet; return it and the server side of its connection.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    server.wait_clients(1)

    def transport() -> Any:
        (client,) = server.service.sse_resource.clients
        return client.request.channel.transport

    return sock, server.call(transport)


def _paused(server: Any) -> bool:
    return bool(server.call(lambda: all(c.paused for c in server.service.sse_resource.clients)))


def _fill(server: Any, channel: str) -> int:
    """
    Broadcast 10 kB events on C{channel} until its one stream is paused
    (the kernel's buffers and Twisted's are full), then a few more, held
    for it; return how many were sent.
    """
    broadcaster = server.service.broadcaster
    sent = 0
    while not _paused(server):
        assert sent < 2000, "the stream was never paused"
        broadcaster.broadcast_and_wait(f"{sent} {EVENT}", channel=channel)
        sent += 1
    for _ in range(5):
        broadcaster.broadcast_and_wait(f"{sent} {EVENT}", channel=channel)
        sent += 1
    assert server.call(lambda: next(iter(server.service.sse_resource.clients)).held_bytes) > 0
    return sent


def _connected(server: Any, transport: Any) -> bool:
    return bool(server.call(lambda: transport.connected))


def _read_all(sock: socket.socket) -> bytes:
    """Read until the chunked response ends, or the connection does."""
    sock.settimeout(10)
    raw = b""
    while not raw.endswith(b"\r\n0\r\n\r\n") and (data := sock.recv(1 << 20)):
        raw += data
    return raw


def test_a_revoked_stream_whose_reader_stopped_is_cut_at_once() -> None:
    """
    disconnect() of a stream whose reader stopped reading (paused, events
    held for it) aborts its connection at once, freeing what was held,
    instead of ending it cleanly behind bytes that will never be read
    (which kept the connection until idle_timeout).
    """
    with serve(app, authorize=as_ada, max_pause=600, heartbeat=0) as server:
        sock, transport = _stalled_reader(server, "/sse?channel=c")
        try:
            _fill(server, "c")
            wsgi_sse.disconnect(identity="ada")
            wait_until(lambda: not _connected(server, transport), timeout=10, what="the cut")
            server.wait_clients(0)
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["dropped_slow"] == 0
            with pytest.raises(ConnectionResetError):
                _read_all(sock)
        finally:
            sock.close()


def test_a_revoked_stream_with_unsent_bytes_is_cut_though_not_paused() -> None:
    """
    disconnect() of a stream whose connection holds bytes the kernel has
    not taken, though fewer than make it pause, aborts the connection too:
    a clean end would wait behind them for as long as the reader reads
    nothing.
    """
    with serve(app, authorize=as_ada, max_pause=600, heartbeat=0, idle_timeout=600) as server:
        sock, transport = _stalled_reader(server, "/sse?channel=c")
        try:
            broadcaster = server.service.broadcaster
            sent = 0
            while not server.call(lambda: unsent_bytes(transport)):
                assert sent < 2000, "the kernel took every byte"
                broadcaster.broadcast_and_wait(f"{sent} {EVENT}", channel="c")
                sent += 1
            assert not _paused(server)
            wsgi_sse.disconnect(identity="ada")
            wait_until(lambda: not _connected(server, transport), timeout=10, what="the cut")
            server.wait_clients(0)
            with pytest.raises(ConnectionResetError):
                _read_all(sock)
        finally:
            sock.close()


def test_a_stream_closed_then_revoked_while_its_reader_is_behind_is_cut_not_ended() -> None:
    """
    close(channel) of a stream whose reader is behind waits for it to catch
    up, unsubscribed; a disconnect() meanwhile still cuts it at once (its
    reader may no longer read what it was owed), and it is counted neither
    as ended (it never got its end) nor as dropped (it was revoked).
    """
    with serve(app, authorize=as_ada, max_pause=600, heartbeat=0) as server:
        sock, transport = _stalled_reader(server, "/sse?channel=c")
        try:
            _fill(server, "c")
            server.service.broadcaster.close("c")
            clients = server.service.sse_resource.clients
            wait_until(lambda: server.call(lambda: all(c.ending for c in clients)), what="close")
            assert _connected(server, transport)  # still waiting for the reader
            wsgi_sse.disconnect(identity="ada")
            wait_until(lambda: not _connected(server, transport), timeout=10, what="the cut")
            server.wait_clients(0)
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert (snapshot["ended"], snapshot["dropped_slow"]) == (0, 0)
            assert snapshot["disconnects"] == 1
            with pytest.raises(ConnectionResetError):
                _read_all(sock)
        finally:
            sock.close()


def test_a_stream_closed_while_its_reader_is_behind_ends_once_it_has_read_everything() -> None:
    """
    close(channel) of a stream whose reader is behind (paused, events held
    for it) ends it cleanly once the reader has caught up: every event,
    then the close's id, then the end of the chunked body.
    """
    with serve(app, max_pause=600, heartbeat=0) as server:
        sock, transport = _stalled_reader(server, "/sse?channel=c")
        try:
            sent = _fill(server, "c")
            wsgi_sse.close("c")
            server.call(lambda: None)  # the close has reached the stream
            assert _connected(server, transport)
            raw = _read_all(sock)
        finally:
            sock.close()
        _, _, body = raw.partition(b"\r\n\r\n")
        assert body.endswith(b"\r\n0\r\n\r\n")
        text = dechunk(body).decode()
        events = [block for block in text.split("\n\n") if "data: " in block]
        assert [e.partition("data: ")[2].split(" ")[0] for e in events] == [
            str(n) for n in range(sent)
        ]
        assert text.endswith("\n\n") and text.rsplit("\n\n", 2)[-2].startswith("id: ")
        server.wait_clients(0)
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert (snapshot["ended"], snapshot["dropped_slow"]) == (1, 0)


def test_bytes_sent_is_exact_for_a_stream_closed_while_its_reader_is_behind() -> None:
    """
    bytes_sent is exactly what the reader of a stream closed while it was
    behind reads once it catches up: the close's id line is counted, and
    the heartbeats it is not sent while it waits are not.
    """
    with serve(app, max_pause=600, heartbeat=0.05) as server:
        sock, transport = _stalled_reader(server, "/sse?channel=c")
        try:
            _fill(server, "c")
            wsgi_sse.close("c")
            resource = server.service.sse_resource
            wait_until(lambda: server.call(lambda: all(c.ending for c in resource.clients)))
            time.sleep(0.5)  # about ten heartbeats
            assert _connected(server, transport)
            raw = _read_all(sock)
        finally:
            sock.close()
        server.wait_clients(0)
        _, _, body = raw.partition(b"\r\n\r\n")
        sent = server.call(resource.snapshot)["bytes_sent"]
        assert sent == len(dechunk(body)), (sent, len(dechunk(body)))


def test_a_stream_closed_while_its_reader_is_stalled_is_cut_at_max_pause() -> None:
    """
    close(channel) of a stream whose reader never reads again does not keep
    its connection, and what it was owed, until idle_timeout: once
    max_pause has passed since it stopped, the connection is aborted.
    """
    with serve(app, max_pause=2, heartbeat=0) as server:
        sock, transport = _stalled_reader(server, "/sse?channel=c")
        try:
            _fill(server, "c")
            resource, hub = server.service.sse_resource, server.service.hub

            def close_while_paused() -> bool:
                # In the reactor turn that checks it: the stream is paused.
                (client,) = resource.clients
                return client.paused and hub.publish("c", CLOSE_BODY) == 1

            assert server.call(close_while_paused)
            wait_until(lambda: not _connected(server, transport), timeout=10, what="the cut")
            server.wait_clients(0)
            snapshot = server.call(server.service.sse_resource.snapshot)
            # Counted once, as what happened to it: cut, never ended cleanly.
            assert (snapshot["ended"], snapshot["disconnects"]) == (0, 1)
            assert snapshot["dropped_by_reason"] == {"stalled": 1}
        finally:
            sock.close()


def test_a_stream_whose_reader_is_behind_at_shutdown_ends_once_read_then_its_connection() -> None:
    """
    A server shutting down while a reader is behind (paused, events held
    for it) ends that stream cleanly once the reader has caught up: every
    event, the end of the chunked body, then the connection is closed.
    """
    with serve(app, max_pause=600, heartbeat=0) as server:
        sock, transport = _stalled_reader(server, "/sse?channel=c")
        try:
            sent = _fill(server, "c")
            server.call(server.service.stopService)
            assert _connected(server, transport)
            raw = _read_all(sock)
            assert sock.recv(1) == b""
        finally:
            sock.close()
        _, _, body = raw.partition(b"\r\n\r\n")
        assert body.endswith(b"\r\n0\r\n\r\n")
        events = [block for block in dechunk(body).decode().split("\n\n") if "data: " in block]
        assert len(events) == sent
        assert not _connected(server, transport)
