"""The stats endpoints and the HTTP publish endpoint over real sockets."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest
from support import http_request, serve

from wsgi_sse import make_service

SECRET = "correct horse battery staple"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that echoes its path, to show which requests reach it."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("wsgi " + environ["PATH_INFO"]).encode()]


def prometheus(text: str) -> dict[str, float]:
    """Parse Prometheus text exposition into {'name{labels}': value}, checking HELP/TYPE lines."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line.startswith("#") or not line:
            continue
        else:
            m = re.fullmatch(r'([a-z_]+)(\{[a-z]+="[^"]*"\})? (\d+)', line)
            assert m, line
            assert m.group(1) in typed, line
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_stats_and_metrics_are_off_by_default() -> None:
    """Without stats_path/metrics_path/publish_path those paths go to the WSGI app."""
    with serve(app) as server:
        for path in ("/sse-stats", "/metrics", "/publish"):
            status, _, body = http_request(server.port, "GET", path)
            assert (status, body) == (200, f"wsgi {path}".encode())


def test_stats_count_what_happened() -> None:
    """JSON and Prometheus counters match connects, events, replays, resets, refusals."""
    with serve(app, stats_path="/sse-stats", metrics_path="/metrics", max_channels=2) as server:
        bc = server.service.broadcaster
        with server.stream("/sse?channel=a&channel=b") as ab, server.stream("/sse?channel=a") as a:
            server.wait_clients(2)
            for i in range(3):
                bc.broadcast_and_wait(i, channel="a")
            bc.broadcast_and_wait("b", channel="b")
            ab.wait_events(4)
            a.wait_events(3)
            first_id = a.events[0].last_event_id
            with server.stream("/sse?channel=a", headers={"Last-Event-ID": first_id}) as r:
                r.wait_events(2)
            with server.stream(headers={"Last-Event-ID": "nope-1"}) as reset:
                reset.wait_events(1)
            assert http_request(server.port, "GET", "/sse?channel=a&channel=b&channel=c")[0] == 400
            server.wait_clients(2)

            status, headers, body = http_request(server.port, "GET", "/sse-stats")
            assert status == 200 and headers["content-type"] == "application/json"
            stats = json.loads(body)
            assert stats["clients"] == 2
            assert stats["channels"] == {"a": 2, "b": 1} and stats["channels_total"] == 2
            assert stats["events_published"] == 4
            assert stats["deliveries"] == 3 * 2 + 1
            assert stats["connects"] == 4 and stats["disconnects"] == 2
            assert stats["replays"] == 1 and stats["resets"] == 1
            assert stats["refused"] == {"400": 1}
            assert stats["dropped_slow"] == 0
            # Every byte the two live clients read was counted (plus the two
            # closed streams' bytes, which were all written too).
            assert stats["bytes_sent"] >= len(ab.body) + len(a.body)

            status, headers, body = http_request(server.port, "GET", "/metrics")
            assert status == 200
            assert headers["content-type"].startswith("text/plain; version=0.0.4")
            metrics = prometheus(body.decode())
            assert metrics["wsgi_sse_clients"] == 2
            assert metrics['wsgi_sse_channel_clients{channel="a"}'] == 2
            assert metrics['wsgi_sse_channel_clients{channel="b"}'] == 1
            assert metrics["wsgi_sse_channels"] == 2
            assert metrics["wsgi_sse_events_published_total"] == 4
            assert metrics["wsgi_sse_connects_total"] == 4
            assert metrics["wsgi_sse_disconnects_total"] == 2
            assert metrics["wsgi_sse_replays_total"] == 1
            assert metrics["wsgi_sse_resets_total"] == 1
            assert metrics['wsgi_sse_refused_total{status="400"}'] == 1
            assert metrics['wsgi_sse_dropped_slow_total{reason="buffer"}'] == 0
            assert metrics["wsgi_sse_bytes_sent_total"] == stats["bytes_sent"]


def test_stats_list_the_busiest_channels_and_count_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    Past STATS_CHANNELS channels, the stats and metrics list the channels
    with the most streams (the first by name among equals) and count all.
    """
    import wsgi_sse._streams

    monkeypatch.setattr(wsgi_sse._streams, "STATS_CHANNELS", 2)
    with serve(app, stats_path="/sse-stats", metrics_path="/metrics") as server:
        paths = ["/sse?channel=d&channel=b", "/sse?channel=c&channel=a", "/sse?channel=c"]
        paths += ["/sse?channel=e"]
        with server.stream(paths[0]), server.stream(paths[1]), server.stream(paths[2]):
            with server.stream(paths[3]):
                server.wait_clients(4)
                stats = json.loads(http_request(server.port, "GET", "/sse-stats")[2])
                # c has 2; a, b, d and e 1 each: a comes first by name.
                assert (stats["channels"], stats["channels_total"]) == ({"a": 1, "c": 2}, 5)
                metrics = prometheus(http_request(server.port, "GET", "/metrics")[2].decode())
                listed = {k for k in metrics if k.startswith("wsgi_sse_channel_clients")}
                assert listed == {
                    'wsgi_sse_channel_clients{channel="a"}',
                    'wsgi_sse_channel_clients{channel="c"}',
                }
                assert metrics["wsgi_sse_channels"] == 5


def test_bytes_sent_is_exact_for_a_finished_stream() -> None:
    """bytes_sent equals the body bytes a client read, once its stream has ended."""
    with serve(app, stats_path="/stats", heartbeat=0) as server:
        client = server.stream()
        server.wait_clients(1)
        server.service.broadcaster.broadcast_and_wait({"k": "v"}, event="e")
        client.wait_events(1)
        server.call(server.service.sse_resource.close)
        client.read_to_end()
        client.close()
        stats = json.loads(http_request(server.port, "GET", "/stats")[2])
        assert stats["bytes_sent"] == len(client.body)


def publish(port: int, body: bytes, ctype: str, secret: str | None = SECRET) -> Any:
    """POST to /publish; return (status, headers, parsed JSON body)."""
    headers = {"Content-Type": ctype}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    status, answer_headers, answer = http_request(
        port, "POST", "/publish", body=body, headers=headers
    )
    return status, answer_headers, json.loads(answer)


def test_publish_json_and_form_reach_subscribers() -> None:
    """A JSON or form POST with the right secret is published, answering delivered count and id."""
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        with server.stream("/sse?channel=prices") as client:
            server.wait_clients(1)
            status, _, answer = publish(
                server.port,
                json.dumps({"channel": "prices", "event": "tick", "data": {"eur": 1.5}}).encode(),
                "application/json",
            )
            assert status == 200 and answer["delivered"] == 1
            # An empty event field (a form's optional input left blank): a message.
            status, _, answer2 = publish(
                server.port,
                b"channel=prices&event=&data=line+1%0Aline+2",
                "application/x-www-form-urlencoded",
            )
            assert status == 200 and answer2["delivered"] == 1
            events = client.wait_events(2)
            assert (events[0].type, events[0].data) == ("tick", '{"eur":1.5}')
            assert events[0].last_event_id == answer["id"]
            assert (events[1].type, events[1].data) == ("message", "line 1\nline 2")
            assert events[1].last_event_id == answer2["id"]


def test_publish_to_default_channel_with_nobody_listening() -> None:
    """Without a channel the event goes to the default channel; no subscriber is 0 delivered."""
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        status, _, answer = publish(server.port, b'{"data": [1, 2]}', "application/json")
        assert status == 200 and answer["delivered"] == 0
        assert server.call(lambda: server.service.hub.stats.events_published) == 1


@pytest.mark.parametrize(
    ("secret", "status"), [(None, 401), ("wrong secret, same-ish length!", 403), ("", 401)]
)
def test_publish_refuses_missing_or_wrong_secret(secret: str | None, status: int) -> None:
    """No credentials is 401 with a challenge, a wrong secret is 403; nothing is published."""
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        got, headers, answer = publish(server.port, b'{"data": "x"}', "application/json", secret)
        assert got == status
        assert "error" in answer
        if status == 401:
            assert headers["www-authenticate"].startswith("Bearer")
        assert server.call(lambda: server.service.hub.stats.events_published) == 0


@pytest.mark.parametrize(
    ("body", "ctype", "status", "message"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "must be an object"),
        (b'{"channel": "a"}', "application/json", 400, "missing field: data"),
        (b'{"data": 1, "chanel": "a"}', "application/json", 400, "unknown field(s): 'chanel'"),
        (b'{"data": 1, "channel": "a b"}', "application/json", 400, "characters outside"),
        (b'{"data": 1, "channel": 7}', "application/json", 400, "channel must be a string"),
        (b'{"data": 1, "event": "a\\nb"}', "application/json", 400, "must not contain CR"),
        (b'{"data": NaN}', "application/json", 400, "NaN is not a JSON value"),
        (b"data=1&data=2", "application/x-www-form-urlencoded", 400, "more than once"),
        (b"data=%FF", "application/x-www-form-urlencoded", 400, "not valid form data"),
        (b"data: x", "text/plain", 415, "application/json"),
        (b'{"data": "' + b"x" * 70_000 + b'"}', "application/json", 413, "larger than"),
    ],
)
def test_publish_bad_input(body: bytes, ctype: str, status: int, message: str) -> None:
    """Malformed, incomplete, oversized or mistyped bodies get a 4xx that says why."""
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        got, _, answer = publish(server.port, body, ctype)
        assert got == status
        assert message in answer["error"]
        assert server.call(lambda: server.service.hub.stats.events_published) == 0


def test_publish_only_answers_post() -> None:
    """GET on the publish endpoint is 405 with Allow: POST."""
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        status, headers, _ = http_request(server.port, "GET", "/publish")
        assert status == 405 and headers["allow"] == "POST"


def test_publish_requests_are_counted_in_stats() -> None:
    """The stats show the publish endpoint's requests by status."""
    with serve(
        app, publish_path="/publish", publish_secret=SECRET, metrics_path="/metrics"
    ) as server:
        publish(server.port, b'{"data": 1}', "application/json")
        publish(server.port, b'{"data": 1}', "application/json", secret="x" * 20)
        metrics = prometheus(http_request(server.port, "GET", "/metrics")[2].decode())
        assert metrics['wsgi_sse_publish_requests_total{status="200"}'] == 1
        assert metrics['wsgi_sse_publish_requests_total{status="403"}'] == 1


def test_publish_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enabling the endpoint without a long enough secret raises ValueError; the env var counts."""
    monkeypatch.delenv("WSGI_SSE_PUBLISH_SECRET", raising=False)
    with pytest.raises(ValueError, match="secret"):
        make_service(app, listen="tcp:0", publish_path="/publish")
    with pytest.raises(ValueError, match="at least 16"):
        make_service(app, listen="tcp:0", publish_path="/publish", publish_secret="short")
    with pytest.raises(ValueError, match="without publish_path"):
        make_service(app, listen="tcp:0", publish_secret=SECRET)
    # One no Authorization header can carry (its value is trimmed).
    for unsendable in (SECRET + "\n", " " + SECRET, SECRET.replace(" ", "\t")):
        with pytest.raises(ValueError, match="whitespace"):
            make_service(app, listen="tcp:0", publish_path="/publish", publish_secret=unsendable)
    monkeypatch.setenv("WSGI_SSE_PUBLISH_SECRET", SECRET)
    with serve(app, publish_path="/publish") as server:
        assert publish(server.port, b'{"data": 1}', "application/json")[0] == 200


def test_publish_over_keep_alive_connection() -> None:
    """Two publishes on one HTTP/1.1 connection both get complete answers."""
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        body = b'{"data": "x"}'
        request = (
            f"POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(request + request)
            raw = b""
            while raw.count(b'"delivered"') < 2:
                chunk = sock.recv(65536)
                assert chunk
                raw += chunk
        assert raw.count(b"HTTP/1.1 200") == 2


def test_stream_lifecycle_is_logged_with_fields() -> None:
    """With log_streams, connects, resets, refusals and disconnects are logged with named fields."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with serve(app, log_streams=True) as server:
            with server.stream("/sse?channel=a", headers={"Last-Event-ID": "x-1"}) as client:
                client.wait_events(1)
                server.wait_clients(1)
            server.wait_clients(0)
            assert http_request(server.port, "GET", "/sse?channel=%20")[0] == 400
    finally:
        globalLogPublisher.removeObserver(events.append)
    by_format = {" ".join(e["log_format"].split(" ")[:2]): e for e in events if "log_format" in e}
    opened = by_format["stream opened"]
    assert opened["peer"] == "127.0.0.1" and opened["channels"] == ["a"]
    assert opened["last_event_id"] == "x-1" and opened["reset"] is True
    reset = by_format["stream reset"]
    assert reset["last_event_id"] == "x-1" and reset["channels"] == ["a"]
    closed = by_format["stream closed"]
    assert closed["peer"] == "127.0.0.1" and closed["reason"]
    refused = by_format["refused stream"]
    assert refused["code"] == 400 and "characters outside" in refused["why"]


def test_streams_are_summarised_by_default() -> None:
    """Without log_streams, streams are counted into one summary line, not logged one by one."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with serve(app) as server:
            for _ in range(3):
                with server.stream("/sse"):
                    server.wait_clients(1)
                server.wait_clients(0)
            with server.stream("/sse"):
                server.wait_clients(1)
        # Shutting down logged the pending summary at once.
    finally:
        globalLogPublisher.removeObserver(events.append)
    formats = [e.get("log_format", "") for e in events]
    assert not [f for f in formats if f.startswith(("stream opened", "stream closed"))]
    summaries = [e for e in events if e.get("log_format", "").startswith("streams: ")]
    assert sum(e["opened"] for e in summaries) == 4
    assert sum(e["closed"] for e in summaries) == 4
    assert summaries[-1]["open"] == 0
