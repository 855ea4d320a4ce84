"""The safe defaults, pinned: what a server exposes when nothing is configured."""

from __future__ import annotations

from typing import Any

import pytest
from support import http_request, serve

from wsgi_sse import Hub, StreamOptions, make_service, set_broadcaster
from wsgi_sse._app import DEFAULT_BACKLOG, with_backlog


def not_found_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer every request with the app's own 404."""
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"app 404"]


def test_stream_option_defaults_are_the_documented_caps() -> None:
    """Connection, channel, name and slow-client caps are on; CORS is same-origin only."""
    options = StreamOptions()
    assert options.max_connections == 10_000
    assert options.max_connections_per_address is None
    assert options.max_channels == 16
    assert options.max_channel_length == 64
    assert options.channel_pattern == r"[A-Za-z0-9_.:@~-]+"
    assert options.max_buffer == 1024 * 1024
    assert options.max_pause == 60.0
    assert options.cors_origins == ()
    assert options.cors_credentials is False
    assert options.authorize is None


def test_history_is_bounded_by_default() -> None:
    """Each of at most 10,000 channels keeps at most 1,000 events for at most ten minutes."""
    hub = Hub()
    assert (hub.history_size, hub.history_age, hub.history_channels) == (1000, 600.0, 10_000)


@pytest.mark.parametrize(
    "path", ["/publish", "/stats", "/metrics", "/sse/publish", "/sse/stats", "/_stats"]
)
def test_no_publish_endpoint_nor_stats_unless_enabled(path: str) -> None:
    """Without publish_path/stats_path/metrics_path those paths belong to the WSGI app."""
    with serve(not_found_app) as server:
        for method in ("GET", "POST"):
            status, _, body = http_request(
                server.port,
                method,
                path,
                body=b'{"data": "x"}',
                headers={"Authorization": "Bearer " + "s" * 32},
            )
            assert (status, body) == (404, b"app 404")
        assert server.service.publish_resource is None


def test_publish_endpoint_refuses_to_start_without_a_real_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Enabling the publish endpoint without a secret of 16+ characters is an error."""
    monkeypatch.delenv("WSGI_SSE_PUBLISH_SECRET", raising=False)
    try:
        for secret in (None, "", "short"):
            with pytest.raises(ValueError, match="secret"):
                make_service(
                    not_found_app, listen="tcp:0", publish_path="/publish", publish_secret=secret
                )
    finally:
        set_broadcaster(None)


def test_foreign_origins_get_no_cors_grant() -> None:
    """By default another site's page can neither open the stream nor pass a preflight."""
    with serve(not_found_app) as server:
        evil = {"Origin": "https://evil.example"}
        status, headers, _ = http_request(server.port, "GET", "/sse", headers=evil)
        assert status == 403
        assert "access-control-allow-origin" not in headers
        status, headers, _ = http_request(server.port, "OPTIONS", "/sse", headers=evil)
        assert status == 403
        assert "access-control-allow-origin" not in headers
        same = {"Origin": f"http://127.0.0.1:{server.port}"}
        status, headers, _ = http_request(server.port, "HEAD", "/sse", headers=same)
        assert status == 200
        assert "access-control-allow-origin" not in headers


def test_timeouts_and_backlog_defaults() -> None:
    """Request headers get 30 s, idle keep-alive 180 s, and the listen backlog is 2048."""
    with serve(not_found_app) as server:
        site = server.service.site
        assert (site.header_timeout, site.timeOut) == (30.0, 180.0)
        assert server.service.listening.endpoint._backlog == DEFAULT_BACKLOG == 2048
    assert with_backlog("tcp:8005") == "tcp:8005:backlog=2048"
    assert with_backlog("tcp:8005:backlog=10") == "tcp:8005:backlog=10"
    assert with_backlog("unix:/run/app.sock") == "unix:/run/app.sock:backlog=2048"
    assert with_backlog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


def test_connection_cap_tells_new_streams_to_retry_later() -> None:
    """Past max_connections new streams are told to retry later; open ones are untouched."""
    with serve(not_found_app, max_connections=2) as server:
        with server.stream() as a, server.stream() as b:
            server.wait_clients(2)
            status, headers, body = http_request(server.port, "GET", "/sse")
            assert status == 200 and body.startswith(b": too many connections\nretry: ")
            assert headers["retry-after"] == "5"
            assert (a.status, b.status) == (200, 200)
            server.wait_clients(2)


def test_default_listen_is_port_8005_on_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without configuration the server listens on tcp:8005, every interface (documented)."""
    monkeypatch.delenv("WSGI_SSE_LISTEN", raising=False)
    try:
        assert make_service(not_found_app).listen == "tcp:8005"
    finally:
        set_broadcaster(None)
