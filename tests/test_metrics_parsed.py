"""
The Prometheus metrics read by the Prometheus project's own parser
(C{prometheus_client}), not ours: every family, its type, and every sample
and label value as the JSON stats give them, with channel names that need
escaping in a label.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families
from support import http_request, serve

SECRET = "correct horse battery staple"

# Names a label must escape (a quote, a backslash) or carry as UTF-8.
CHANNELS = ('say "hi"', "back\\slash, not \\n, ends in \\", "café ☕", "plain")


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def families(port: int) -> dict[str, Any]:
    """The metrics at /metrics, parsed by prometheus_client: {name: family}."""
    status, headers, body = http_request(port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    parsed = list(text_string_to_metric_families(body.decode("utf-8")))
    names = [f.name for f in parsed]
    assert len(names) == len(set(names)), "a family is given twice"
    return {f.name: f for f in parsed}


def test_metrics_parse_as_prometheus_reads_them() -> None:
    """Types, label values (escaped) and values agree with the JSON stats."""
    with serve(
        app,
        stats_path="/sse-stats",
        metrics_path="/metrics",
        publish_path="/publish",
        publish_secret=SECRET,
        channel_pattern=r".+",
    ) as server:
        query = "&".join(f"channel={quote(c)}" for c in CHANNELS)
        with server.stream(f"/sse?{query}") as every, server.stream("/sse?channel=plain") as one:
            server.wait_clients(2)
            for channel in CHANNELS:
                server.service.broadcaster.broadcast_and_wait("x", channel=channel)
            every.wait_events(len(CHANNELS))
            one.wait_events(1)
            assert http_request(server.port, "GET", "/sse?channel=%01")[0] == 400
            status, _, _ = http_request(
                server.port,
                "POST",
                "/publish",
                body=b"data=hi",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": "Bearer wrong",
                },
            )
            assert status == 403
            stats = json.loads(http_request(server.port, "GET", "/sse-stats")[2])
            parsed = families(server.port)

    # (prometheus_client names a counter's family without its _total.)
    kinds = {name: family.type for name, family in parsed.items()}
    assert kinds["wsgi_sse_clients"] == "gauge"
    assert kinds["wsgi_sse_events_published"] == "counter"
    assert kinds["wsgi_sse_refused"] == "counter"

    def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in parsed[name].samples}

    assert samples("wsgi_sse_channel_clients") == {
        (("channel", name),): float(n) for name, n in stats["channels"].items()
    }
    assert stats["channels"] == {c: (2 if c == "plain" else 1) for c in CHANNELS}
    assert samples("wsgi_sse_clients") == {(): 2.0}
    assert samples("wsgi_sse_events_published") == {(): float(stats["events_published"])}
    assert samples("wsgi_sse_deliveries") == {(): float(stats["deliveries"])}
    assert samples("wsgi_sse_bytes_sent") == {(): float(stats["bytes_sent"])}
    assert samples("wsgi_sse_refused") == {(("status", "400"),): 1.0}
    assert samples("wsgi_sse_publish_requests") == {(("status", "403"),): 1.0}
    for family in parsed.values():
        assert family.name.startswith("wsgi_sse_") and family.documentation
