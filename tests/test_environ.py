"""The WSGI environ built in one pass is twisted.web's, completed as complete_environ does."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.address import IPv6Address
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel
from twisted.web.wsgi import _WSGIResponse

from wsgi_sse._wsgi import build_environ, complete_environ


def _request(
    uri: bytes,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    *,
    method: bytes = b"GET",
    body: bytes = b"",
    prepath: tuple[bytes, ...] = (),
    peer: Any = None,
) -> server.Request:
    channel = DummyChannel()
    if peer is not None:
        channel.transport.getPeer = lambda: peer
    request = server.Request(channel)
    request.method, request.uri, request.clientproto = method, uri, b"HTTP/1.1"
    path = uri.split(b"?", 1)[0]
    segments = path[1:].split(b"/")
    request.prepath = list(prepath)
    request.postpath = segments[len(prepath) :]
    for name, value in headers:
        request.requestHeaders.addRawHeader(name, value)
    request.content = io.BytesIO(body)
    return request


CASES = {
    "get with query": _request(b"/a/b?x=1&y=%20", ((b"host", b"example.test:8080"),)),
    "root": _request(b"/", ((b"host", b"[::1]:80"),), peer=IPv6Address("TCP", "::1", 9)),
    "script name": _request(b"/app/page?q", prepath=(b"app",)),
    "form post": _request(
        b"/knock",
        ((b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", b"6")),
        method=b"POST",
        body=b"name=x",
    ),
    "chunked": _request(
        b"/upload",
        ((b"transfer-encoding", b"chunked"), (b"content-type", b"text/plain")),
        method=b"POST",
        body=b"hello",
    ),
    "empty chunked": _request(b"/u", ((b"transfer-encoding", b"chunked"),), method=b"POST"),
    "no length, a body": _request(b"/h2", method=b"POST", body=b"abc"),
    "repeated": _request(
        b"/r",
        (
            (b"accept", b"text/html"),
            (b"accept", b"*/*"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-odd", b"caf\xe9\nline"),
            (b"content-type", b""),
        ),
    ),
    "underscores": _request(
        b"/u",
        (
            (b"x-auth-user", b"alice"),
            (b"x_auth_user", b"admin"),
            (b"x_forwarded_for", b"10.0.0.1"),
            (b"x-tag", b"a"),
            (b"x_tag", b"b"),
            (b"x-tag", b"c"),
            (b"transfer_encoding", b"chunked"),
            (b"content_length", b"5"),
        ),
        method=b"POST",
        body=b"hello",
    ),
    "underscore first": _request(
        b"/u", ((b"x_auth_user", b"admin"), (b"x-auth-user", b"alice"), (b"cookie_", b"a=1"))
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_environ_is_twisted_environ_completed(name: str) -> None:
    """Every key and value equals twisted.web's environ after complete_environ."""
    request = CASES[name]
    reference = _WSGIResponse(None, None, None, request).environ
    complete_environ(reference, request)
    request.content.seek(0)
    environ = build_environ(request)
    for streams in ("wsgi.errors", "wsgi.input"):
        assert type(environ.pop(streams)) is type(reference.pop(streams))
    assert environ == reference


@pytest.mark.parametrize("name", ["underscores", "underscore first"])
def test_header_names_with_underscores_are_left_out(name: str) -> None:
    """C{X_Auth_User} neither replaces C{X-Auth-User} nor stands in for a header of its own."""
    request = CASES[name]
    twisted_environ = _WSGIResponse(None, None, None, request).environ
    complete_environ(twisted_environ, request)
    request.content.seek(0)
    for environ in (build_environ(request), twisted_environ):
        assert environ["HTTP_X_AUTH_USER"] == "alice"
        assert "HTTP_X_FORWARDED_FOR" not in environ
        assert "HTTP_COOKIE_" not in environ
        if name == "underscores":
            assert environ["HTTP_X_TAG"] == "a, c"
            assert "HTTP_TRANSFER_ENCODING" not in environ
            assert "HTTP_CONTENT_LENGTH" not in environ
            assert environ["CONTENT_LENGTH"] == "5"
