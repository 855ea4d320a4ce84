"""Channels over real sockets: isolation, multi-channel streams, bad names."""

from __future__ import annotations

from typing import Any

import pytest
from support import StreamClient, http_request, serve

from wsgi_sse import StreamOptions


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_channels_are_isolated() -> None:
    """An event on one channel reaches only that channel's subscribers."""
    with serve(app) as server:
        bc = server.service.broadcaster
        with server.stream("/sse?channel=a") as a, server.stream("/sse?channel=b") as b:
            with server.stream("/sse") as default:
                server.wait_clients(3)
                assert bc.broadcast_and_wait("to a", channel="a") == 1
                assert bc.broadcast_and_wait("to b", channel="b") == 1
                assert bc.broadcast_and_wait("to default") == 1
                assert bc.broadcast_and_wait("to nobody", channel="c") == 0
                assert [e.data for e in a.wait_events(1)] == ["to a"]
                assert [e.data for e in b.wait_events(1)] == ["to b"]
                assert [e.data for e in default.wait_events(1)] == ["to default"]
                # Nothing else arrives: a marker on every channel comes next.
                for ch in ("a", "b", "default"):
                    bc.broadcast_and_wait("end", channel=ch)
                for client in (a, b, default):
                    client.wait_events(2)
                    assert len(client.events) == 2 and client.events[-1].data == "end"


def test_one_connection_several_channels() -> None:
    """One stream subscribed to two channels gets both, in publish order, once each."""
    with serve(app) as server:
        bc = server.service.broadcaster
        with server.stream("/sse?channel=a&channel=b&channel=a") as client:
            server.wait_clients(1)
            assert server.call(lambda: server.service.hub.channel_counts()) == {"a": 1, "b": 1}
            for i in range(10):
                bc.broadcast(f"{i}", channel="ab"[i % 2])
            bc.broadcast_and_wait("x", channel="c")
            events = client.wait_events(10)
            assert [e.data for e in events] == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("channel=" + "&channel=".join(f"c{i}" for i in range(17)), "too many channels"),
        ("channel=" + "x" * 65, "longer than 64"),
        ("channel=a%20b", "characters outside"),
        ("channel=a%0Ab", "characters outside"),
        ("channel=", "must not be empty"),
        ("channel=%FF%FE", "UTF-8"),
        ("lastEventId=1&lastEventId=2", "more than once"),
    ],
)
def test_bad_channel_requests_get_400(query: str, message: str) -> None:
    """Too many, over-long, ill-formed or non-UTF-8 channel names get a 400 that says why."""
    with serve(app) as server:
        status, headers, body = http_request(server.port, "GET", f"/sse?{query}")
        assert status == 400
        assert headers["content-type"].startswith("text/plain")
        assert message in body.decode()
        assert server.client_count() == 0
        assert server.call(lambda: server.service.sse_resource.stats.refused[400]) == 1


def test_channel_caps_are_configurable() -> None:
    """max_channels, max_channel_length and channel_pattern are honoured."""
    with serve(app, max_channels=2, max_channel_length=4, channel_pattern=r"[a-z]+") as server:
        status, _, body = http_request(server.port, "GET", "/sse?channel=a&channel=b&channel=c")
        assert status == 400 and b"at most 2" in body
        status, _, body = http_request(server.port, "GET", "/sse?channel=abcde")
        assert status == 400 and b"longer than 4" in body
        status, _, body = http_request(server.port, "GET", "/sse?channel=AB")
        assert status == 400 and b"[a-z]+" in body
        with server.stream("/sse?channel=abcd&channel=b") as client:
            assert client.status == 200


def test_channel_pattern_never_lets_control_characters_in() -> None:
    """Control characters, which broadcast() refuses, are a 400 whatever channel_pattern says."""
    with serve(app, channel_pattern=r"[^/]+", authorize=lambda request: False) as server:
        for name in ("a%1B%5B2Jb", "a%0Db", "a%00", "a%7F"):
            status, _, body = http_request(server.port, "GET", f"/sse?channel={name}")
            assert status == 400 and b"control characters" in body, (name, body)
        assert http_request(server.port, "GET", "/sse?channel=a%20b")[0] == 403


def test_bad_last_event_id_header_gets_400() -> None:
    """A Last-Event-ID with control characters or of absurd length is refused with 400."""
    with serve(app) as server:
        with StreamClient(server.port, headers={"Last-Event-ID": "x" * 200}) as client:
            assert client.status == 400
        with StreamClient(server.port, headers={"Last-Event-ID": "a\tb"}) as client:
            assert client.status == 400


def test_channel_names_are_no_longer_than_broadcast_carries() -> None:
    """
    A stream's channel is one broadcast() can send to: max_channel_length
    stops at 1,000, and a name outside ASCII at 1,000 bytes in UTF-8.
    """
    with pytest.raises(ValueError, match="max_channel_length must be at most 1000"):
        StreamOptions(max_channel_length=1001)
    with serve(app, max_channel_length=1000, channel_pattern=r"\w+") as server:
        status, _, body = http_request(server.port, "GET", "/sse?channel=" + "%C3%A9" * 501)
        assert status == 400 and b"longer than 1000 bytes" in body
        with server.stream("/sse?channel=" + "%C3%A9" * 500) as client:
            assert client.status == 200
            server.wait_clients(1)
            bc = server.service.broadcaster
            assert bc.broadcast_and_wait("to the longest", channel="\xe9" * 500) == 1
            assert [e.data for e in client.wait_events(1)] == ["to the longest"]
