"""Request bodies: a limit Twisted itself does not have."""

from __future__ import annotations

import hashlib
import select
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


def digest_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Read the body, answer with its length and SHA-256."""
    digest = _digest(environ["wsgi.input"].read())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(digest)))])
    return [digest]


def _digest(body: bytes) -> bytes:
    return b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def _chunked(body: bytes, size: int, extension: bytes = b"") -> bytes:
    """C{body} in chunks of C{size} bytes, each size line with C{extension}, then the last chunk."""
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks)


def _post_chunked(
    port: int, chunks: bytes, end: bytes = b"0\r\n\r\n", path: bytes = b"/upload"
) -> bytes:
    """
    POST C{chunks} then C{end} chunked to C{path}, in pieces, stopping
    early if the server answers first; return its answer.
    """
    data = b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % path
    data += b"Transfer-Encoding: chunked\r\n\r\n"
    data += chunks + end
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for start in range(0, len(data), 16384):
            if select.select([sock], [], [], 0)[0]:
                break  # answered already: the rest would not be read
            try:
                sock.sendall(data[start : start + 16384])
            except OSError:
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_chunked_body_counts_its_decoded_bytes_against_the_limit() -> None:
    """
    A chunked body up to max_request_body reaches the app whole, however it
    is cut into chunks (1-byte chunks are six times its size on the wire,
    chunk extensions and a trailer add more); one byte more is refused.
    """
    body = bytes(range(256)) * 4
    with serve(digest_app, max_request_body=1024) as server:
        for sent, chunks in (
            (body, _chunked(body, 1024)),
            (body, _chunked(body, 1)),
            (body[:200], _chunked(body[:200], 1)),
            (body, _chunked(body, 7, b";name=value")),
        ):
            answer = _post_chunked(server.port, chunks, b"0\r\nX-Trailer: t\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            assert answer.endswith(_digest(sent))
        answer = _post_chunked(server.port, _chunked(body + b"!", 1))
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert answer.endswith(b"\r\n\r\nrequest body too large\n")


def test_chunked_body_framing_is_bounded() -> None:
    """
    Chunk framing beyond the body's own size plus 64 KiB is refused, well
    under max_request_body: 1-byte chunks, or chunks padded with long
    extensions; a large body in 5-byte chunks (as much framing as data) is
    still read whole.
    """
    calls: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(1)
        return digest_app(environ, start_response)

    with serve(
        app, max_request_body=10 * 1024 * 1024, publish_path="/publish", publish_secret="s" * 32
    ) as server:
        for chunks in (
            _chunked(b"x" * 1024 * 1024, 1),
            _chunked(b"x" * 100_000, 1, b";" + b"e" * 1000),
        ):
            answer = _post_chunked(server.port, chunks)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert answer.endswith(b"\r\n\r\nchunked request body framing too large\n")
        # The publish endpoint (a limit of its own, 64 KiB) answers in JSON.
        answer = _post_chunked(server.port, _chunked(b"x" * 60000, 1), path=b"/publish")
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert answer.endswith(b'\r\n\r\n{"error": "chunked body framing too large"}\n')
        assert calls == []
        body = bytes(range(250)) * 1000
        answer = _post_chunked(server.port, _chunked(body, 5))
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert answer.endswith(_digest(body))


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
