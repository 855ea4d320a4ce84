"""
Request framing the server refuses rather than guess (RFC 9112, 6.1 and
6.3): a C{Transfer-Encoding} whose coding is not C{chunked} (twisted.web
alone takes C{identity} for no body at all, so the bytes that follow are
read as another request: a smuggled one), and any C{Transfer-Encoding} in
an HTTP/1.0 request.  A C{400}, the connection closed, the app never called.
Real server, raw sockets.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import exchange, serve

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the path and the body it read, and record the call."""
    body = environ["wsgi.input"].read()
    app.calls.append((environ["PATH_INFO"], body))  # type: ignore[attr-defined]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode() + b" " + body]


def to_the_end(port: int, data: bytes) -> bytes:
    """Send C{data} in one write; read until the server closes."""
    return exchange(port, data, lambda _: False)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: identity\r\n\r\n"
        + SMUGGLED,
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: identity\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: identity\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.0\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
    ],
    ids=["identity-then-a-request", "identity-and-length", "chunked-identity", "identity-chunked",
         "http-1.0-chunked"],
)  # fmt: skip
def test_a_transfer_coding_other_than_chunked_is_refused(request_bytes: bytes) -> None:
    """A 400 and the end of the connection; neither request reaches the app."""
    app.calls = []  # type: ignore[attr-defined]
    with serve(app) as server:
        answer = to_the_end(server.port, request_bytes)
        server.call(lambda: None)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.count(b"HTTP/1.") == 1
    assert app.calls == []  # type: ignore[attr-defined]


def test_chunked_over_http_1_1_is_still_read() -> None:
    """The one transfer coding a request may have is read as ever."""
    app.calls = []  # type: ignore[attr-defined]
    with serve(app) as server:
        answer = to_the_end(
            server.port,
            b"POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: Chunked\r\n"
            b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n/upload abc\r\n" in answer
    assert app.calls == [("/upload", b"abc")]  # type: ignore[attr-defined]
