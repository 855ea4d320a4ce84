"""Routing: the stream at its path, every other path to the WSGI app intact."""

from __future__ import annotations

import json
from typing import Any
from wsgiref.validate import validator

import pytest
from support import http_request, serve
from twisted.web.resource import Resource

from wsgi_sse import WSGIRoot


def _environ_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD")
    body = json.dumps({k: environ.get(k) for k in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


environ_echo = validator(_environ_echo)


@pytest.mark.parametrize(
    ("path", "script_name", "path_info", "query"),
    [
        ("/", "", "/", ""),
        ("/a/b?x=1&y=2", "", "/a/b", "x=1&y=2"),
        ("/a/b/", "", "/a/b/", ""),
        ("/ssefoo", "", "/ssefoo", ""),
        ("/sse-old/x", "", "/sse-old/x", ""),
        ("/sse/", "", "/sse/", ""),
        ("/sse/deeper?q=1", "", "/sse/deeper", "q=1"),
        ("/events", "", "/events", ""),
        ("/caf%C3%A9", "", "/caf\u00c3\u00a9", ""),
    ],
)
def test_wsgi_environ(path: str, script_name: str, path_info: str, query: str) -> None:
    """Paths other than the stream reach the app with correct SCRIPT_NAME/PATH_INFO/QUERY."""
    with serve(environ_echo) as server:
        status, _, body = http_request(server.port, "GET", path)
        assert status == 200
        assert json.loads(body) == {
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_METHOD": "GET",
        }


def test_multi_segment_stream_path() -> None:
    """A stream at /events/live is served there; its neighbours go to the app."""
    with serve(environ_echo, sse_path="/events/live") as server:
        with server.stream("/events/live") as client:
            assert client.headers["content-type"].startswith("text/event-stream")
        for path in ("/events", "/events/livefoo", "/events/live/x", "/sse"):
            status, _headers, body = http_request(server.port, "GET", path)
            assert status == 200, path
            assert json.loads(body)["PATH_INFO"] == path


def test_post_body_reaches_app() -> None:
    """A POST to a path sharing the stream's prefix reaches the WSGI app."""
    with serve(environ_echo) as server:
        status, _, body = http_request(server.port, "POST", "/sse2", body=b"x=1")
        assert status == 200
        assert json.loads(body)["REQUEST_METHOD"] == "POST"


def test_extra_resources_mounted_with_subtree() -> None:
    """Extra Twisted resources serve their subtree; the rest goes to the app."""
    static = Resource()
    leaf = Resource()
    leaf.isLeaf = True
    leaf.render_GET = lambda request: b"static:" + b"/".join(request.postpath)  # type: ignore[attr-defined]
    static.putChild(b"files", leaf)
    with serve(environ_echo, resources={"/assets": static}) as server:
        status, _, body = http_request(server.port, "GET", "/assets/files/a/b.css")
        assert (status, body) == (200, b"static:a/b.css")
        status, _, body = http_request(server.port, "GET", "/assetsx")
        assert json.loads(body)["PATH_INFO"] == "/assetsx"


@pytest.mark.parametrize("bad", ["", "sse", "/", "/a//b", "/a/", 7])
def test_bad_mount_paths(bad: object) -> None:
    """Malformed mount paths raise ValueError."""
    root = WSGIRoot(Resource())
    with pytest.raises(ValueError):
        root.mount(bad, Resource())  # type: ignore[arg-type]


def test_duplicate_mount_refused() -> None:
    """Mounting two resources at one path raises ValueError."""
    root = WSGIRoot(Resource())
    root.mount("/sse", Resource())
    with pytest.raises(ValueError, match="already mounted"):
        root.mount("/sse", Resource())
