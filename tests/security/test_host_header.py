"""
What a request must say about its host and its version before the app or a
stream sees it (RFC 9112 3.2 and 3.2.2, RFC 9110 5.3 and 6.2): an HTTP/1.1
request without C{Host}, any request with two C{Host} lines, a C{Host}
that is not C{host[:port]}, or two C{Content-Type} lines, is answered
C{400} and closed; an absolute-form target's authority stands for C{Host};
an empty C{Host} leaves C{SERVER_NAME} the server's address; HTTP/1.2 is
read as HTTP/1.1 and HTTP/2.0 is answered C{505}.  On the one-pass path and
twisted.web's, for a WSGI page and the event stream.  Real server, raw
sockets.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from support import RunningServer, exchange, head_end, record_one_pass, serve, set_lean

FIELDS = ("HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "CONTENT_TYPE")


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the environ's host fields as JSON, and record the call."""
    environ["wsgi.input"].read()
    app.calls.append(environ["PATH_INFO"])  # type: ignore[attr-defined]
    seen = {key: environ[key] for key in FIELDS if key in environ}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """One server for the module (each test turns the one pass on or off)."""
    with serve(app) as running:
        yield running


@pytest.fixture(params=[True, False], ids=["one-pass", "twisted-web"])
def lean(request: pytest.FixtureRequest, server: RunningServer) -> Iterator[bool]:
    """Requests read in one pass where they can be, or always line by line."""
    app.calls = []  # type: ignore[attr-defined]
    set_lean(server, request.param)
    yield request.param
    set_lean(server, True)


def to_the_end(port: int, data: bytes) -> bytes:
    """Send C{data} in one write; read until the server closes."""
    return exchange(port, data, lambda _: False)


def environ_of(answer: bytes) -> dict[str, str]:
    """The JSON body of a (chunked) answer from L{app}."""
    body = answer[head_end(answer) :]
    seen: dict[str, str] = json.loads(body[body.index(b"{") : body.rindex(b"}") + 1])
    return seen


REFUSED = [
    b"GET %s HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: example.test\r\nHost: evil.test\r\n\r\n",
    b"GET %s HTTP/1.0\r\nHost: example.test\r\nHost: example.test\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: :80\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: evil.test/../x?y#z\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: user@example.test\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: example.test:8o\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: [::1\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET %s HTTP/1.1\r\nHost: example.test\r\nContent-Type: text/plain\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n\r\n",
]
REFUSED_IDS = ["no-host", "two-hosts", "two-hosts-1.0", "empty-host-name", "path-in-host",
               "userinfo", "bad-port", "open-bracket", "space", "two-content-types"]  # fmt: skip


@pytest.mark.parametrize("head", REFUSED, ids=REFUSED_IDS)
@pytest.mark.parametrize("path", [b"/p", b"/sse"], ids=["page", "stream"])
def test_a_request_with_a_wrong_host_is_refused(
    server: RunningServer, lean: bool, head: bytes, path: bytes
) -> None:
    """A 400 that says why, the connection closed; no app call, no stream."""
    answer = to_the_end(server.port, head % path)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:300]
    assert b"Connection: close\r\n" in answer and answer.count(b"HTTP/1.") == 1
    assert b"Host" in answer or b"Content-Type header" in answer
    assert app.calls == []  # type: ignore[attr-defined]
    assert server.client_count() == 0


def test_a_repeated_content_type_with_a_body_is_refused(server: RunningServer, lean: bool) -> None:
    """A form post whose two Content-Type lines disagree never reaches the app."""
    answer = to_the_end(
        server.port,
        b"POST /p HTTP/1.1\r\nHost: example.test\r\nContent-Type: text/plain\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=1",
    )
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:300]
    assert answer.endswith(b"more than one Content-Type header\n")
    assert app.calls == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            b"GET /p HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
            {"HTTP_HOST": "", "SERVER_NAME": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1"},
        ),
        (
            b"GET /p HTTP/1.0\r\n\r\n",
            {"SERVER_NAME": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.0"},
        ),
        (
            b"GET /p HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
            {"HTTP_HOST": "[::1]:8080", "SERVER_NAME": "::1", "SERVER_PROTOCOL": "HTTP/1.1"},
        ),
        (
            b"GET /p HTTP/1.1\r\nHost: example.test:\r\nConnection: close\r\n\r\n",
            {"HTTP_HOST": "example.test:", "SERVER_NAME": "example.test"},
        ),
    ],
    ids=["empty-host", "http-1.0-without-host", "ipv6-literal", "empty-port"],
)
def test_a_valid_host_reaches_the_app(
    server: RunningServer, lean: bool, head: bytes, expected: dict[str, str]
) -> None:
    """SERVER_NAME is the Host's name, or the server's address, never empty."""
    answer = to_the_end(server.port, head)
    assert answer[:8] in (b"HTTP/1.1", b"HTTP/1.0") and answer[8:17] == b" 200 OK\r\n", answer[:300]
    seen = environ_of(answer)
    assert {key: seen.get(key) for key in expected} == expected, seen
    if "HTTP_HOST" not in expected:
        assert "HTTP_HOST" not in seen


def test_an_empty_host_is_read_in_one_pass(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one pass serves a request with an empty Host as the line parser does."""
    calls = record_one_pass(monkeypatch, "_serve_simple_request")
    set_lean(server, True)
    app.calls = []  # type: ignore[attr-defined]
    answer = to_the_end(server.port, b"GET /p HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n")
    server.call(lambda: None)
    assert calls == [True]
    assert environ_of(answer)["SERVER_NAME"] == "127.0.0.1"


@pytest.mark.parametrize("path", [b"/sse", b"/sse?channel=a"])
def test_a_stream_opens_with_an_empty_host(server: RunningServer, lean: bool, path: bytes) -> None:
    """An empty Host is valid (a target without an authority): the stream opens."""
    answer = exchange(
        server.port, b"GET %s HTTP/1.1\r\nHost:\r\n\r\n" % path, lambda data: head_end(data) > 0
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:300]
    assert b"text/event-stream" in answer


@pytest.mark.parametrize(
    ("head", "host", "name"),
    [
        (
            b"GET http://target.test:8080/abs?x=1 HTTP/1.1\r\nHost: example.test\r\n"
            b"Connection: close\r\n\r\n",
            "target.test:8080",
            "target.test",
        ),
        (
            b"GET http://target.test/abs HTTP/1.1\r\nConnection: close\r\n\r\n",
            "target.test",
            "target.test",
        ),
        (
            b"GET http://[::1]:81?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
            "[::1]:81",
            "::1",
        ),
    ],
    ids=["with-host", "without-host", "ipv6-no-path"],
)
def test_an_absolute_target_names_the_host(
    server: RunningServer, lean: bool, head: bytes, host: str, name: str
) -> None:
    """RFC 9112 3.2.2: the target's authority, not the Host header, is HTTP_HOST."""
    answer = to_the_end(server.port, head)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:300]
    seen = environ_of(answer)
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"]) == (host, name)


@pytest.mark.parametrize(
    "target",
    [b"http://:80/abs", b"http:///abs", b"http://user@target.test/abs", b"http://a%zz/"],
    ids=["no-host-name", "empty-authority", "userinfo", "bad-escape"],
)
def test_an_absolute_target_with_a_wrong_authority_is_refused(
    server: RunningServer, lean: bool, target: bytes
) -> None:
    """An authority that is not host[:port] is a 400, whatever the Host header says."""
    answer = to_the_end(server.port, b"GET %s HTTP/1.1\r\nHost: example.test\r\n\r\n" % target)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:300]
    assert app.calls == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", [b"HTTP/1.2", b"HTTP/1.9"])
@pytest.mark.parametrize("path", [b"/p", b"/sse"], ids=["page", "stream"])
def test_a_later_minor_version_is_read_as_http_1_1(
    server: RunningServer, lean: bool, version: bytes, path: bytes
) -> None:
    """RFC 9110 6.2: answered as HTTP/1.1, and the app sees SERVER_PROTOCOL HTTP/1.1."""
    answer = exchange(
        server.port,
        b"GET %s %s\r\nHost: example.test\r\n\r\n" % (path, version),
        lambda data: head_end(data) > 0 and (path == b"/sse" or data.endswith(b"0\r\n\r\n")),
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:300]
    if path == b"/p":
        assert environ_of(answer)["SERVER_PROTOCOL"] == "HTTP/1.1"
        # Kept alive, as HTTP/1.1 is.
        assert b"Connection: close" not in answer
    else:
        assert b"text/event-stream" in answer


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"])
@pytest.mark.parametrize("path", [b"/p", b"/sse"], ids=["page", "stream"])
def test_another_major_version_is_answered_505(
    server: RunningServer, lean: bool, version: bytes, path: bytes
) -> None:
    """RFC 9110 15.6.6: 505 HTTP Version Not Supported, and closed."""
    answer = to_the_end(server.port, b"GET %s %s\r\nHost: example.test\r\n\r\n" % (path, version))
    assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer[:300]
    assert answer.count(b"HTTP/1.") == 1
    assert app.calls == []  # type: ignore[attr-defined]
