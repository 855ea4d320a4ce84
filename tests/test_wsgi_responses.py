"""
What the WSGI container sends when an application's response is faulty: a
head HTTP cannot carry, no start_response, a body that raises, a body that
disagrees with its own Content-Length.  Real HTTP over loopback sockets,
several requests on one kept-alive connection: each answer must be framed
so that the next one is read as itself.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, BinaryIO

import flask
import pytest
from support import serve

from wsgi_sse import _wsgi, hold_headers
from wsgi_sse._site import _StreamingRequest

# -- reading answers off a kept-alive connection ---------------------------------


class Answer:
    """One HTTP/1.1 answer as it came off the wire."""

    def __init__(self, status: int, head: bytes, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.head = head
        self.headers = headers
        self.body = body


def read_answer(stream: BinaryIO, method: str = "GET") -> Answer:
    """
    Read one answer, framed by its Content-Length, its chunks, or the end of
    the connection (none after a C{HEAD}).
    """
    status_line = stream.readline()
    if not status_line:
        raise EOFError("the connection closed before an answer")
    head = status_line
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        head += line
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if method == "HEAD":
        body = b""
    elif "content-length" in headers:
        body = stream.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(stream.readline().split(b";")[0], 16):
            body += stream.read(size)
            stream.readline()
        stream.readline()
    else:
        body = stream.read()
    return Answer(int(status_line.split()[1]), head, headers, body)


class Connection:
    """A kept-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.stream = self.sock.makefile("rb")

    def get(self, path: str, method: str = "GET") -> Answer:
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return read_answer(self.stream, method)

    def closed(self) -> bool:
        """Whether the server closed the connection (nothing more arrives)."""
        return self.stream.read() == b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
        self.sock.close()


# -- the faulty app -----------------------------------------------------------------

BAD_HEADS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "value-outside-latin-1": ("200 OK", [("X-Name", "caf\u20ac")]),
    "name-with-a-space": ("200 OK", [("X Bad", "1")]),
    "name-with-a-colon": ("200 OK", [("X:Bad", "1")]),
    "name-with-crlf": ("200 OK", [("X-Evil\r\nSet-Cookie", "pwn=1")]),
    "value-with-crlf": ("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwn=1")]),
    "value-with-nul": ("200 OK", [("X-Evil", "a\x00b")]),
    "status-without-reason": ("200", []),
    "status-not-a-number": ("abc", []),
    "status-of-four-digits": ("2000 OK", []),
    "status-with-crlf": ("200 OK\r\nSet-Cookie: pwn=1", []),
    "status-000": ("000 Nothing", []),
    "status-099": ("099 Below", []),
    "status-600": ("600 Above", []),
    "status-999": ("999 Above", []),
    # Interim statuses end at their head, and a final answer must follow:
    # as a final answer with a body, its bytes would be read as the next.
    "status-100": ("100 Continue", []),
    "status-101": ("101 Switching Protocols", []),
    "status-103": ("103 Early Hints", []),
    "value-with-a-control-character": ("200 OK", [("X-Evil", "a\x01b")]),
    "value-with-del": ("200 OK", [("X-Evil", "a\x7fb")]),
    "value-with-escape": ("200 OK", [("X-Evil", "\x1b[31mred")]),
}


closes: dict[str, int] = {}
FAIL_AT = {"raises-midway": 1, "raises-at-first": 0, "raises-before-start-response": 0}


class Counted:
    """A body iterable that raises at its piece C{fail_at} and counts its close() calls."""

    def __init__(self, key: str, pieces: list[bytes], fail_at: int) -> None:
        self.key, self.pieces, self.fail_at = key, pieces, fail_at

    def __iter__(self) -> Iterator[bytes]:
        for i, piece in enumerate(self.pieces):
            if i == self.fail_at:
                raise RuntimeError("the body failed")
            yield piece

    def close(self) -> None:
        closes[self.key] = closes.get(self.key, 0) + 1


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    kind, _, body = path.strip("/").partition("/")
    if kind == "ok":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if kind in BAD_HEADS:
        status, headers = BAD_HEADS[kind]
        start_response(status, [("Content-Type", "text/plain"), *headers])
        if body == "list":
            return [b"first;", b"second"]

        def pieces() -> Iterator[bytes]:
            yield b"first;"
            yield b"second"

        return pieces()
    if kind == "no-start-list":
        return [b"hello"]
    if kind == "no-start-empty":
        return []
    if kind == "no-start-generator":
        return iter([b"first;", b"second"])
    if kind == "pieces":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])
        return iter([b"first;", b"second;", b"third"])
    if kind == "close":
        if body != "raises-before-start-response":
            start_response("200 OK", [("Content-Type", "text/plain")])
        return Counted(body, [b"first;", b"second"], fail_at=FAIL_AT[body])
    if kind == "length":
        declared, sent, form = body.split("-")
        headers = [("Content-Type", "text/plain"), ("Content-Length", declared)]
        write = start_response("200 OK", headers)
        data = b"hello world"[: int(sent)]
        if form == "list":
            return [data]
        if form == "write":
            write(data)
            return []
        return iter([data[:3], data[3:]])
    if kind == "bad-length":
        start_response("200 OK", [("Content-Length", body)])
        return [b"hello"]
    if kind == "bodiless":
        # /bodiless/<status>-<form>: a status whose answer has no content.
        code, form = body.split("-")
        headers = [("Content-Type", "text/plain"), ("Content-Length", "11"), ("X-App", "1")]
        write = start_response(f"{code} Reason", headers)
        if form == "write":
            write(b"hello world")
            return []
        if form == "generator":
            return iter([b"hello", b" world"])
        return [b"hello world"]
    if kind == "hold-status-with-crlf":
        start_response("200 OK\r\nSet-Cookie: pwn=1", hold_headers("a"))
        return []
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with serve(app) as running:
        yield running


# -- heads HTTP cannot carry --------------------------------------------------------


@pytest.mark.parametrize("body", ["list", "generator"])
@pytest.mark.parametrize("kind", sorted(BAD_HEADS))
def test_a_head_http_cannot_carry_is_a_500(server: Any, kind: str, body: str) -> None:
    """A bad status or header: a 500 with none of the app's head or body; the connection goes on."""
    with Connection(server.port) as connection:
        answer = connection.get(f"/{kind}/{body}")
        assert answer.status == 500
        assert b"pwn" not in answer.head and b"X-" not in answer.head
        assert answer.body == b""
        after = connection.get("/ok")
        assert (after.status, after.body) == (200, b"ok")


def test_a_flask_download_named_outside_latin_1_is_a_500() -> None:
    """A Flask view's Content-Disposition outside Latin-1 is a 500, never a 200 without its body."""
    flask_app = flask.Flask("downloads")

    @flask_app.route("/download")
    def download() -> Any:
        response = flask.Response("file contents", mimetype="text/plain")
        response.headers["Content-Disposition"] = 'attachment; filename="report-\u20ac.txt"'
        return response

    @flask_app.route("/next")
    def following() -> str:
        return "next page"

    with serve(flask_app) as running, Connection(running.port) as connection:
        assert connection.get("/download").status == 500
        after = connection.get("/next")
        assert (after.status, after.body) == (200, b"next page")


@pytest.mark.parametrize("kind", ["no-start-list", "no-start-empty", "no-start-generator"])
def test_a_body_without_start_response_is_a_500(server: Any, kind: str) -> None:
    """An app that never calls start_response has failed (PEP 3333): 500, nothing of its body."""
    with Connection(server.port) as connection:
        answer = connection.get(f"/{kind}")
        assert (answer.status, answer.body) == (500, b"")
        assert connection.get("/ok").body == b"ok"


def test_a_held_stream_with_crlf_in_its_status_is_a_500(server: Any) -> None:
    """A view holding a stream with a line break in its status gets a 500, no injected header."""
    with Connection(server.port) as connection:
        answer = connection.get("/hold-status-with-crlf")
        assert answer.status == 500
        assert b"pwn" not in answer.head


# -- statuses without content -------------------------------------------------------


@pytest.mark.parametrize("form", ["list", "generator", "write"])
def test_a_204_says_no_content_length_and_sends_no_body(server: Any, form: str) -> None:
    """
    A 204 must not carry Content-Length (RFC 9110 8.6): the app's is not
    sent, nor its body, and the next answer on the connection is read whole.
    """
    with Connection(server.port) as connection:
        connection.sock.sendall(b"GET /bodiless/204-%s HTTP/1.1\r\nHost: x\r\n\r\n" % form.encode())
        status_line = connection.stream.readline()
        head = b""
        while (line := connection.stream.readline()) != b"\r\n":
            head += line
        assert status_line.startswith(b"HTTP/1.1 204 ")
        assert b"X-App: 1" in head
        assert b"content-length" not in head.lower()
        assert b"transfer-encoding" not in head.lower()
        after = connection.get("/ok")
        assert (after.status, after.body) == (200, b"ok")


@pytest.mark.parametrize("form", ["list", "generator", "write"])
def test_a_205_is_sent_with_no_content(server: Any, form: str) -> None:
    """
    A 205 has no content (RFC 9110 15.3.6), but is framed as any answer:
    Content-Length 0 whatever the app said, none of its body, and the
    connection goes on.
    """
    with Connection(server.port) as connection:
        answer = connection.get(f"/bodiless/205-{form}")
        assert answer.status == 205
        assert answer.headers["content-length"] == "0"
        assert answer.headers["x-app"] == "1"
        assert b"Content-Length: 11" not in answer.head
        assert answer.body == b""
        after = connection.get("/ok")
        assert (after.status, after.body) == (200, b"ok")


def test_the_containers_docstring_examples_hold() -> None:
    """The examples in the WSGI container's docstrings (statuses it refuses among them) hold."""
    import doctest

    failed, attempted = doctest.testmod(_wsgi, optionflags=doctest.ELLIPSIS)
    assert attempted >= 4 and failed == 0


# -- the reactor failing to send what the app answered -------------------------------


def test_a_head_that_fails_to_be_sent_is_a_500(server: Any, monkeypatch: Any) -> None:
    """If setting the head fails in the reactor anyway, the answer is a 500 without it."""
    original = _wsgi._Response._sendHead

    def half_then_fail(self: Any, head: Any) -> None:
        original(self, head)
        raise RuntimeError("cannot send this head")

    monkeypatch.setattr(_wsgi._Response, "_sendHead", half_then_fail)
    for path in ("/ok", "/pieces"):
        with Connection(server.port) as connection:
            answer = connection.get(path)
            assert (answer.status, answer.body) == (500, b"")
            assert b"X-App" not in answer.head and b"Content-Length: 2" not in answer.head
            assert connection.closed()


def test_a_body_that_fails_to_be_written_drops_the_connection(
    server: Any, monkeypatch: Any
) -> None:
    """If writing a piece fails in the reactor after the head went out, the connection drops."""
    original = _StreamingRequest.write

    def write(self: Any, data: bytes) -> None:
        if data == b"second;":
            raise RuntimeError("cannot write this piece")
        original(self, data)

    monkeypatch.setattr(_StreamingRequest, "write", write)
    with Connection(server.port) as connection:
        answer = read_answer_after(connection, "/pieces")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert b"third" not in answer


def read_answer_after(connection: Connection, path: str) -> bytes:
    """Send a GET; read all that arrives until the server closes the connection."""
    connection.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return connection.stream.read()


# -- close() of the body ---------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(FAIL_AT))
def test_a_body_that_raises_is_closed_once(server: Any, case: str) -> None:
    """The body's close() is called once when iterating it raises (PEP 3333), wherever it does."""
    closes.pop(case, None)
    with Connection(server.port) as connection:
        if case == "raises-midway":
            # Its first piece went out: the connection is dropped.
            assert read_answer_after(connection, f"/close/{case}").endswith(b"first;\r\n")
        else:
            assert connection.get(f"/close/{case}").status == 500
    assert closes[case] == 1


# -- a body that disagrees with its Content-Length ------------------------------------


@pytest.mark.parametrize("form", ["list", "generator", "write"])
def test_a_body_longer_than_its_content_length_is_cut(server: Any, form: str) -> None:
    """Only the declared bytes go out: the surplus is not read as the next answer."""
    with Connection(server.port) as connection:
        answer = connection.get(f"/length/3-11-{form}")
        assert (answer.status, answer.body) == (200, b"hel")
        after = connection.get("/ok")
        assert (after.status, after.body) == (200, b"ok")


@pytest.mark.parametrize("form", ["list", "generator", "write"])
def test_a_body_shorter_than_its_content_length_closes_the_connection(
    server: Any, form: str
) -> None:
    """The client is not left waiting for the missing bytes, nor reads the next answer as them."""
    with Connection(server.port) as connection:
        answer = connection.get(f"/length/30-5-{form}")
        assert (answer.status, answer.body) == (200, b"hello")
        assert connection.closed()
    with Connection(server.port) as connection:
        # HEAD: no body is due, the connection stays.
        assert connection.get("/length/30-0-list", method="HEAD").body == b""
        assert connection.get("/ok").body == b"ok"


@pytest.mark.parametrize("value", ["abc", "-1", "5,5", "1e3"])
def test_a_content_length_that_is_not_a_length_is_a_500(server: Any, value: str) -> None:
    """A Content-Length no client could frame the body by is the app's error."""
    with Connection(server.port) as connection:
        answer = connection.get(f"/bad-length/{value}")
        assert (answer.status, answer.body) == (500, b"")
        assert connection.get("/ok").body == b"ok"
