"""The WSGI container hands responses to the reactor without waiting, and keeps WSGI semantics."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import httpx
import pytest
from support import exchange, serve

from wsgi_sse import _wsgi

closed: list[str] = []
writes_returned = threading.Event()


class Body:
    """A body iterable (not a list) that records its close()."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)

    def close(self) -> None:
        closed.append("closed")


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/list":
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Mine", "yes")])
        return [b"hello ", b"", b"world"]
    if path == "/tuple-no-length":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"a" * 10, b"b" * 10)
    if path == "/generator":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([i]) * 65536 for i in range(20))  # 1.25 MiB, past the hand-over bound
    if path == "/iterable":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"one,", b"two"])
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        writes_returned.set()
        return [b"returned"]
    if path == "/str-piece":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["not bytes"]
    if path == "/raise-before":
        raise RuntimeError("before start_response")

    def failing() -> Iterator[bytes]:
        yield b"first piece"
        raise RuntimeError("mid-body")

    if path == "/no-content-mid-body":
        start_response("204 No Content", [])
        return failing()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return failing()


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with serve(app) as running:
        yield running


def get(server: Any, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)


def test_server_uses_the_lean_container(server: Any) -> None:
    """make_application() serves the app through wsgi_sse's WSGIContainer."""
    assert isinstance(server.service.wsgi_resource, _wsgi.WSGIContainer)


def test_list_body_keeps_status_headers_and_pieces(server: Any) -> None:
    """A list body arrives whole, with the app's status and headers."""
    response = get(server, "/list")
    assert response.status_code == 201
    assert response.headers["x-mine"] == "yes"
    assert response.content == b"hello world"


def test_tuple_body_without_length(server: Any) -> None:
    """A tuple body without Content-Length arrives in full over HTTP/1.1."""
    response = get(server, "/tuple-no-length")
    assert response.content == b"a" * 10 + b"b" * 10


def test_generator_body_arrives_in_order(server: Any) -> None:
    """A generator's pieces, more than the hand-over bound, all arrive in order."""
    response = get(server, "/generator")
    assert response.content == b"".join(bytes([i]) * 65536 for i in range(20))


def test_iterable_body_is_closed(server: Any) -> None:
    """A body iterable's close() is called after its pieces are sent."""
    closed.clear()
    response = get(server, "/iterable")
    assert response.content == b"one,two"
    assert closed == ["closed"]


def test_write_callable_then_returned_body(server: Any) -> None:
    """What the write callable sent comes before the returned body."""
    writes_returned.clear()
    response = get(server, "/write")
    assert response.content == b"written returned"
    assert writes_returned.is_set()


def test_non_bytes_piece_is_a_500(server: Any) -> None:
    """A str piece in a list body is an application error: 500, nothing of the body."""
    response = get(server, "/str-piece")
    assert response.status_code == 500
    assert b"not bytes" not in response.content


def test_error_before_start_response_is_a_500(server: Any) -> None:
    """An application that raises before answering gets a 500."""
    assert get(server, "/raise-before").status_code == 500


def test_error_mid_body_cuts_the_response(server: Any) -> None:
    """An error after the first piece was sent ends the connection: the body is incomplete."""
    with pytest.raises(httpx.HTTPError):
        get(server, "/fail-mid-body")


def test_error_mid_body_resets_an_http10_connection(server: Any) -> None:
    """
    Over HTTP/1.0 a body without Content-Length ends with its connection:
    an error after the first piece resets it, never closes it as if the
    body were whole.
    """
    request = f"GET /fail-mid-body HTTP/1.0\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    with pytest.raises(ConnectionResetError):
        exchange(server.port, request, lambda _: False)


@pytest.mark.parametrize(
    ("method", "path", "version", "status"),
    [
        ("HEAD", "/fail-mid-body", "HTTP/1.1", b"HTTP/1.1 200 OK"),
        ("HEAD", "/fail-mid-body", "HTTP/1.0", b"HTTP/1.0 200 OK"),
        ("GET", "/no-content-mid-body", "HTTP/1.0", b"HTTP/1.0 204 No Content"),
    ],
)
def test_error_after_a_bodiless_answer_closes_cleanly(
    server: Any, method: str, path: str, version: str, status: bytes
) -> None:
    """
    An answer without a body (to HEAD, a 204) is whole once its head is
    out: an error in the app after that closes the connection as usual,
    with the head delivered, never resets it.
    """
    request = f"{method} {path} {version}\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    received = exchange(server.port, request, lambda _: False)  # to EOF
    assert received.startswith(status + b"\r\n")
    assert received.endswith(b"\r\n\r\n")


def test_keep_alive_connection_serves_many_pages(server: Any) -> None:
    """One HTTP/1.1 connection serves page after page (each response ends properly)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        bodies = [client.get("/list").content for _ in range(20)]
    assert bodies == [b"hello world"] * 20


def test_access_log_can_be_turned_off() -> None:
    """access_log=False logs no line per request; the default logs one."""
    from twisted.logger import globalLogPublisher

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = str(event.get("log_io", ""))
        if '"GET /list HTTP/1.1" 201' in text:
            lines.append(text)

    globalLogPublisher.addObserver(observe)
    try:
        with serve(app, access_log=False) as quiet:
            assert get(quiet, "/list").status_code == 201
        assert lines == []
        with serve(app) as logged:
            assert get(logged, "/list").status_code == 201
        assert len(lines) == 1
    finally:
        globalLogPublisher.removeObserver(observe)
