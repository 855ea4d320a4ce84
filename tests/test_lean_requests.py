"""
One-pass reading of simple requests other than stream GETs (form posts,
pages, any method with its whole body in one read): the application sees
the same request and the client gets, byte for byte, the answer twisted.web's
line-by-line path gives (modulo the Date header), with every limit and
refusal; anything else takes twisted.web's path.  Real server, raw sockets.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import unquote

import pytest
from support import (
    RunningServer,
    both_ways,
    dechunk,
    exchange,
    head_end,
    record_one_pass,
    serve,
    set_lean,
    wait_until,
    without_date,
)

from wsgi_sse._lean import MAX_SIMPLE_HEAD, parse_simple_request


def echo_app(environ: dict[str, Any], start_response: Any) -> Any:
    """A WSGI app that answers with what it was asked: the request as JSON."""
    body = environ["wsgi.input"].read()
    seen = {
        key: value
        for key, value in environ.items()
        if isinstance(value, str) and key != "REMOTE_PORT"
    }
    seen["body"] = body.decode("latin-1")
    seen["stream_path"] = environ.get("wsgi_sse.stream_path", "")
    answer = json.dumps(seen, sort_keys=True).encode()
    path = environ["PATH_INFO"]
    if path == "/chunked":
        start_response("200 OK", [("Content-Type", "application/json")])
        return iter([answer[:10], answer[10:]])
    if path == "/no-length":
        start_response("200 OK", [("X-Seen", "yes")])
        return [answer[:10], answer[10:]]
    if path == "/redirect":
        start_response("303 See Other", [("Location", "/x"), ("Content-Length", "0")])
        return [b""]
    if path == "/nothing":
        start_response("204 No Content", [])
        return []
    if path == "/empty":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []
    start_response(
        "201 Created",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(answer))),
            ("Set-Cookie", "seen=1; Path=/"),
        ],
    )
    return [answer]


@pytest.fixture
def one_pass(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for every read that could begin a request, whether the one pass served it."""
    return record_one_pass(monkeypatch, "_serve_simple_request")


def complete(data: bytes) -> bool:
    """Whether C{data} holds one whole response (by its Content-Length, or its last chunk)."""
    end = head_end(data)
    if end < 0:
        return False
    head = data[:end].lower()
    if b"transfer-encoding: chunked" in head:
        return data.endswith(b"0\r\n\r\n")
    if b"content-length: " not in head:
        return False
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    return len(data) >= end + length


def both(
    server: RunningServer, calls: list[bool], request: bytes, done: Any = complete
) -> tuple[bytes, bytes]:
    """L{support.both_ways}, reading until C{complete} by default."""
    return both_ways(server, calls, request, done)


def until_eof(data: bytes) -> bool:
    """Read until the server closes the connection."""
    return False


FORM = b"name=Ada+Lovelace&x=%C3%A9"
JSON_BODY = b'{"a": "b\r\n\r\nc"}\x00\r\n\r\n'  # the end of a head, inside the body
KNOCK = (
    b"POST /knock HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s" % (len(FORM), FORM)
)


@pytest.mark.parametrize(
    "request_bytes",
    [
        KNOCK,
        b"POST /api/items?x=1&y=%%20 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(JSON_BODY), JSON_BODY),
        b"GET /hello/?who=Ada HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=1; b=2\r\n"
        b"User-Agent: one-pass/1\r\nAccept: */*\r\n\r\n",
        b"GET /%68ello/%2Fx HTTP/1.1\r\nhost:   h \t\r\nX-Empty:\r\n\r\n",
        b"HEAD /hello/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"PUT /thing HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n"
        b"\r\nabc",
        b"DELETE /thing/1 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"OPTIONS /thing HTTP/1.1\r\nHost: h\r\nOrigin: http://elsewhere.example\r\n\r\n",
        b"PATCH /thing HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /knock HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n",
    ],
    ids=[
        "form-post",
        "json-crlf-nul",
        "page-cookies",
        "escaped-path",
        "head",
        "put",
        "delete",
        "options",
        "patch-empty",
        "chunked-answer",
        "empty-post",
    ],
)
def test_one_pass_answer_is_twisted_answer(one_pass: list[bool], request_bytes: bytes) -> None:
    """The application sees the same request and the client gets the same bytes on both paths."""
    with serve(echo_app) as server:
        head = request_bytes.startswith(b"HEAD")
        fast, slow = both(server, one_pass, request_bytes, until_eof if head else complete)
        assert fast == slow
        if head:
            return
        body = fast[head_end(fast) :]
        if b"Transfer-Encoding: chunked" in fast[: head_end(fast)]:
            body = dechunk(body)
        seen = json.loads(body)
        method, target = request_bytes.split(b" ")[:2]
        assert seen["REQUEST_METHOD"] == method.decode()
        path, _, query = target.decode().partition("?")
        assert (seen["SCRIPT_NAME"] + seen["PATH_INFO"], seen["QUERY_STRING"]) == (
            unquote(path),
            query,
        )
        assert seen["body"].encode("latin-1") == request_bytes.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    "path", ["/no-length", "/redirect", "/nothing", "/empty"], ids=lambda p: p[1:]
)
@pytest.mark.parametrize("close", [False, True], ids=["kept-alive", "close"])
def test_whole_answers_are_written_as_twisted_writes_them(
    one_pass: list[bool], path: str, close: bool
) -> None:
    """Answers with no length (chunked), an empty body or no body are the same bytes both ways."""
    with serve(echo_app) as server:
        request = b"GET %s HTTP/1.1\r\nHost: h\r\n%s\r\n" % (
            path.encode(),
            b"Connection: close\r\n" if close else b"",
        )
        if close:
            done = until_eof
        elif path == "/nothing":
            done = lambda data: head_end(data) > 0  # noqa: E731
        else:
            done = complete
        fast, slow = both(server, one_pass, request, done)
        assert fast == slow
        if path == "/no-length":
            assert b"Transfer-Encoding: chunked\r\n" in fast and fast.endswith(b"\r\n0\r\n\r\n")
            assert json.loads(dechunk(fast[head_end(fast) :]))["PATH_INFO"] == path
            assert b"Content-Type" not in fast
        elif path == "/redirect":
            assert fast.startswith(b"HTTP/1.1 303 See Other\r\n") and fast.endswith(b"\r\n\r\n")
        elif path == "/nothing":
            assert fast.startswith(b"HTTP/1.1 204 No Content\r\n") and fast.endswith(b"\r\n\r\n")


def test_connection_close_closes_on_both_paths(one_pass: list[bool]) -> None:
    """C{Connection: close} gets a C{Connection: close} answer, then the end, on both paths."""
    with serve(echo_app) as server:
        fast, slow = both(server, one_pass, KNOCK, until_eof)
        assert fast.startswith(b"HTTP/1.1 201 Created\r\n")
        assert b"\r\nConnection: close\r\n" in fast
        assert json.loads(fast[head_end(fast) :])["body"] == FORM.decode()
        assert fast == slow


def test_kept_alive_connection_reads_each_request_in_one_pass(one_pass: list[bool]) -> None:
    """Requests one after another on a kept-alive connection are each read in one pass."""
    with serve(echo_app) as server:
        answers: dict[bool, list[bytes]] = {}
        for lean in (True, False):
            set_lean(server, lean)
            del one_pass[:]
            answers[lean] = []
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                for n in range(3):
                    body = b"n=%d" % n
                    sock.sendall(
                        b"POST /knock HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n%s"
                        % (len(body), body)
                    )
                    data = b""
                    while not complete(data):
                        data += sock.recv(65536)
                    answers[lean].append(without_date(data))
            server.call(lambda: None)
            assert one_pass == ([True] * 3 if lean else [])
        assert answers[True] == answers[False]
        assert [json.loads(a[head_end(a) :])["body"] for a in answers[True]] == [
            "n=0",
            "n=1",
            "n=2",
        ]


def test_stream_get_with_a_length_opens_the_stream(one_pass: list[bool]) -> None:
    """A stream GET declaring an empty body is read in one pass and opens the stream."""
    with serve(echo_app, retry_jitter=0) as server:
        request = b"GET /sse HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        fast, slow = both(server, one_pass, request, lambda d: b"retry: " in d)
        assert fast.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: text/event-stream" in fast
        assert fast == slow


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST /sse HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
            b"413 Content Too Large",
        ),
        (
            b"POST /knock HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n" + b"x" * 101,
            b"413 Content Too Large",
        ),
        (
            b"GET /hello/ HTTP/1.1\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(501))
            + b"\r\n",
            b"431 Request Header Fields Too Large",
        ),
    ],
    ids=["stream-takes-no-body", "over-max-request-body", "too-many-headers"],
)
def test_refusals_are_left_to_twisted_path(
    one_pass: list[bool], request_bytes: bytes, status: bytes
) -> None:
    """A body over its limit, or too many headers, is refused by the line parser, as before."""
    with serve(echo_app, max_request_body=100) as server:
        answers = []
        for lean in (True, False):
            set_lean(server, lean)
            del one_pass[:]
            answers.append(without_date(exchange(server.port, request_bytes, until_eof)))
            server.call(lambda: None)
            assert one_pass == ([False] if lean else [])
        assert answers[0].startswith(b"HTTP/1.1 " + status + b"\r\n")
        assert answers[0] == answers[1]


def test_a_body_in_two_reads_is_read_by_twisted(one_pass: list[bool]) -> None:
    """A request whose body arrives in a second read is read by twisted.web's parser, whole."""
    with serve(echo_app) as server:
        head, body = KNOCK.split(b"\r\n\r\n", 1)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head + b"\r\n\r\n" + body[:5])
            # The server has read the first part (and left it to the line parser).
            wait_until(lambda: one_pass == [False], 10, "the first read")
            sock.sendall(body[5:])
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert json.loads(data[head_end(data) :])["body"] == FORM.decode()
        assert one_pass == [False]


def test_another_request_class_reads_line_by_line() -> None:
    """A site given its own request class reads no request in one pass."""
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from wsgi_sse._site import StreamSite

    assert StreamSite(Resource(), requestFactory=Request)._channelClass().leanRequests is False
    assert StreamSite(Resource())._channelClass().leanRequests is True
    # A stream path not read in one pass leaves the other requests' one pass on.
    site = StreamSite(Resource(), stream_path="/s%C3%A9")._channelClass()
    assert site.leanPath is None and site.leanRequests is True


@pytest.mark.parametrize(
    "data",
    [
        b"post /knock HTTP/1.1\r\nHost: x\r\n\r\n",
        b"P0ST /knock HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /knock HTTP/1.0\r\nHost: x\r\n\r\n",
        b"POST /knock HTTP/1.1 \r\nHost: x\r\n\r\n",
        b"POST http://x/knock HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /knock#top HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /kn\xc3\xb6ck HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST  /knock HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /knock HTTP/1.1\r\nHost: x\r\n",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcd",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: 03\r\n\r\nabc",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: 3 3\r\n\r\nabc",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nabc",
        b"POST /knock HTTP/1.1\r\nHost: x\r\n\r\nabc",
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\na",
        b"GET /a HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\x00\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\rx\r\n\r\n",
        b"GET /a HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(11)) + b"\r\n",
        b"GET /a HTTP/1.1\r\nX-Big: " + b"y" * MAX_SIMPLE_HEAD + b"\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ],
)
def test_anything_but_a_simple_request_takes_twisted_path(data: bytes) -> None:
    """Every request twisted.web could read or answer differently is left to it."""
    assert parse_simple_request(data, 10) is None


def test_simple_request_is_read_as_twisted_stores_it() -> None:
    """Names are canonical, values stripped, the body whole, persistence as twisted.web decides."""
    data = (
        b"POST /knock?x=1 HTTP/1.1\r\nhost: \t h \t\r\ncontent-length: 12\r\n"
        b"CONNECTION: Keep-Alive, Close\r\nX-Empty:\r\n\r\nname=a\r\n\r\nb="
    )
    request = parse_simple_request(data, 10)
    assert request is not None
    assert (request.method, request.target, request.body) == (
        b"POST",
        b"/knock?x=1",
        b"name=a\r\n\r\nb=",
    )
    assert request.headers == {
        b"Host": [b"h"],
        b"Content-Length": [b"12"],
        b"Connection": [b"Keep-Alive, Close"],
        b"X-Empty": [b""],
    }
    # As twisted.web reads Connection: tokens split on spaces ("Close" is one).
    assert request.persistent is False
    assert request.head_size == len(data) - 12 and request.length == 12
    get = parse_simple_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert get is not None and (get.body, get.length, get.persistent) == (b"", 0, True)
    assert parse_simple_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0) is None


def test_header_names_with_underscores_reach_the_app_on_neither_path(
    one_pass: list[bool],
) -> None:
    """C{X_Auth_User} does not pass for C{X-Auth-User}, read in one pass or line by line."""
    request = (
        b"GET /page HTTP/1.1\r\nHost: h\r\nX-Auth-User: alice\r\nX_Auth_User: admin\r\n"
        b"X_Forwarded_For: 10.0.0.1\r\nConnection: close\r\n\r\n"
    )
    with serve(echo_app) as server:
        fast, slow = both(server, one_pass, request)
    assert fast == slow
    seen = json.loads(fast[head_end(fast) :])
    assert seen["HTTP_X_AUTH_USER"] == "alice"
    assert "HTTP_X_FORWARDED_FOR" not in seen


def test_the_readers_docstring_examples_hold() -> None:
    """The examples in the one-pass readers' docstrings (C{Connection} options among them) hold."""
    import doctest

    from wsgi_sse import _lean

    failed, attempted = doctest.testmod(_lean)
    assert attempted >= 3 and failed == 0
