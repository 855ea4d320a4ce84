"""Transient refusals keep EventSource reconnecting; shutdown closes connections; 204 stops."""

from __future__ import annotations

from typing import Any

from support import http_request, parse_stream, serve

from wsgi_sse import StreamRequest


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_shutdown_closes_stream_connections_and_refusals_say_retry() -> None:
    """close() ends each stream and its connection; a later stream request is told to retry."""
    with serve(app, retry=200, busy_retry_after=2) as server:
        with server.stream() as client:
            server.wait_clients(1)
            server.call(server.service.sse_resource.close)
            client.read_to_end()
            # The response ended and the connection with it: nothing to reuse.
            assert client.sock.recv(1) == b""
        with server.stream() as later:
            later.read_to_end()
            assert later.status == 200
            assert later.headers["content-type"].startswith("text/event-stream")
            assert later.parser.comments == [" server is shutting down"]
            assert later.parser.retry is not None and 2000 <= later.parser.retry <= 3000
            assert later.events == []
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"503": 1}


def test_close_for_good_answers_204() -> None:
    """close(reconnect=False) answers 204, the status that stops a browser reconnecting."""
    with serve(app) as server:
        server.call(lambda: server.service.sse_resource.close(reconnect=False))
        status, _, body = http_request(server.port, "GET", "/sse")
        assert (status, body) == (204, b"")
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"204": 1}


def test_failed_hook_tells_the_client_to_retry_with_cors() -> None:
    """A hook that raises is a transient refusal (counted as 500), with CORS for allowed origins."""

    def authorize(request: StreamRequest) -> bool:
        raise RuntimeError("database down")

    origin = "https://app.example.com"
    with serve(app, authorize=authorize, cors_origins=(origin,)) as server:
        status, headers, body = http_request(
            server.port, "GET", "/sse?channel=a", headers={"Origin": origin}
        )
        assert status == 200
        assert headers["access-control-allow-origin"] == origin
        parsed = parse_stream(body.decode())
        assert parsed.comments == [" stream hook failed"] and parsed.events == []
        assert parsed.retry is not None and parsed.retry >= 5000
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"500": 1}


def test_permanent_refusals_stay_errors() -> None:
    """Bad requests and forbidden channels are still 4xx: they would fail the same way again."""

    def authorize(request: StreamRequest) -> bool:
        return False

    with serve(app, authorize=authorize) as server:
        assert http_request(server.port, "GET", "/sse?channel=a")[0] == 403
        assert http_request(server.port, "GET", "/sse?channel=" + "x" * 200)[0] == 400
