"""Hostile input: each answered with a clear 4xx, and nothing else disturbed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support import RunningServer, StreamClient, http_request, serve

from wsgi_sse import broadcast, get_broadcaster


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer every request with hello."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """One server for the module; every test checks it is left undisturbed."""
    with serve(hello_app) as running:
        yield running


@pytest.fixture
def bystander(server: RunningServer) -> Iterator[StreamClient]:
    """A connected stream that must keep working whatever the hostile request did."""
    with server.stream() as client:
        server.wait_clients(1)
        yield client
        assert server.client_count() == 1
        broadcast("after")
        assert client.wait_events(1)[-1].data == "after"
        assert server.call(lambda: server.service.hub.subscriber_count()) == 1


STREAM_REQUESTS = [
    ("Last-Event-ID too long", "/sse", {"Last-Event-ID": "1" * 129}, 400, "longer than"),
    ("Last-Event-ID huge", "/sse", {"Last-Event-ID": "1" * 20_000}, 431, "too long"),
    ("Last-Event-ID not ASCII", "/sse", {"Last-Event-ID": "\xe9t\xe9"}, 400, "ASCII"),
    ("Last-Event-ID control", "/sse", {"Last-Event-ID": "1\x012"}, 400, "control"),
    ("lastEventId not UTF-8", "/sse?lastEventId=%ff", {}, 400, "ASCII"),
    ("lastEventId twice", "/sse?lastEventId=1&lastEventId=2", {}, 400, "more than once"),
    ("17 channels", "/sse?" + "&".join(f"channel=c{i}" for i in range(17)), {}, 400, "too many"),
    ("1,500 channels", "/sse?" + "channel=a&" * 1500, {}, 400, "too many"),
    ("3,000 channels", "/sse?" + "channel=a&" * 3000, {}, 414, "too long"),
    ("channel name too long", "/sse?channel=" + "a" * 65, {}, 400, "longer than 64"),
    ("channel name huge", "/sse?channel=" + "a" * 10_000, {}, 400, "longer than 64"),
    ("channel not UTF-8", "/sse?channel=%ff%fe", {}, 400, "UTF-8"),
    ("channel with CRLF", "/sse?channel=a%0d%0aX-Injected:%201", {}, 400, "characters"),
    ("channel with NUL", "/sse?channel=a%00b", {}, 400, "characters"),
    ("channel empty", "/sse?channel=", {}, 400, "empty"),
    ("foreign origin", "/sse", {"Origin": "https://evil.example"}, 403, "origin"),
]


@pytest.mark.parametrize(
    ("path", "headers", "status", "message"),
    [case[1:] for case in STREAM_REQUESTS],
    ids=[case[0] for case in STREAM_REQUESTS],
)
def test_bad_stream_request_is_refused_clearly(
    server: RunningServer,
    bystander: StreamClient,
    path: str,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    """A malformed or abusive stream request gets its 4xx with a reason, and no stream."""
    code, response_headers, body = http_request(server.port, "GET", path, headers=headers)
    assert code == status
    assert message in body.decode("utf-8")
    assert not response_headers.get("content-type", "").startswith("text/event-stream")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND"])
def test_other_methods_on_the_stream_get_405(
    server: RunningServer, bystander: StreamClient, method: str
) -> None:
    """Every method but GET, HEAD and OPTIONS is refused with 405 and an Allow header."""
    # (With a body, the request is refused with 413 before its method matters.)
    code, headers, body = http_request(server.port, method, "/sse")
    assert code == 405
    assert headers["allow"] == "GET, HEAD, OPTIONS"
    assert b"only answers GET" in body


def test_unknown_last_event_id_gets_a_reset_not_an_error(
    server: RunningServer, bystander: StreamClient
) -> None:
    """A well-formed but unknown id is not hostile: the stream opens with one reset event."""
    with server.stream(headers={"Last-Event-ID": "nope-42"}) as client:
        assert client.status == 200
        (event,) = client.wait_events(1)
        assert (event.type, event.last_event_id) == ("reset", "")
    server.wait_clients(1)


INJECTIONS = [
    ({"event": "a\nid: 1"}, ValueError),
    ({"event": "a\r"}, ValueError),
    ({"event": "a\r\ndata: x"}, ValueError),
    ({"event": "a\x00"}, ValueError),
    ({"event": ""}, ValueError),
    ({"event": b"bytes"}, TypeError),
    ({"event": 7}, TypeError),
    ({"channel": "a\nb"}, ValueError),
    ({"channel": "a\r"}, ValueError),
    ({"channel": "a\x00"}, ValueError),
    ({"channel": ""}, ValueError),
    ({"channel": b"a"}, TypeError),
    ({"retry": "10\nid: 1"}, TypeError),
    ({"retry": "10"}, TypeError),
    ({"retry": 1.5}, TypeError),
    ({"retry": True}, TypeError),
    ({"retry": -1}, ValueError),
    ({"data": b"data: x\n\n"}, TypeError),
    ({"data": "\ud800"}, ValueError),
    ({"data": float("nan")}, ValueError),
    ({"data": {"x": object()}}, TypeError),
]


@pytest.mark.parametrize(("kwargs", "error"), INJECTIONS, ids=[repr(k) for k, _ in INJECTIONS])
def test_broadcast_refuses_injection(
    server: RunningServer, bystander: StreamClient, kwargs: dict[str, Any], error: type
) -> None:
    """Every broadcast() argument that could forge fields raises, and nothing is sent."""
    arguments: dict[str, Any] = {"data": "x"} | kwargs
    data = arguments.pop("data")
    with pytest.raises(error):
        broadcast(data, **arguments)
    with pytest.raises(error):
        get_broadcaster().broadcast_and_wait(data, **arguments)
    # The bystander's next event is the fixture's "after": nothing slipped in.
    bystander.read_some(0.2)
    assert bystander.events == []
    assert "id" not in bystander.parser.fields_seen
