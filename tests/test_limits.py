"""Connection caps and slow clients over real sockets."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import http_request, parse_stream, self_signed_cert, serve, tls_listen


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_total_connection_cap_tells_the_client_to_retry_later() -> None:
    """Past max_connections a stream gets a 200 retry answer and ends; a freed slot is reusable."""
    with serve(app, max_connections=2, busy_retry_after=7) as server:
        first, second = server.stream(), server.stream()
        try:
            server.wait_clients(2)
            with server.stream() as refused:
                refused.read_to_end()
                assert refused.status == 200
                assert refused.headers["content-type"].startswith("text/event-stream")
                assert refused.headers["retry-after"] == "7"
                assert refused.headers["connection"] == "close"
                assert refused.parser.comments == [" too many connections"]
                assert refused.parser.retry is not None and 7000 <= refused.parser.retry <= 10500
                assert refused.events == []
                assert refused.sock.recv(1) == b""  # the connection is closed, not kept alive
            first.close()
            server.wait_clients(1)
            with server.stream() as third:
                assert third.status == 200
        finally:
            first.close()
            second.close()
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"503": 1}


def test_per_address_cap_tells_the_client_to_retry_later() -> None:
    """Past max_connections_per_address the address gets a 200 retry answer with a reason."""
    with serve(app, max_connections_per_address=1, retry=100) as server:
        with server.stream() as first:
            assert first.status == 200
            server.wait_clients(1)
            status, headers, body = http_request(server.port, "GET", "/sse")
            assert status == 200
            assert headers["retry-after"] == "5"
            assert headers["content-type"].startswith("text/event-stream")
            parsed = parse_stream(body.decode())
            assert parsed.comments == [" too many connections from your address"]
            assert parsed.retry is not None and 5000 <= parsed.retry <= 7500
        server.wait_clients(0)
        with server.stream() as again:
            assert again.status == 200


def _owed_to(server: Any, port: int) -> int:
    """Bytes the server holds for the client on C{port}: held events plus the transport buffer."""

    def owed() -> int:
        for client in server.service.sse_resource.clients:
            if client.request.getClientAddress().port == port and not client.closed:
                transport = client.request.channel.transport
                buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
                return int(client.held_bytes + buffered)
        return 0

    return int(server.call(owed))


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_event_larger_than_max_buffer_drops_a_non_reading_client_at_once(
    tls: bool, tmp_path: Path
) -> None:
    """
    One event the kernel cannot take, larger than max_buffer, is not kept
    for a client that stopped reading: the connection is aborted as it is
    written, counted as dropped for its buffer.
    """
    max_buffer = 64 * 1024
    listen = tls_listen(*self_signed_cert(tmp_path)) if tls else "tcp:0:interface=127.0.0.1"
    with serve(app, max_buffer=max_buffer, max_pause=600, listen=listen) as server:
        bc = server.service.broadcaster
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", server.port))
        if tls:
            context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
            slow = context.wrap_socket(slow, server_hostname="127.0.0.1")
        slow.sendall(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        try:
            server.wait_clients(1)
            # More than the kernel's socket buffers take (a few MiB at most).
            assert bc.broadcast_and_wait("z" * 16_000_000) == 1
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["dropped_slow"] == 1
            assert snapshot["dropped_by_reason"] == {"buffer": 1}
            assert server.call(lambda: server.service.hub.subscriber_count()) == 0
            server.wait_clients(0)
            slow.settimeout(5)
            try:
                while slow.recv(1 << 20):
                    pass
            except (ConnectionResetError, ssl.SSLError):
                pass
        finally:
            slow.close()


def test_a_first_answer_larger_than_max_buffer_reaches_its_reader() -> None:
    """An init event larger than max_buffer is the page's own answer: it is written, not cut."""
    state = "s" * 12_000_000  # more than the kernel takes at once
    with serve(app, max_buffer=64 * 1024, initial=lambda request: state) as server:
        with server.stream("/sse?channel=big") as client:
            (event,) = client.wait_events(1)
            assert (event.type, len(event.data)) == ("init", len(state))
            assert server.service.broadcaster.broadcast_and_wait("next", channel="big") == 1
            assert client.wait_events(2)[1].data == "next"
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["dropped_slow"] == 0


def test_non_reading_client_is_dropped_and_memory_stays_bounded() -> None:
    """A client that never reads is aborted at its max_buffer; another one gets every event."""
    max_buffer = 256 * 1024
    payload = "x" * 8000
    batches, per_batch = 128, 16  # 16 MB in all
    total_bytes = batches * per_batch * len(payload)
    with serve(app, max_buffer=max_buffer, history_size=10) as server:
        bc = server.service.broadcaster
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        slow_port = slow.getsockname()[1]
        fast = server.stream()
        try:
            server.wait_clients(2)
            process = psutil.Process()
            rss_before = process.memory_info().rss
            rss_peak = rss_before
            owed_peak = 0
            sent = received = 0
            for _ in range(batches):
                for _ in range(per_batch):
                    bc.broadcast(f"{sent} {payload}")
                    sent += 1
                owed_peak = max(owed_peak, _owed_to(server, slow_port))
                fast.wait_events(sent - received, timeout=30)
                for event in fast.events:
                    number, _, data = event.data.partition(" ")
                    assert int(number) == received and data == payload
                    received += 1
                # Keep the reader's own memory flat, so RSS shows the server.
                fast.events.clear()
                fast.body = b""
                rss_peak = max(rss_peak, process.memory_info().rss)
            assert received == sent == batches * per_batch
            server.wait_clients(1)
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["dropped_slow"] == 1
            assert snapshot["dropped_by_reason"] == {"buffer": 1}
            assert server.call(lambda: server.service.hub.subscriber_count()) == 1
            # Held events (at most max_buffer plus the event that crossed it)
            # plus Twisted's transport buffer (64 KiB before it pauses us, plus
            # one resumed write of at most max_buffer), plus one batch of slack
            # between two samples.  Without the cap it would reach 16 MB.
            assert owed_peak <= 2 * max_buffer + 64 * 1024 + per_batch * (len(payload) + 40)
            rss_growth = rss_peak - rss_before
            print(
                f"\nslow client: published {total_bytes / 2**20:.1f} MiB, "
                f"peak owed to it {owed_peak / 1024:.0f} KiB (max_buffer "
                f"{max_buffer // 1024} KiB), process RSS growth "
                f"{rss_growth / 2**20:.1f} MiB"
            )
            assert rss_growth < total_bytes / 2
            # The slow socket was aborted: reading it to the end ends (RST or EOF).
            slow.settimeout(5)
            try:
                while slow.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        finally:
            slow.close()
            fast.close()
