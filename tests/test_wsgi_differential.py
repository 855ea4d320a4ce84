"""
One probe WSGI app under wsgi-sse and under waitress (the reference): the same
requests must give the app the same environ and the client the same answer.

Differences that are deliberate are listed below, each with its reason; any
other difference fails the test.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import waitress
from support import dechunk, serve

# -- deliberate differences ---------------------------------------------------

IGNORED_KEYS = {
    # Each server's own address and port, and the client's port.
    "SERVER_PORT",
    "REMOTE_PORT",
    # waitress names itself with its `server_name` setting ("waitress.invalid"
    # by default); twisted.web uses the Host header's name (PEP 3333 allows
    # either: apps should build URLs from HTTP_HOST first).
    "SERVER_NAME",
    # Extensions only waitress adds; no WSGI framework needs them.
    "SERVER_SOFTWARE",
    "REMOTE_HOST",
    "REQUEST_URI",
    "waitress.client_disconnected",
    "wsgi.file_wrapper",
    # Objects of each server's own types (both readable as PEP 3333 says).
    "wsgi.input",
    "wsgi.errors",
}

HOP_BY_HOP = ("Connection", "transfer-encoding", "Keep-Alive", "Upgrade", "TE", "Trailers")

STATUS_DIFFERENCES = {
    # (wsgi-sse, waitress).  Both Content-Length and Transfer-Encoding: a
    # request-smuggling vector; RFC 9112 lets a server refuse it, and
    # twisted.web does, where waitress ignores Content-Length.
    "length and chunked": (400, 200),
    # A transfer coding neither server implements: both refuse the body,
    # twisted.web with 400, waitress with 501.
    "gzip transfer coding": (400, 501),
    # The server-wide OPTIONS: twisted.web answers it itself (an empty 200),
    # waitress hands "*" to the app as PATH_INFO.
    "OPTIONS *": (200, 200),
    # Methods are case-sensitive (RFC 9110 9.1): "get" is a method of its
    # own, which twisted.web hands to the app as sent (the app answers it);
    # waitress refuses it with 400.
    "lower-case method": (200, 400),
    # A target in neither origin nor absolute form (RFC 9112 3.2: "page",
    # "*" but for OPTIONS, a CONNECT authority): twisted.web would route
    # "page" as "/age", so wsgi-sse refuses it; waitress hands it on.
    "relative target": (400, 200),
    "asterisk GET": (400, 200),
    "authority form": (400, 200),
}
# Errors of the app (PEP 3333), which both answer 500, each its own way.
APP_ERRORS = {
    *(f"app sets {name}" for name in HOP_BY_HOP),
    "start_response twice",
}
ENVIRON_NOT_COMPARED = set(STATUS_DIFFERENCES) | APP_ERRORS

ENVIRON_DIFFERENCES = {
    # Cookie headers sent separately (as HTTP/2 clients do) are joined with
    # "; ", the cookie-pair separator (RFC 6265, RFC 9113 8.2.3); waitress
    # joins them with ", ", which cookie parsers read as part of a value.
    "repeated Cookie": {"HTTP_COOKIE": ("a=1; b=2", "a=1, b=2")},
}


# -- the probe app ------------------------------------------------------------


def probe(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """Answer with the environ it was given (JSON), in the way the path asks for."""
    body = environ["wsgi.input"].read()
    seen: dict[str, Any] = {
        key: value for key, value in environ.items() if isinstance(value, (str, bool, int))
    }
    seen["wsgi.version"] = list(environ["wsgi.version"])
    seen["body"] = [len(body), hashlib.sha256(body).hexdigest()]
    for key in IGNORED_KEYS:
        seen.pop(key, None)
    out = json.dumps(seen, sort_keys=True).encode("utf-8")
    # For HEAD, which has no body: the environ's digest.
    digest = ("X-Environ", hashlib.sha256(out).hexdigest())
    path = environ["PATH_INFO"]
    if path.startswith("/hop-by-hop/"):
        # A header only the server may send (PEP 3333): an error of the app.
        start_response("200 OK", [("Content-Type", "text/plain"), (path[12:], "x")])
        yield b"sent anyway"
        return
    if path == "/twice":
        # start_response again without exc_info: an error of the app.
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        yield b"sent anyway"
        return
    if path == "/no-content":
        start_response("204 No Content", [("X-Seen", str(len(body)))])
        return
    if path == "/streamed":
        # No Content-Length: the server frames it (chunked, or close).
        start_response("200 OK", [("Content-Type", "application/json"), digest])
        yield out[:10]
        yield b""
        yield out[10:]
        return
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    headers += [("X-Latin-1", "caf\xe9"), digest]
    start_response("200 OK", headers)
    yield out


# -- the request corpus ---------------------------------------------------------


def _chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _request(head: str, body: bytes = b"", *, length: bool = True) -> bytes:
    lines = head.split("\n")
    lines[0] += " HTTP/1.1"
    lines.insert(1, "Host: example.test")
    lines.insert(2, "Connection: close")
    if body and length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


LARGE = bytes(range(256)) * 4096  # 1 MiB
BOUNDARY = "----probe1234"
MULTIPART = (
    (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    + bytes(range(256)) * 40
    + f"\r\n--{BOUNDARY}--\r\n".encode()
)

CORPUS: list[tuple[str, bytes]] = [
    ("GET", _request("GET /page")),
    ("GET root", _request("GET /")),
    ("query string", _request("GET /search?q=a+b&q=%C3%A9&flag&empty=")),
    ("encoded path", _request("GET /a%20b/c%2Fd/%E9t%C3%A9/%25")),
    ("absolute form", _request("GET http://example.test/abs/path?x=1")),
    ("fragment", _request("GET /frag#part")),
    ("HEAD", _request("HEAD /page")),
    ("DELETE", _request("DELETE /item/7")),
    ("PATCH", _request("PATCH /item/7", b'{"a": 1}')),
    ("custom method", _request("PROPFIND /dav")),
    ("OPTIONS", _request("OPTIONS /page")),
    ("TRACE", _request("TRACE /page")),
    ("lower-case method", _request("get /page")),
    ("POST empty", _request("POST /form\nContent-Length: 0")),
    ("POST form", _request("POST /form\nContent-Type: application/x-www-form-urlencoded", b"a=1")),
    ("POST large", _request("POST /upload\nContent-Type: application/octet-stream", LARGE)),
    (
        "POST chunked",
        _request("POST /upload\nTransfer-Encoding: chunked", _chunked(LARGE, 3001), length=False),
    ),
    (
        "POST chunked empty",
        _request("POST /upload\nTransfer-Encoding: chunked", b"0\r\n\r\n", length=False),
    ),
    (
        "POST multipart",
        _request(f"POST /up\nContent-Type: multipart/form-data; boundary={BOUNDARY}", MULTIPART),
    ),
    ("Expect 100-continue", _request("PUT /upload\nExpect: 100-continue", b"x" * 5000)),
    ("repeated headers", _request("GET /page\nX-Tag: a\nX-Tag: b\nAccept: text/html\nAccept: */*")),
    ("repeated Cookie", _request("GET /page\nCookie: a=1\nCookie: b=2")),
    ("latin-1 header", _request("GET /page\nX-Name: caf\xe9 \xfc")),
    ("very long header", _request("GET /page\nX-Long: " + "v" * 8000)),
    ("header case and dashes", _request("GET /page\nx-MiXeD-cAsE: 1\nContent-Type: text/x")),
    # Header names with underscores, which would pass for those with dashes
    # (a proxy's X-Forwarded-For, X-Auth-User): left out of the environ.
    ("underscore after dash", _request("GET /page\nX-Auth-User: alice\nX_Auth_User: admin")),
    ("underscore alone", _request("GET /page\nX_Forwarded_For: 10.0.0.1\nx_y: 1")),
    (
        "underscore repeated",
        _request("GET /page\nX-Tag: a\nX_Tag: b\nX-Tag: c\nX_TAG: d\nCookie: a=1\nCOOKIE_: b=2"),
    ),
    (
        "underscore body headers",
        _request("POST /f\nContent_Type: text/evil\nTransfer_Encoding: chunked\nContent_Length: 5"),
    ),
    ("HTTP/1.0", b"GET /old?x HTTP/1.0\r\nHost: example.test\r\n\r\n"),
    ("no content", _request("GET /no-content")),
    ("streamed answer", _request("GET /streamed")),
    ("HEAD streamed", _request("HEAD /streamed")),
    (
        "length and chunked",
        _request(
            "POST /upload\nContent-Length: 5\nTransfer-Encoding: chunked", b"3\r\nabc\r\n0\r\n\r\n"
        ),
    ),
    (
        "gzip transfer coding",
        _request(
            "POST /upload\nTransfer-Encoding: gzip, chunked", b"3\r\nabc\r\n0\r\n\r\n", length=False
        ),
    ),
    ("OPTIONS *", _request("OPTIONS *")),
    # Neither origin nor absolute form (RFC 9112 3.2).
    ("relative target", _request("GET page")),
    ("asterisk GET", _request("GET *")),
    ("authority form", _request("GET example.test:80")),
    # The app's own errors (PEP 3333): a 500 from both.
    *[(f"app sets {name}", _request(f"GET /hop-by-hop/{name}")) for name in HOP_BY_HOP],
    ("start_response twice", _request("GET /twice")),
]


# -- talking to both servers ----------------------------------------------------


class Answer:
    """One response, its framing undone."""

    def __init__(self, raw: bytes, method: str) -> None:
        self.interim: list[int] = []
        while True:
            head, _, raw = raw.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            self.status = int(status_line.split()[1])
            if self.status != 100:
                break
            self.interim.append(self.status)
        self.headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding") == "chunked":
            raw = dechunk(raw)
        self.body = b"" if method == "HEAD" else raw

    def environ(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


def _exchange(port: int | str, request: bytes) -> bytes:
    """Send C{request} to a loopback port, or a UNIX socket's path; read the answer to EOF."""
    if isinstance(port, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(20)
        sock.connect(port)
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    with sock:
        sock.sendall(request)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    return raw


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    """The probe app under wsgi-sse and under waitress, both on loopback."""
    reference = waitress.create_server(probe, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=reference.run, daemon=True)
    thread.start()
    try:
        with serve(probe) as server:
            yield server.port, reference.socket.getsockname()[1]
    finally:
        reference.close()
        reference.task_dispatcher.shutdown()


@pytest.mark.parametrize(("name", "request_bytes"), CORPUS, ids=[c[0] for c in CORPUS])
def test_the_app_sees_what_waitress_would_give_it(
    ports: tuple[int, int], name: str, request_bytes: bytes
) -> None:
    """The same request gives the same environ and answer under wsgi-sse and waitress."""
    method = request_bytes.split(b" ", 1)[0].decode()
    ours = Answer(_exchange(ports[0], request_bytes), method)
    theirs = Answer(_exchange(ports[1], request_bytes), method)
    expected = (500, 500) if name in APP_ERRORS else (theirs.status, theirs.status)
    assert (ours.status, theirs.status) == STATUS_DIFFERENCES.get(name, expected)
    assert ours.interim == theirs.interim
    if name in ENVIRON_NOT_COMPARED:
        return
    assert bool(ours.body) == bool(theirs.body)
    if ours.body:  # no body for HEAD and 204
        ours_seen, theirs_seen = ours.environ(), theirs.environ()
        for key, (mine, reference) in ENVIRON_DIFFERENCES.get(name, {}).items():
            assert (ours_seen.pop(key), theirs_seen.pop(key)) == (mine, reference)
        assert ours_seen == theirs_seen
    for header in ("content-type", "x-latin-1", "x-seen"):
        assert ours.headers.get(header) == theirs.headers.get(header), header
    if method == "HEAD":
        assert ours.headers.get("content-length") == theirs.headers.get("content-length")
        assert ours.headers["x-environ"] == theirs.headers["x-environ"]


UNIX_CORPUS = [
    c for c in CORPUS if c[0] in {"GET", "query string", "POST form", "POST chunked", "HTTP/1.0"}
]


@pytest.fixture(scope="module")
def unix_paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The probe app under wsgi-sse and under waitress, each on a UNIX socket."""
    directory = tmp_path_factory.mktemp("unix")
    ours, theirs = str(directory / "ours.sock"), str(directory / "theirs.sock")
    reference = waitress.create_server(probe, unix_socket=theirs, threads=2)
    thread = threading.Thread(target=reference.run, daemon=True)
    thread.start()
    try:
        with serve(probe, listen=f"unix:{ours}"):
            yield ours, theirs
    finally:
        reference.close()
        reference.task_dispatcher.shutdown()


@pytest.mark.parametrize(("name", "request_bytes"), UNIX_CORPUS, ids=[c[0] for c in UNIX_CORPUS])
def test_over_a_unix_socket_the_app_sees_what_waitress_would_give_it(
    unix_paths: tuple[str, str], name: str, request_bytes: bytes
) -> None:
    """Over a UNIX socket too: the same environ (C{REMOTE_ADDR} C{"localhost"}) and answer."""
    ours = Answer(_exchange(unix_paths[0], request_bytes), "GET")
    theirs = Answer(_exchange(unix_paths[1], request_bytes), "GET")
    assert ours.status == theirs.status == 200
    ours_seen, theirs_seen = ours.environ(), theirs.environ()
    assert ours_seen["REMOTE_ADDR"] == "localhost"
    assert ours_seen == theirs_seen
