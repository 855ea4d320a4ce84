"""
The server and the cyclic garbage collector: a closed stream is freed by
reference counting, and the objects alive at start-up are frozen once
(``gc_freeze``).  Real servers on loopback ports.
"""

from __future__ import annotations

import gc
import socket
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import cli_page, serve

from wsgi_sse import close

# A WSGI app answering with how many objects the collector has frozen.
FREEZE_APP = """
import gc


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(gc.get_freeze_count()).encode()]
"""


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every path with a short page."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def no_cyclic_collection() -> Iterator[None]:
    """Turn the cyclic garbage collector off for the test (reference counting only)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _open_stream(port: int, path: str = "/sse") -> socket.socket:
    """Open a stream on a raw socket and read until its response has started."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    # The response has started once its first bytes (headers, retry) arrive.
    assert sock.recv(65536)
    return sock


def _wait_freed(ref: weakref.ref[Any], timeout: float = 10.0) -> None:
    """Wait until the object behind C{ref} has been freed."""
    deadline = time.monotonic() + timeout
    while ref() is not None:
        assert time.monotonic() < deadline, "the closed stream's client is still alive"
        time.sleep(0.01)


@pytest.mark.parametrize("ended_by", ["client", "server"])
def test_closed_stream_is_freed_without_the_cyclic_collector(
    no_cyclic_collection: None, ended_by: str
) -> None:
    """A stream that ends (the client leaves, its channel is closed) is freed by refcounting."""
    with serve(hello_app) as server:
        sock = _open_stream(server.port, "/sse?channel=room")
        server.wait_clients(1)
        ref = server.call(lambda: weakref.ref(next(iter(server.service.sse_resource.clients))))
        if ended_by == "client":
            sock.close()
        else:
            close("room")
        server.wait_clients(0)
        _wait_freed(ref)
        sock.close()


@pytest.mark.parametrize(("flags", "frozen"), [((), True), (("--gc-freeze", "false"), False)])
def test_server_start_freezes_what_is_alive(
    tmp_path: Path, flags: tuple[str, ...], frozen: bool
) -> None:
    """python -m wsgi_sse freezes the start-up objects by default; --gc-freeze false does not."""
    status, body, output = cli_page(FREEZE_APP, *flags, tmp_path=tmp_path)
    assert status == 200, output
    assert (int(body) > 1000) is frozen, body
    assert (int(body) == 0) is not frozen, body


def test_an_open_stream_leaves_few_objects_to_the_cyclic_collector() -> None:
    """
    An open stream, as a browser opens one (a query, a user agent, a
    referrer), leaves at most 17 objects for every full pass of the
    collector to go through: the connection, the channel, the request and
    its producer, no more of the request's header, query and routing state
    than the access log needs.
    """
    n = 50
    browser_like = (
        b"GET /sse?channel=a&channel=b HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nReferer: http://127.0.0.1/page\r\n"
        b"Accept: text/event-stream\r\nAccept-Language: en\r\nCache-Control: no-cache\r\n\r\n"
    )
    with serve(hello_app) as server:
        warm = _open_stream(server.port, "/sse?channel=a")
        server.wait_clients(1)
        gc.collect()
        before = len(gc.get_objects())
        socks = []
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(browser_like)
            assert sock.recv(65536)
            socks.append(sock)
        server.wait_clients(n + 1)
        gc.collect()
        # (The test's own sockets are tracked too.)
        per_stream = (len(gc.get_objects()) - before - n) / n
        for sock in [warm, *socks]:
            sock.close()
    print(f"\n{per_stream:.2f} tracked objects per open stream")
    assert per_stream <= 17
