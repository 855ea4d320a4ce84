"""The backplane in the stats endpoints, and --redis-url on the command line."""

from __future__ import annotations

import json
import signal
from typing import Any

from redis_support import RedisServer
from support import (
    ROOT,
    StreamClient,
    http_request,
    serve,
    start_cli,
)
from test_backplane import connected, plain_app, wait_until

from wsgi_sse.redis import RedisPublisher


def test_stats_endpoints_show_backplane_counters(redis_server: RedisServer) -> None:
    """JSON stats and Prometheus metrics include the backplane's live counters."""
    with serve(
        plain_app, redis_url=redis_server.url, stats_path="/stats", metrics_path="/metrics"
    ) as server:
        wait_until(lambda: connected(server), what="backplane connected")
        with server.stream() as client:
            server.wait_clients(1)
            RedisPublisher(redis_server.url).broadcast("from cron")
            assert client.wait_events(1)[0].data == "from cron"
            wait_until(
                lambda: server.service.backplane.stats()["delivered"] >= 1, what="delivered count"
            )
            status, _, body = http_request(server.port, "GET", "/stats")
            assert status == 200
            backplane: dict[str, Any] = json.loads(body)["backplane"]
            assert backplane["connected"] is True
            assert backplane["delivered"] >= 1
            assert backplane["stream"].endswith(":events")
            status, _, text = http_request(server.port, "GET", "/metrics")
            assert status == 200
            lines = text.decode().splitlines()
            assert "wsgi_sse_backplane_connected 1" in lines
            delivered = [ln for ln in lines if ln.startswith("wsgi_sse_backplane_delivered_total ")]
            assert delivered and int(delivered[0].split()[1]) >= 1


def test_stats_without_backplane_have_no_backplane_section() -> None:
    """A single-process server's stats carry no backplane section."""
    with serve(plain_app, stats_path="/stats", metrics_path="/metrics") as server:
        assert "backplane" not in json.loads(http_request(server.port, "GET", "/stats")[2])
        assert b"wsgi_sse_backplane" not in http_request(server.port, "GET", "/metrics")[2]


def test_python_m_wsgi_sse_redis_url(redis_server: RedisServer) -> None:
    """python -m wsgi_sse --redis-url shares broadcasts through Redis."""
    proc, port = start_cli(
        "app:app", "--redis-url", redis_server.url, cwd=ROOT / "examples" / "bottle_app"
    )
    try:
        with StreamClient(port) as client:
            client.wait_for(lambda c: c.parser.retry is not None)
            # The reader may still be connecting: publish until the event shows.
            for _ in range(100):
                RedisPublisher(redis_server.url).broadcast("via redis", channel="default")
                client.read_some(0.1)
                if client.events:
                    break
            else:
                raise AssertionError(f"no event through Redis: {client.body!r}")
            assert client.events[0].data == "via redis"
            assert "-" in client.events[0].last_event_id
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
