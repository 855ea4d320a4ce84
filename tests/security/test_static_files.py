"""
Static files, as the Django example serves them (C{STATIC_ROOT} through
Twisted, started exactly as its README says): many or overlapping byte
ranges, malformed and hidden paths, validators (Last-Modified, ETag).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_django_example import EXAMPLE, running_example

CSS = "/static/knocks/knocks.css"
SOURCE = EXAMPLE / "knocks" / "static" / "knocks" / "knocks.css"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The Django example in a subprocess, from a fresh data directory; yields its port."""
    with running_example(tmp_path_factory.mktemp("static")) as port:
        yield port


def get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """A request over a raw socket (the path sent exactly as given); status, headers, body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


def test_overlapping_ranges_never_amplify_a_file(example: int) -> None:
    """200 overlapping ranges are merged into one: the answer is the file, not 200 copies."""
    size = len(SOURCE.read_bytes())
    status, headers, body = get(example, CSS, {"Range": "bytes=" + ",".join(["0-"] * 200)})
    print(f"\n  200 x '0-' on a {size}-byte file: {status}, {len(body)} bytes")
    assert status == 206
    assert headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert body == SOURCE.read_bytes()
    # Overlapping and adjacent ranges merge; disjoint ones stay apart.
    status, headers, body = get(example, CSS, {"Range": "bytes=10-20,0-12,21-30"})
    assert (status, headers["content-range"], body) == (
        206,
        f"bytes 0-30/{size}",
        SOURCE.read_bytes()[:31],
    )
    # A suffix longer than the file is the whole file; a malformed Range is ignored.
    status, headers, body = get(example, CSS, {"Range": "bytes=-100000"})
    assert (status, headers["content-range"]) == (206, f"bytes 0-{size - 1}/{size}")
    assert get(example, CSS, {"Range": "bytes=5-2"})[0] == 200
    status, headers, body = get(example, CSS, {"Range": "bytes=0-1,10-11"})
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
    assert body.count(b"Content-range: bytes ") == 2


def test_many_ranges_are_refused_at_once(example: int) -> None:
    """1,000 small disjoint ranges get 416 at once instead of tying up the connection."""
    ranges = ",".join(f"{i}-{i}" for i in range(0, 2000, 2))
    start = time.monotonic()
    status, headers, body = get(example, CSS, {"Range": f"bytes={ranges}"})
    print(f"\n  1,000 ranges: {status} after {(time.monotonic() - start) * 1000:.1f} ms")
    assert status == 416
    assert headers["content-range"] == f"bytes */{len(SOURCE.read_bytes())}"
    # A handful of ranges is still served.
    status, _, body = get(example, CSS, {"Range": "bytes=0-0,2-2,4-4,6-6"})
    assert status == 206 and body.count(b"Content-range: bytes ") == 4


@pytest.mark.parametrize(
    "path",
    [
        "/static/%00",
        "/static/knocks/%00",
        "/static/knocks/knocks.css%00",
        "/static/knocks/knocks.css%00.png",
        "/static/%00/knocks.css",
        "/static/knocks/%ff%fe",
        "/static/..%2f..%2fknockproject%2fsettings.py",
        "/static/%2e%2e/%2e%2e/manage.py",
        "/static/knocks/..%5c..%5cmanage.py",
        "/static/admin/",
    ],
)
def test_bad_static_paths_get_404(example: int, path: str) -> None:
    """NUL bytes, undecodable names, traversal and directories answer 404, never 500."""
    status, _, body = get(example, path)
    assert status == 404, (path, body[:200])
    assert b"SECRET" not in body and b"import" not in body
    # The server is still serving files.
    assert get(example, CSS)[0] == 200


def test_range_on_a_missing_file_is_404(example: int, tmp_path: Path) -> None:
    """A Range on a file that does not exist is 404, not a range answer."""
    assert get(example, "/static/knocks/nope.css", {"Range": "bytes=0-10"})[0] == 404


def test_static_files_mounted_by_hand(tmp_path: Path) -> None:
    """StaticFiles mounted through resources= serves files, merges ranges and 404s bad paths."""
    from support import serve

    from wsgi_sse import StaticFiles

    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 400)  # 100 KiB
    (tmp_path / "sub").mkdir()

    def app(environ: dict[str, object], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    with serve(app, resources={"/files": StaticFiles(str(tmp_path))}) as server:
        data = (tmp_path / "big.bin").read_bytes()
        status, _, body = get(server.port, "/files/big.bin")
        assert (status, body) == (200, data)
        status, _, body = get(
            server.port, "/files/big.bin", {"Range": "bytes=" + ",".join(["0-"] * 200)}
        )
        assert (status, len(body)) == (206, len(data))
        status, _, body = get(server.port, "/files/big.bin", {"Range": "bytes=-10"})
        assert (status, body) == (206, data[-10:])
        for path in ("/files/%00", "/files/big.bin%00", "/files/sub/", "/files/%c0%af"):
            assert get(server.port, path)[0] == 404, path
        assert b"app" in get(server.port, "/elsewhere")[2]


def _serving_files(tmp_path: Path, **options: Any) -> Any:
    from support import serve

    from wsgi_sse import StaticFiles

    def app(environ: dict[str, object], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    return serve(app, resources={"/files": StaticFiles(str(tmp_path), **options)})


# Large enough that the server is still reading it when the test changes it:
# a client that has not read yet holds a few MiB in socket buffers at most.
_BIG = 24 * 1024 * 1024


def _begin(port: int, request: bytes) -> tuple[socket.socket, dict[str, str], bytes]:
    """Send C{request} from a small-buffered client and read only the answer's head."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(1)
    headers = {}
    for line in raw.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return sock, headers, raw


def test_a_file_growing_while_sent_gets_its_announced_length(tmp_path: Path) -> None:
    """Bytes appended while a file is sent are not sent: the next answer is framed right."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * _BIG)
    with _serving_files(tmp_path) as server:
        sock, headers, _ = _begin(server.port, b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        with sock:
            assert int(headers["content-length"]) == _BIG
            with path.open("ab") as f:
                f.write(b"EXTRA" * 1000)
            body = b""
            while len(body) < _BIG:
                body += sock.recv(1 << 20)
            # The same connection answers the next request, framed as it should be.
            sock.sendall(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            rest = b""
            while data := sock.recv(65536):
                rest += data
        assert body == b"a" * _BIG
        assert rest.startswith(b"HTTP/1.1 200 "), rest[:40]
        assert b"app" in rest


@pytest.mark.parametrize("ranges", [None, "bytes=0-", "bytes=0-10,100-"])
def test_a_file_shrinking_while_sent_cuts_the_response(tmp_path: Path, ranges: str | None) -> None:
    """A file truncated while sent closes the connection short of its length; the server goes on."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * _BIG)
    with _serving_files(tmp_path) as server:
        extra = f"Range: {ranges}\r\n" if ranges else ""
        request = f"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
        sock, headers, _ = _begin(server.port, request)
        with sock:
            length = int(headers["content-length"])
            path.write_bytes(b"")  # truncated
            received = 0
            while data := sock.recv(1 << 20):  # until the server closes it
                received += len(data)
        assert received < length
        # The reactor is serving (File spun forever on several ranges).
        assert server.call(lambda: "alive") == "alive"
        assert b"app" in get(server.port, "/elsewhere")[2]


def test_if_range_that_does_not_match_gets_the_whole_file(tmp_path: Path) -> None:
    """A Range is honoured with no If-Range or one naming the Last-Modified date (or ETag)."""
    data = bytes(range(100))
    (tmp_path / "a.bin").write_bytes(data)
    with _serving_files(tmp_path) as server:
        status, headers, body = get(server.port, "/files/a.bin", {"Range": "bytes=0-9"})
        assert (status, body) == (206, data[:10])
        modified = headers["last-modified"]
        for if_range, expected in [
            (modified, (206, data[:10])),
            ('"an-etag"', (200, data)),
            ('W/"an-etag"', (200, data)),
            ("Thu, 01 Jan 2015 00:00:00 GMT", (200, data)),
            ("not a date", (200, data)),
        ]:
            for ranges in ("bytes=0-9", "bytes=0-9,20-29"):
                status, _, body = get(
                    server.port, "/files/a.bin", {"Range": ranges, "If-Range": if_range}
                )
                if expected[0] == 206 and "," in ranges:
                    assert status == 206 and body.count(b"Content-range") == 2
                    continue
                assert (status, body) == expected, (if_range, ranges)


@pytest.mark.parametrize("since", [";", "; length=5"])
def test_a_malformed_if_modified_since_is_ignored(tmp_path: Path, since: str) -> None:
    """An If-Modified-Since that is no date gets the file (RFC 9110 13.1.3), never a 500."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    with _serving_files(tmp_path) as server:
        status, _, body = get(server.port, "/files/a.txt", {"If-Modified-Since": since})
        assert (status, body) == (200, b"hello")
        status, headers, _ = get(server.port, "/files/a.txt")
        modified = headers["last-modified"]
        assert get(server.port, "/files/a.txt", {"If-Modified-Since": modified})[0] == 304


def test_files_of_unknown_type_are_not_html(tmp_path: Path) -> None:
    """A file whose name maps to no type is application/octet-stream, not text/html."""
    page = b"<script>alert(document.cookie)</script>"
    for name in ("upload.xyzzy", "noextension", "app.js.map"):
        (tmp_path / name).write_bytes(page)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "README").write_bytes(page)
    with _serving_files(tmp_path) as server:
        for path in ("upload.xyzzy", "noextension", "app.js.map", "sub/README"):
            status, headers, body = get(server.port, f"/files/{path}")
            assert (status, body) == (200, page)
            assert headers["content-type"] == "application/octet-stream", path


def _hidden_tree(root: Path) -> None:
    """Files and directories whose names begin with a dot, beside visible ones."""
    (root / ".env").write_bytes(b"SECRET_KEY=env")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[remote] SECRET")
    (root / "sub").mkdir()
    (root / "sub" / ".htpasswd").write_bytes(b"admin:SECRET")
    (root / "sub" / "visible.txt").write_bytes(b"visible")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "visible.txt").write_bytes(b"in a hidden directory")


_HIDDEN_PATHS = {
    "/files/.env": b"SECRET_KEY=env",
    "/files/.git/config": b"[remote] SECRET",
    "/files/sub/.htpasswd": b"admin:SECRET",
    "/files/.hidden/visible.txt": b"in a hidden directory",
    "/files/%2eenv": b"SECRET_KEY=env",
    "/files/%2Egit/config": b"[remote] SECRET",
    "/files/sub/%2ehtpasswd": b"admin:SECRET",
    "/files/%2ehidden/visible.txt": b"in a hidden directory",
}


def test_hidden_files_are_not_found(tmp_path: Path) -> None:
    """A path segment beginning with a dot answers exactly what a missing file answers."""
    _hidden_tree(tmp_path)
    with _serving_files(tmp_path) as server:

        def answer(path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
            status, headers, body = get(server.port, path, method=method)
            headers.pop("date", None)
            return status, headers, body

        missing = answer("/files/nothing-here")
        missing_head = answer("/files/nothing-here", "HEAD")
        assert missing[0] == 404
        for path in [*_HIDDEN_PATHS, "/files/.git/", "/files/.git", "/files/.nothing-here"]:
            assert answer(path) == missing, path
            assert answer(path, "HEAD") == missing_head, path
        assert answer("/files/sub/visible.txt")[::2] == (200, b"visible")
        # A directory or a name no file can have looks missing too.
        (tmp_path / "listed").mkdir()
        for path in ("/files/listed/", "/files/a%00b", "/files/%ff", "/files/nothing/here"):
            assert answer(path) == missing, path


def test_hidden_files_are_served_when_asked(tmp_path: Path) -> None:
    """StaticFiles(hidden=True) serves dot-files at every depth; .. still never leaves."""
    root = tmp_path / "root"
    root.mkdir()
    _hidden_tree(root)
    (tmp_path / "outside.txt").write_bytes(b"outside")
    with _serving_files(root, hidden=True) as server:
        for path, content in _HIDDEN_PATHS.items():
            assert get(server.port, path)[::2] == (200, content), path
        for path in ("/files/../outside.txt", "/files/%2e%2e/outside.txt", "/files/.git/../.env"):
            assert get(server.port, path)[0] == 404, path


def test_files_have_an_etag_that_follows_them(tmp_path: Path) -> None:
    """ETag on 200, 206 and HEAD answers; the same while the file is; new when it changes."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"0123456789")
    with _serving_files(tmp_path) as server:
        status, headers, _ = get(server.port, "/files/a.txt")
        etag = headers["etag"]
        assert status == 200 and etag.startswith('"') and etag.endswith('"')
        assert get(server.port, "/files/a.txt")[1]["etag"] == etag
        assert get(server.port, "/files/a.txt", method="HEAD")[1]["etag"] == etag
        status, headers, _ = get(server.port, "/files/a.txt", {"Range": "bytes=0-1"})
        assert (status, headers["etag"]) == (206, etag)
        # Same size, another modification time; then another size.
        path.write_bytes(b"abcdefghij")
        mtime = path.stat().st_mtime_ns
        os.utime(path, ns=(mtime, mtime + 1_000_000_000))
        changed = get(server.port, "/files/a.txt")[1]["etag"]
        assert changed != etag
        path.write_bytes(b"abcdefghijk")
        os.utime(path, ns=(mtime, mtime + 1_000_000_000))
        assert get(server.port, "/files/a.txt")[1]["etag"] not in (etag, changed)


def test_if_none_match_answers_304(tmp_path: Path) -> None:
    """If-None-Match naming the ETag (a list, *, W/) is a 304; it overrides If-Modified-Since."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    with _serving_files(tmp_path) as server:
        _, headers, _ = get(server.port, "/files/a.txt")
        etag, modified = headers["etag"], headers["last-modified"]
        for value in (etag, f'"other", {etag}', "*", f"W/{etag}", f'W/"x",W/{etag}'):
            for method in ("GET", "HEAD"):
                status, headers, body = get(
                    server.port, "/files/a.txt", {"If-None-Match": value}, method
                )
                assert (status, body, headers["etag"]) == (304, b"", etag), (value, method)
                assert headers["last-modified"] == modified
        # Not matching: the file, even with an If-Modified-Since that would be a 304.
        for value in ('"other"', etag.replace('"', '"1', 1), 'W/"other"', f"{etag}x"):
            status, headers, body = get(
                server.port, "/files/a.txt", {"If-None-Match": value, "If-Modified-Since": modified}
            )
            assert (status, body, headers["etag"]) == (200, b"hello", etag), value
        # Matching: a 304, even with an If-Modified-Since that alone would get the file.
        old = "Thu, 01 Jan 2015 00:00:00 GMT"
        status, _, body = get(
            server.port, "/files/a.txt", {"If-None-Match": etag, "If-Modified-Since": old}
        )
        assert (status, body) == (304, b"")


def test_if_range_with_an_etag(tmp_path: Path) -> None:
    """If-Range with the current ETag gets the range; a stale or weak one the whole file."""
    path = tmp_path / "a.bin"
    data = bytes(range(100))
    path.write_bytes(data)
    with _serving_files(tmp_path) as server:
        etag = get(server.port, "/files/a.bin")[1]["etag"]
        for ranges in ("bytes=0-9", "bytes=0-9,20-29"):
            status, headers, body = get(
                server.port, "/files/a.bin", {"Range": ranges, "If-Range": etag}
            )
            assert (status, headers["etag"]) == (206, etag), ranges
            if "," in ranges:
                assert body.count(b"Content-range") == 2
            else:
                assert body == data[:10]
            status, _, body = get(
                server.port, "/files/a.bin", {"Range": ranges, "If-Range": f"W/{etag}"}
            )
            assert (status, body) == (200, data), ranges
        # The file changes (same size): the old tag gets the whole new file.
        new = bytes(reversed(data))
        path.write_bytes(new)
        mtime = path.stat().st_mtime_ns
        os.utime(path, ns=(mtime, mtime + 1_000_000_000))
        status, headers, body = get(
            server.port, "/files/a.bin", {"Range": "bytes=0-9", "If-Range": etag}
        )
        assert (status, body) == (200, new)
        assert headers["etag"] != etag
        status, _, body = get(
            server.port, "/files/a.bin", {"Range": "bytes=0-9", "If-Range": headers["etag"]}
        )
        assert (status, body) == (206, new[:10])


def test_if_match_and_if_unmodified_since_answer_412(tmp_path: Path) -> None:
    """
    If-Match naming neither * nor the ETag (strongly) is a 412, as is a
    file modified after If-Unmodified-Since; If-Match wins over it, and a
    date that is not one is ignored.
    """
    path = tmp_path / "a.txt"
    path.write_bytes(b"hello")
    with _serving_files(tmp_path) as server:
        _, headers, _ = get(server.port, "/files/a.txt")
        etag, modified = headers["etag"], headers["last-modified"]
        old = "Thu, 01 Jan 2015 00:00:00 GMT"
        for value in (etag, f'"other", {etag}', "*"):
            status, _, body = get(server.port, "/files/a.txt", {"If-Match": value})
            assert (status, body) == (200, b"hello"), value
        for value in ('"other"', f"W/{etag}", etag.replace('"', '"1', 1)):
            for method in ("GET", "HEAD"):
                status, headers, body = get(
                    server.port, "/files/a.txt", {"If-Match": value}, method
                )
                assert status == 412, (value, method)
                assert body == (b"" if method == "HEAD" else b"Precondition Failed\n")
        # A range is never sent when the precondition fails.
        status, _, _ = get(server.port, "/files/a.txt", {"If-Match": '"x"', "Range": "bytes=0-1"})
        assert status == 412
        for since in (modified, "Fri, 01 Jan 2100 00:00:00 GMT", "not a date"):
            status, _, body = get(server.port, "/files/a.txt", {"If-Unmodified-Since": since})
            assert (status, body) == (200, b"hello"), since
        status, _, _ = get(server.port, "/files/a.txt", {"If-Unmodified-Since": old})
        assert status == 412
        # If-Match holds: If-Unmodified-Since is not evaluated (RFC 9110, 13.2.2).
        status, _, body = get(
            server.port, "/files/a.txt", {"If-Match": etag, "If-Unmodified-Since": old}
        )
        assert (status, body) == (200, b"hello")
        # The file changes: the old tag no longer matches.
        path.write_bytes(b"HELLO")
        mtime = path.stat().st_mtime_ns
        os.utime(path, ns=(mtime, mtime + 1_000_000_000))
        assert get(server.port, "/files/a.txt", {"If-Match": etag})[0] == 412
