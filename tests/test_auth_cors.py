"""Authorization hook and CORS over real sockets."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support import http_request, serve

from wsgi_sse import StreamRequest


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def per_user(request: StreamRequest) -> set[str]:
    """Allow the public channel and the channel of the user named by the session cookie."""
    user = request.cookies.get("session")
    return {"public"} | ({f"user-{user}"} if user else set())


def test_authorize_allows_own_channel_from_cookie() -> None:
    """A user whose session cookie names them may join their own channel, and receives on it."""
    with serve(app, authorize=per_user) as server:
        bc = server.service.broadcaster
        headers = {"Cookie": "session=42; theme=dark"}
        with server.stream("/sse?channel=user-42&channel=public", headers=headers) as client:
            assert client.status == 200
            server.wait_clients(1)
            bc.broadcast_and_wait("for 42", channel="user-42")
            bc.broadcast_and_wait("for all", channel="public")
            assert [e.data for e in client.wait_events(2)] == ["for 42", "for all"]


def test_authorize_partial_set_is_403_and_nothing_subscribed() -> None:
    """Asking for one channel outside the allowed set refuses the whole stream with 403."""
    with serve(app, authorize=per_user) as server:
        status, _, body = http_request(
            server.port,
            "GET",
            "/sse?channel=public&channel=user-7",
            headers={"Cookie": "session=42"},
        )
        assert status == 403
        assert b"user-7" in body and b"public" not in body
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0
        assert server.client_count() == 0
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"403": 1} and snapshot["pending"] == 0


def test_authorize_false_is_403() -> None:
    """An authorize hook returning False refuses with 403 and subscribes nothing."""
    with serve(app, authorize=lambda request: False) as server:
        status, _, body = http_request(server.port, "GET", "/sse?channel=a")
        assert status == 403 and b"not allowed to join: a" in body
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0


def test_authorize_receives_request_details_in_pool_thread() -> None:
    """The hook gets cookies, query, headers, channels and address, in a WSGI pool thread."""
    seen: list[tuple[str, StreamRequest]] = []

    def authorize(request: StreamRequest) -> bool:
        seen.append((threading.current_thread().name, request))
        return request.query.get("token") == ("s3cret",)

    with serve(app, authorize=authorize) as server:
        headers = {"Cookie": "sessionid=abc", "Last-Event-ID": "x-1", "X-Extra": "yes"}
        with server.stream("/sse?channel=news&token=s3cret", headers=headers) as client:
            assert client.status == 200
        status, _, _ = http_request(server.port, "GET", "/sse?channel=news&token=bad")
        assert status == 403
    thread_name, request = seen[0]
    assert "wsgi" in thread_name
    assert request.cookies == {"sessionid": "abc"}
    assert request.query == {"channel": ("news",), "token": ("s3cret",)}
    assert request.headers["x-extra"] == "yes"
    assert request.channels == ("news",)
    assert request.last_event_id == "x-1"
    assert request.client_address == "127.0.0.1"
    assert request.path == "/sse"


def test_authorize_returning_a_string_is_an_error() -> None:
    """A hook returning a str (a likely mistake) fails the hook rather than granting per letter."""
    with serve(app, authorize=lambda request: "a") as server:
        status, _, body = http_request(server.port, "GET", "/sse?channel=a")
        assert status == 200 and body.startswith(b": stream hook failed\n")
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0


ORIGIN = "https://app.example.com"


def test_allowed_origin_gets_grant_with_credentials() -> None:
    """An allowed origin gets Access-Control-Allow-Origin = itself, Vary and credentials."""
    with serve(app, cors_origins=[ORIGIN], cors_credentials=True) as server:
        with server.stream(headers={"Origin": ORIGIN}) as client:
            assert client.status == 200
            assert client.headers["access-control-allow-origin"] == ORIGIN
            assert client.headers["access-control-allow-credentials"] == "true"
            assert "Origin" in client.headers["vary"]


@pytest.mark.parametrize("hook", [False, True])
def test_head_from_an_allowed_origin_gets_the_grant_as_get_does(hook: bool) -> None:
    """HEAD answers an allowed origin with the CORS headers of GET, with or without a hook."""
    authorize = (lambda request: True) if hook else None
    with serve(app, cors_origins=[ORIGIN], cors_credentials=True, authorize=authorize) as server:
        with server.stream(headers={"Origin": ORIGIN}) as client:
            got = client.headers
        status, headers, body = http_request(
            server.port, "HEAD", "/sse", headers={"Origin": ORIGIN}
        )
        assert status == 200 and body == b""
        assert headers["access-control-allow-origin"] == ORIGIN
        assert headers["access-control-allow-credentials"] == "true"
        assert "Origin" in headers["vary"]
        for name in ("access-control-allow-origin", "access-control-allow-credentials", "vary"):
            assert headers[name] == got[name]


def test_allowed_origin_without_credentials() -> None:
    """Without cors_credentials no Allow-Credentials header is sent."""
    with serve(app, cors_origins=[ORIGIN]) as server:
        with server.stream(headers={"Origin": ORIGIN}) as client:
            assert client.headers["access-control-allow-origin"] == ORIGIN
            assert "access-control-allow-credentials" not in client.headers


def test_preflight_for_allowed_origin() -> None:
    """A preflight answers the methods and the Last-Event-ID and Cache-Control headers."""
    with serve(app, cors_origins=[ORIGIN], cors_credentials=True) as server:
        status, headers, _ = http_request(
            server.port,
            "OPTIONS",
            "/sse",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id, cache-control",
            },
        )
        assert status == 204
        assert headers["access-control-allow-origin"] == ORIGIN
        assert "GET" in headers["access-control-allow-methods"]
        allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
        assert {"last-event-id", "cache-control"} <= allowed
        assert headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_foreign_origin_gets_no_grant(method: str) -> None:
    """An origin outside the list gets 403 and no CORS header, for GET and preflight."""
    with serve(app, cors_origins=[ORIGIN]) as server:
        status, headers, _ = http_request(
            server.port,
            method,
            "/sse",
            headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "GET"},
        )
        assert status == 403
        assert not any(h.startswith("access-control-allow") for h in headers)
        assert server.client_count() == 0


def test_default_is_same_origin_only() -> None:
    """Without configuration, Origin equal to Host works and any other origin is refused."""
    with serve(app) as server:
        own = f"http://127.0.0.1:{server.port}"
        with server.stream(headers={"Origin": own}) as client:
            assert client.status == 200
            assert "access-control-allow-origin" not in client.headers
        status, headers, _ = http_request(
            server.port, "GET", "/sse", headers={"Origin": "http://other.example"}
        )
        assert status == 403
        assert "access-control-allow-origin" not in headers


def test_wildcard_origin() -> None:
    """cors_origins=['*'] grants any origin with '*'."""
    with serve(app, cors_origins=["*"]) as server:
        with server.stream(headers={"Origin": "http://anything.example"}) as client:
            assert client.status == 200
            assert client.headers["access-control-allow-origin"] == "*"


def test_malformed_cors_origin_is_refused_at_configuration() -> None:
    """An allow-list entry without a scheme raises ValueError at once."""
    from wsgi_sse import StreamOptions

    with pytest.raises(ValueError, match="scheme and host"):
        StreamOptions(cors_origins=["app.example.com"])
    with pytest.raises(ValueError, match="credentials"):
        StreamOptions(cors_origins=["*"], cors_credentials=True)
