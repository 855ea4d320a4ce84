"""Request bodies: a limit Twisted itself does not have."""

from __future__ import annotations

import socket
from typing import Any

from support import http_request, serve

from wsgi_sse import broadcast


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Read the body, answer hello."""
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_request_body_over_the_limit_is_refused_before_it_is_read() -> None:
    """A declared or chunked body over max_request_body gets 413; smaller ones reach the app."""
    with serve(hello_app, max_request_body=1000) as server:
        with server.stream() as stream:
            server.wait_clients(1)
            status, _, body = http_request(server.port, "POST", "/upload", body=b"x" * 1001)
            assert (status, body) == (413, b"request body too large\n")
            # Declared as 10 GB, never sent: refused at once, not spooled.
            code, _, body = http_request(
                server.port, "POST", "/upload", headers={"Content-Length": str(10**10)}
            )
            assert (code, body) == (413, b"request body too large\n")
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"200\r\n"
                    + b"y" * 0x200
                    + b"\r\n"
                    + b"400\r\n"
                    + b"y" * 0x400
                    + b"\r\n"
                )
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 413 ")
            assert http_request(server.port, "POST", "/upload", body=b"x" * 1000)[0] == 200
            broadcast("undisturbed")
            assert stream.wait_events(1)[0].data == "undisturbed"


def test_default_request_body_limit_is_64_mib() -> None:
    """Without configuration a request body may have at most 64 MiB."""
    with serve(hello_app) as server:
        assert server.service.site.max_request_body == 64 * 1024 * 1024


def _raw_answer(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_too_many_or_too_large_request_headers_get_431_with_a_reason() -> None:
    """501 headers, or over 16 KiB of short header lines, get 431 with a reason (not a bare 400)."""
    with serve(hello_app) as server:
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(501))
        answer = _raw_answer(server.port, b"GET /page HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert answer.endswith(b"too many request headers (more than 500)\n")
        large = b"".join(b"X-Header-%03d: %s\r\n" % (i, b"v" * 100) for i in range(170))
        answer = _raw_answer(server.port, b"GET /sse HTTP/1.1\r\nHost: x\r\n" + large + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert answer.endswith(b"request headers too large (more than 16384 bytes)\n")
        # 500 headers (Host and Connection among them) are still served.
        fine = b"".join(b"X-H%d: v\r\n" % i for i in range(498))
        answer = _raw_answer(
            server.port, b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fine + b"\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]


def test_a_path_limit_holds_for_a_target_in_absolute_form() -> None:
    """POST http://host/sse (absolute form) is refused like POST /sse: the stream takes no body."""
    with serve(hello_app) as server:
        for target in (b"/sse", b"http://example.test/sse", b"http://example.test/sse?x#y"):
            answer = _raw_answer(
                server.port,
                b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
            )
            assert answer.startswith(b"HTTP/1.1 413 "), (target, answer[:100])
            assert answer.endswith(b'{"error": "this path takes no request body"}\n'), target
