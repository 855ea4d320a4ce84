"""The stream over real sockets: a real server on a loopback ephemeral port."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from support import http_request, serve

from wsgi_sse import broadcast, hold_body, hold_headers


def knock_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app whose POST /knock broadcasts the posted body."""
    if environ["PATH_INFO"] == "/knock" and environ["REQUEST_METHOD"] == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        name = environ["wsgi.input"].read(size).decode("utf-8")
        broadcast(f"{name} knocked")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_view_broadcast_reaches_stream() -> None:
    """A broadcast() made in a WSGI view thread reaches a connected client."""
    with serve(knock_app) as server:
        with server.stream() as client:
            assert client.status == 200
            server.wait_clients(1)
            status, _, body = http_request(server.port, "POST", "/knock", body=b"Ada")
            assert (status, body) == (200, b"ok")
            (event,) = client.wait_events(1)
            assert event.data == "Ada knocked"
            assert event.type == "message"
            assert event.last_event_id.endswith("-1")


def test_stream_headers_and_initial_flush() -> None:
    """Headers and an initial comment with retry arrive before any event."""
    with serve(knock_app, retry=2000, retry_jitter=0.5) as server:
        with server.stream() as client:
            assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert client.headers["cache-control"] == "no-cache"
            assert client.headers["x-accel-buffering"] == "no"
            client.wait_for(lambda c: c.parser.retry is not None)
            assert 2000 <= client.parser.retry <= 3000
            assert client.parser.comments and client.events == []


def test_eight_threads_thousand_events_each_keep_order() -> None:
    """8 threads x 1,000 broadcasts: none lost, each thread's order kept."""
    per_thread, threads = 1000, 8
    with serve(knock_app) as server:
        with server.stream() as client:
            server.wait_clients(1)
            barrier = threading.Barrier(threads)

            def publish(t: int) -> None:
                barrier.wait()
                for i in range(per_thread):
                    broadcast(f"{t}:{i}")

            workers = [threading.Thread(target=publish, args=(t,)) for t in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            events = client.wait_events(per_thread * threads, timeout=60)
            assert len(events) == per_thread * threads
            seen: dict[int, list[int]] = {t: [] for t in range(threads)}
            for e in events:
                t, i = e.data.split(":")
                seen[int(t)].append(int(i))
            for t in range(threads):
                assert seen[t] == list(range(per_thread))
            ids = [int(e.last_event_id.rsplit("-", 1)[1]) for e in events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_disconnected_client_is_removed() -> None:
    """A client that closes its socket is unsubscribed and forgotten."""
    with serve(knock_app) as server:
        client = server.stream()
        server.wait_clients(1)
        assert server.call(lambda: server.service.hub.subscriber_count()) == 1
        client.close()
        server.wait_clients(0)
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0
        assert server.call(lambda: dict(server.service.sse_resource._per_address)) == {}


def test_heartbeat_arrives_without_id() -> None:
    """With a short interval, heartbeat comments arrive and carry no id."""
    with serve(knock_app, heartbeat=0.1) as server:
        with server.stream() as client:
            client.wait_for(lambda c: len(c.parser.comments) >= 3, timeout=5)
            assert "id" not in client.parser.fields_seen
            assert client.events == []


def _hold_or_knock(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """knock_app, with a view at /held that holds a stream on the default channel."""
    if environ["PATH_INFO"] == "/held":
        start_response("200 OK", hold_headers("default"))
        return [hold_body("held")]
    return knock_app(environ, start_response)


def test_beat_reaches_every_kind_of_stream() -> None:
    """beat() writes a comment to fast-path, HTTP/1.0, held-view and paused streams (on resume)."""
    with serve(_hold_or_knock, heartbeat=0) as server:
        streams = server.service.sse_resource.streams
        fast, paused = server.stream(), server.stream()
        held = server.stream("/held")
        old = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        old.sendall(b"GET /sse HTTP/1.0\r\nHost: x\r\n\r\n")
        try:
            server.wait_clients(4)
            for client in (fast, paused, held):
                client.wait_for(lambda c: c.parser.retry is not None)

            def paths() -> list[tuple[bool, int]]:
                by_port = {c.request.getClientAddress().port: c for c in streams.clients}
                ports = [s.sock.getsockname()[1] for s in (fast, paused, held)]
                return [
                    (bool(c._sock), c.held_bytes)
                    for c in (*(by_port[p] for p in ports), by_port[old.getsockname()[1]])
                ]

            def pause_then_beat() -> list[tuple[bool, int]]:
                (client,) = [
                    c
                    for c in streams.clients
                    if c.request.getClientAddress().port == paused.sock.getsockname()[1]
                ]
                client.pauseProducing()
                streams.beat()
                streams.beat()
                return paths()

            # Fast path, held by the paused reader, fast path (a view's
            # stream), generic path (HTTP/1.0, no chunks).
            assert server.call(paths) == [(True, 0), (True, 0), (True, 0), (False, 0)]
            assert server.call(pause_then_beat) == [(True, 0), (False, 4), (True, 0), (False, 0)]
            for client in (fast, held):
                client.wait_for(lambda c: c.parser.comments.count("") == 2)
            paused.read_some(0.2)
            assert paused.parser.comments.count("") == 0
            server.call(lambda: [c.resumeProducing() for c in streams.clients if c.held_bytes])
            paused.wait_for(lambda c: c.parser.comments.count("") == 2)
            body = b""
            while body.split(b"\n").count(b":") < 2:
                data = old.recv(4096)
                assert data, f"HTTP/1.0 stream ended: {body!r}"
                body += data
            assert b"200 OK" in body and b"retry:" in body and b"Transfer-Encoding" not in body
            assert streams.snapshot()["bytes_sent"] >= 8 * len(b":\n")
        finally:
            old.close()
            for client in (fast, paused, held):
                client.close()


def test_head_subscribes_nothing() -> None:
    """HEAD answers the stream headers and registers no listener."""
    with serve(knock_app) as server:
        status, headers, body = http_request(server.port, "HEAD", "/sse")
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert body == b""
        assert server.client_count() == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused(method: str) -> None:
    """Non-GET methods on the stream get 405 with an Allow header."""
    with serve(knock_app) as server:
        status, headers, _ = http_request(server.port, method, "/sse")
        assert status == 405
        assert "GET" in headers["allow"]
        assert server.client_count() == 0


def test_shutdown_with_clients_ends_streams_promptly() -> None:
    """Stopping the service with clients connected ends their streams at once."""
    with serve(knock_app) as server:
        clients = [server.stream() for _ in range(5)]
        server.wait_clients(5)
        server.call(server.service.stopService)
        for c in clients:
            c.read_to_end(timeout=5)
            assert c.eof
            c.close()
        # serve() stops it again on exit; that must be harmless.


def test_vanished_peers_are_bounded_by_tcp_user_timeout() -> None:
    """Stream sockets get TCP_USER_TIMEOUT of twice the heartbeat (at least 30 s)."""
    import socket

    with serve(knock_app, heartbeat=20) as server:
        with server.stream() as client:
            server.wait_clients(1)

            def timeout_ms() -> int:
                (stream,) = server.service.sse_resource.clients
                sock = stream.request.channel.transport.socket
                return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))

            assert server.call(timeout_ms) == 40_000
            assert client.status == 200


def test_a_heartbeat_of_weeks_gets_the_longest_tcp_user_timeout() -> None:
    """A heartbeat longer than TCP_USER_TIMEOUT can hold (some 24 days) gets its maximum."""
    import socket

    with serve(knock_app, heartbeat=10_000_000) as server:
        with server.stream() as client:
            assert client.status == 200
            server.wait_clients(1)

            def timeout_ms() -> int:
                (stream,) = server.service.sse_resource.clients
                sock = stream.request.channel.transport.socket
                return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))

            assert server.call(timeout_ms) == 2**31 - 1
