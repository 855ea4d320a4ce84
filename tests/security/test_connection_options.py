"""
C{Connection: close} among other options (RFC 9110 7.6.1, RFC 9112 9.6): the
header is a comma-separated list, over any number of lines, and C{close}
anywhere in it ends the connection after the answer.  A front proxy that
reads it so sends its next client's request on a new connection; a server
that keeps the old one open would take bytes meant for nobody as the next
request.  Both request readers (the one-pass reader of simple requests and
twisted.web's line reader) are tried.  The reference is the RFC itself:
waitress closes only when the whole value is C{close}, nginx when C{close}
appears anywhere in it (C{closed} too).  Real server, raw sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support import exchange, serve

SECOND = b"GET /second HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the path (7 bytes long)."""
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
    return [environ["PATH_INFO"][:7].ljust(7).encode()]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The app's port on loopback."""
    with serve(app) as server:
        yield server.port


def answered(port: int, first: bytes) -> list[bytes]:
    """
    The paths answered when C{first} and then a second request arrive in one
    write, until the server closes: C{[b"/first", b"/second"]} when the
    connection stayed open after the first.
    """
    data = exchange(port, first + SECOND, lambda _: False)
    return [body[-7:].strip() for body in data.split(b"HTTP/1.1 ")[1:]]


def _first(connection: list[bytes], *, body: bool) -> bytes:
    lines = [b"POST /first HTTP/1.1" if body else b"GET /first HTTP/1.1", b"Host: example.test"]
    lines += [b"Connection: " + value for value in connection]
    if body:
        lines.append(b"Content-Length: 3")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"abc" if body else b"")


CLOSING = [
    [b"close"],
    [b"te,close"],
    [b"close, te"],
    [b"Keep-Alive , CLOSE"],
    [b"upgrade,\tclose"],
    [b"te", b"close"],
]
OPEN = [[], [b"keep-alive"], [b"te, keep-alive"], [b"closed"], [b"te", b"x-close"]]


@pytest.mark.parametrize("body", [False, True], ids=["get", "post"])
@pytest.mark.parametrize("connection", CLOSING, ids=[b"|".join(c).decode() for c in CLOSING])
def test_close_among_the_options_closes(port: int, connection: list[bytes], body: bool) -> None:
    """One answer, then the end of the connection."""
    assert answered(port, _first(connection, body=body)) == [b"/first"]


@pytest.mark.parametrize("body", [False, True], ids=["get", "post"])
@pytest.mark.parametrize("connection", OPEN, ids=[b"|".join(c).decode() or "none" for c in OPEN])
def test_other_options_keep_the_connection(port: int, connection: list[bytes], body: bool) -> None:
    """Both requests answered."""
    assert answered(port, _first(connection, body=body)) == [b"/first", b"/second"]


def test_the_answer_says_it_closes(port: int) -> None:
    """The answer to a request that asked to close says C{Connection: close}."""
    data = exchange(port, _first([b"te,close"], body=False), lambda _: False)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in data.split(b"\r\n\r\n")[0] + b"\r\n"
