"""Request bodies reach real WSGI frameworks whole, however the client framed them."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import bottle
import flask
import pytest
from support import dechunk, serve

BODY = bytes(range(256)) * 195 + b"end of body" + b"." * 69  # 50,000 bytes
assert len(BODY) == 50_000


def flask_app() -> Any:
    app = flask.Flask("upload")

    @app.post("/upload")
    def upload() -> dict[str, Any]:
        data = flask.request.get_data()
        return {
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_length": flask.request.environ.get("CONTENT_LENGTH"),
        }

    return app


def bottle_app() -> Any:
    app = bottle.Bottle()

    @app.post("/upload")
    def upload() -> dict[str, Any]:
        data = bottle.request.body.read()
        return {
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_length": bottle.request.environ.get("CONTENT_LENGTH"),
        }

    return app


def _chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _post_chunked(port: int, body: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        # Several sends, chunks of odd sizes: framed the way a streaming client does.
        framed = _chunked(body, 4093)
        for i in range(0, len(framed), 16384):
            sock.sendall(framed[i : i + 16384])
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, _, content = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), content


@pytest.fixture(params=["flask", "bottle"])
def app_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Each framework's view reading the whole body."""
    yield {"flask": flask_app, "bottle": bottle_app}[request.param]


def test_chunked_upload_reaches_the_view_whole(app_factory: Callable[[], Any]) -> None:
    """A 50,000-byte chunked upload reaches a Flask or Bottle view whole, with its real length."""
    import json

    with serve(app_factory()) as server:
        status, content = _post_chunked(server.port, BODY)
    assert status == 200, content
    if content[:1] not in (b"{", b"["):  # Twisted may have chunked the answer
        content = dechunk(content)
    seen = json.loads(content)
    assert seen == {
        "length": 50_000,
        "sha256": hashlib.sha256(BODY).hexdigest(),
        "content_length": "50000",
    }


def test_a_body_without_a_length_gets_its_length() -> None:
    """A body that came without Content-Length (HTTP/2 allows it) is given its real length."""
    from io import BytesIO

    from twisted.web.http_headers import Headers

    from wsgi_sse._wsgi import complete_environ

    class Received:
        content = BytesIO(b"x" * 1234)
        requestHeaders = Headers()

    environ: dict[str, Any] = {"CONTENT_LENGTH": "", "CONTENT_TYPE": ""}
    complete_environ(environ, Received())  # type: ignore[arg-type]
    assert environ == {"CONTENT_LENGTH": "1234", "wsgi.input_terminated": True}
    empty: dict[str, Any] = {"CONTENT_LENGTH": "", "CONTENT_TYPE": ""}
    Received.content = BytesIO()
    complete_environ(empty, Received())  # type: ignore[arg-type]
    assert empty == {"wsgi.input_terminated": True}


def test_the_body_stays_readable_after_the_client_went_away() -> None:
    """
    A client that sent its whole body and left: the application, still
    running, reads that body from wsgi.input (as waitress lets it), rather
    than finding the stream closed under it.
    """
    import threading

    from support import wait_until

    read: dict[str, Any] = {}
    started = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        started.set()
        # write() raises once the server has seen the client go.
        try:
            for _ in range(1000):
                write(b".")
                threading.Event().wait(0.01)
        except ConnectionError:
            pass
        try:
            read["body"] = environ["wsgi.input"].read()
        except Exception as error:
            read["error"] = repr(error)
        return []

    with serve(app) as server:
        for attempt in range(3):
            started.clear()
            read.clear()
            body = b"name=Ada&attempt=%d" % attempt
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(
                b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert started.wait(10)
            sock.close()
            wait_until(lambda: bool(read), timeout=15)
            assert read == {"body": body}
