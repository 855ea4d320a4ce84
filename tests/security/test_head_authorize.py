"""HEAD on the stream runs the same authorization as GET."""

from __future__ import annotations

from typing import Any

import pytest
from support import http_request, serve

from wsgi_sse import StreamRequest


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer hello."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def only_own_channel(request: StreamRequest) -> set[str]:
    """A user may join the public channel and their own (the session cookie names them)."""
    user = request.cookies.get("session")
    return {"public"} | ({f"user-{user}"} if user else set())


def test_head_is_refused_where_get_is() -> None:
    """A HEAD the authorize hook refuses gets the same 403 as GET; an allowed one gets 200."""
    with serve(app, authorize=only_own_channel) as server:
        for path, cookie, status in [
            ("/sse?channel=user-42", None, 403),
            ("/sse?channel=user-42", "session=7", 403),
            ("/sse?channel=public&channel=user-42", "session=7", 403),
            ("/sse?channel=user-42", "session=42", 200),
            ("/sse?channel=public", None, 200),
        ]:
            headers = {"Cookie": cookie} if cookie else {}
            with server.stream(path, headers=headers) as stream:
                get_status = stream.status
            head_status, head_headers, head_body = http_request(
                server.port, "HEAD", path, headers=headers
            )
            assert (get_status, head_status) == (status, status), (path, cookie)
            assert head_body == b""
            if status == 200:
                assert head_headers["content-type"] == "text/event-stream; charset=utf-8"
        server.wait_clients(0)
        # HEAD never subscribes anything.
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0


def test_head_with_a_failing_hook_is_refused() -> None:
    """A hook that raises refuses HEAD as it refuses GET: "retry later" (Retry-After), no stream."""

    def broken(request: StreamRequest) -> bool:
        raise RuntimeError("database down")

    with serve(app, authorize=broken) as server:
        get = http_request(server.port, "GET", "/sse?channel=public")
        head = http_request(server.port, "HEAD", "/sse?channel=public")
        assert get[2].startswith(b": stream hook failed\nretry: ")
        assert (head[0], head[1]["retry-after"], head[2]) == (get[0], get[1]["retry-after"], b"")
        refused = server.call(server.service.sse_resource.snapshot)["refused"]
        assert refused == {"500": 2}


@pytest.mark.parametrize("hook", [None, only_own_channel])
def test_head_counts_against_the_limits_like_get(hook: Any) -> None:
    """With the server full, HEAD gets the answer GET gets, with or without a hook."""
    with serve(app, authorize=hook, max_connections=1) as server:
        with server.stream("/sse?channel=public"):
            server.wait_clients(1)
            with server.stream("/sse?channel=public") as refused:
                get_status = refused.status
            head_status, head_headers, _ = http_request(server.port, "HEAD", "/sse?channel=public")
            assert head_status == get_status
            assert head_headers["retry-after"] == "5"  # told to come back later
        server.wait_clients(0)
        assert http_request(server.port, "HEAD", "/sse?channel=public")[0] == 200
        assert server.call(lambda: server.service.sse_resource._pending) == 0
