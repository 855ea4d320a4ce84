"""Revocation edges: disconnect() racing a stream's setup, over real sockets."""

from __future__ import annotations

from typing import Any

from support import StreamClient, serve

import wsgi_sse
from wsgi_sse import Allowed, StreamRequest


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def _pending(server: Any) -> tuple[int, int, int]:
    """Open streams, streams being authorized, and revocation watches left."""

    def read() -> tuple[int, int, int]:
        resource = server.service.sse_resource
        return len(resource.clients), resource._pending, len(server.service.hub._watches)

    return server.call(read)  # type: ignore[no-any-return]


def test_a_stream_revoked_every_time_its_hooks_run_is_told_to_come_back_later() -> None:
    """
    After its hooks ran four times (three re-runs), each time revoked while
    they ran, a stream is answered as a browser keeps reconnecting from: a
    200 event stream with only a comment and a retry:, Retry-After, and the
    end of the connection; the stats count a 503.
    """
    calls: list[str] = []

    def revoking(request: StreamRequest) -> Allowed:
        # The user logs out (elsewhere) every time the hook checks them.
        calls.append("authorize")
        wsgi_sse.disconnect(identity="ada")
        return Allowed(True, identity="ada")

    with serve(app, authorize=revoking, busy_retry_after=7, retry=1000) as server:
        with StreamClient(server.port, "/sse?channel=room") as client:
            client.read_to_end()
            assert client.eof
        assert len(calls) == 4
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert client.headers["retry-after"] == "7"
        assert client.headers["connection"] == "close"
        assert client.body.startswith(b": stream revoked while opening\nretry: ")
        assert client.parser.events == []
        retry = client.parser.retry
        assert retry is not None and 7000 <= retry <= 7000 * 1.5
        assert client.parser.fields_seen == ["retry"]
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"503": 1}
        assert _pending(server) == (0, 0, 0)
