"""
StaticFiles against nginx: the same file, the same conditional and range
requests, answer by answer (the status; for a 206 its Content-Range and
bytes, or each part's for multipart/byteranges; for a 200 the bytes).

Each server's own ETag and Last-Modified (first GET) build the conditions
sent to it: the two ETag formats differ. Where nginx departs from RFC 9110
(or the RFC allows either answer), wsgi-sse's answer is checked against the
RFC instead, and the comment says how nginx differs.
"""

from __future__ import annotations

import email.utils
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from support import free_port, http_request, serve, wait_for_port

from wsgi_sse import StaticFiles

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DATA = b"".join(b"%04d the quick brown fox jumps over the lazy dog\n" % i for i in range(80))
FILE, EMPTY = "/files/data.txt", "/files/empty.txt"

Answer = tuple[object, ...]


@dataclass
class Server:
    """A server of the directory, and the validators it gave the file."""

    port: int
    dates: dict[str, str] = field(default_factory=dict)
    """Its ETag (C{etag}), Last-Modified (C{lm}), and that date a day C{earlier} and C{later}."""

    def learn(self) -> None:
        """GET the file once and keep its validators."""
        status, headers, body = http_request(self.port, "GET", FILE)
        assert (status, body) == (200, DATA), status
        when = email.utils.parsedate_to_datetime(headers["last-modified"])
        day = timedelta(days=1)
        self.dates = {
            "etag": headers["etag"],
            "lm": headers["last-modified"],
            "earlier": email.utils.format_datetime(when - day, usegmt=True),
            "later": email.utils.format_datetime(when + day, usegmt=True),
        }


def nginx_config(tmp: Path, port: int, root: Path) -> Path:
    """A whole nginx.conf serving C{root} on 127.0.0.1:C{port}, everything else in C{tmp}."""
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, the workers would run as nobody, who cannot enter pytest's 0700 directories.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
{temp}
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
""")
    return conf


def not_found(environ: dict[str, object], start_response: Any) -> list[bytes]:
    """The WSGI app beside the files (never asked)."""
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not here"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """nginx and wsgi-sse serving one directory; yields (nginx, wsgi-sse)."""
    if not os.access(NGINX, os.X_OK):
        pytest.fail(f"nginx is required for this comparison and {NGINX} is not executable")
    tmp = tmp_path_factory.mktemp("nginx")
    files = tmp / "www" / "files"
    files.mkdir(parents=True)
    (files / "data.txt").write_bytes(DATA)
    (files / "empty.txt").write_bytes(b"")
    # A whole second an hour ago: a strong Last-Modified (RFC 9110 8.8.2.2), "later" is future.
    then = int(time.time()) - 3600
    for name in ("data.txt", "empty.txt"):
        os.utime(files / name, (then, then))
    port = free_port()
    conf = nginx_config(tmp, port, tmp / "www")
    command = [NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_for_port(port, proc)
        except AssertionError as e:
            raise AssertionError(f"{e}\nnginx: {(tmp / 'error.log').read_text()}") from None
        with serve(not_found, resources={"/files": StaticFiles(str(files))}) as ours:
            pair = Server(port), Server(ours.port)
            for server in pair:
                server.learn()
            yield pair
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def byteranges(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (Content-Range, bytes) of each part of a multipart/byteranges body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        ranges = [
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-range:")
        ]
        parts.append((ranges[0], data.removesuffix(b"\r\n")))
    return parts


class Case(NamedTuple):
    method: str
    headers: dict[str, str]
    path: str
    rfc: tuple[Answer, ...]
    """Where the two differ and nginx is not plainly right: what RFC 9110 lets wsgi-sse answer."""


def answer(server: Server, case: Case) -> Answer:
    """The comparable part of C{server}'s answer to C{case}."""
    headers = {k: v.format(**server.dates) for k, v in case.headers.items()}
    status, got, body = http_request(server.port, case.method, case.path, headers=headers)
    if status == 206 and got.get("content-type", "").startswith("multipart/byteranges"):
        return (206, byteranges(got["content-type"], body))
    if status == 206:
        return (206, got.get("content-range"), body)
    if status == 416:
        return (416, got.get("content-range"))
    return (status, body) if status == 200 else (status,)


def case(
    name: str,
    method: str = "GET",
    *,
    path: str = FILE,
    rfc: tuple[Answer, ...] = (),
    **headers: str,
) -> object:
    """One request (header names with C{_} for C{-}; values formatted with L{Server.dates})."""
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return pytest.param(Case(method, named, path, rfc), id=name)


WHOLE, NO_BODY, NOT_MODIFIED = (200, DATA), (200, b""), (304,)

CASES = [
    case("plain"),
    case("head", "HEAD"),
    # If-None-Match: weak comparison (RFC 9110 13.1.2).
    case("inm-match", If_None_Match="{etag}"),
    case("inm-other", If_None_Match='"nope"'),
    case("inm-star", If_None_Match="*"),
    case("inm-weak", If_None_Match="W/{etag}"),
    case("inm-list", If_None_Match='"nope", {etag}'),
    # If-Match: strong comparison (13.1.1).
    case("im-match", If_Match="{etag}"),
    case("im-other", If_Match='"nope"'),
    case("im-star", If_Match="*"),
    case("im-weak", If_Match="W/{etag}"),
    case("im-list", If_Match='"nope", {etag}'),
    case("ims-equal", If_Modified_Since="{lm}"),
    case("ims-earlier", If_Modified_Since="{earlier}"),
    # nginx (if_modified_since exact, its default) sends the file unless the date is
    # Last-Modified exactly; 13.1.3: modified "earlier or equal to the date" -> 304.
    case("ims-later", If_Modified_Since="{later}", rfc=(NOT_MODIFIED,)),
    case("ims-junk", If_Modified_Since="not a date"),
    case("ius-earlier", If_Unmodified_Since="{earlier}"),
    case("ius-equal", If_Unmodified_Since="{lm}"),
    case("ius-later", If_Unmodified_Since="{later}"),
    # nginx answers 412; 13.1.4: a recipient MUST ignore a value that is not a date.
    case("ius-junk", If_Unmodified_Since="not a date", rfc=(WHOLE,)),
    # Precedence (13.2.2). nginx evaluates If-Unmodified-Since even beside an If-Match
    # (412); 13.1.4: MUST ignore it when If-Match is present (step 1 true -> step 3).
    case("im-match+ius-earlier", If_Match="{etag}", If_Unmodified_Since="{earlier}", rfc=(WHOLE,)),
    case("im-other+ius-later", If_Match='"nope"', If_Unmodified_Since="{later}"),
    # nginx sends the file when If-Modified-Since says modified, whatever If-None-Match
    # says; 13.1.3: MUST ignore If-Modified-Since when If-None-Match is present (step 3: 304).
    case(
        "inm-match+ims-earlier",
        If_None_Match="{etag}",
        If_Modified_Since="{earlier}",
        rfc=(NOT_MODIFIED,),
    ),
    case("inm-other+ims-equal", If_None_Match='"nope"', If_Modified_Since="{lm}"),
    case("head-inm-match", "HEAD", If_None_Match="{etag}"),
    case("head-inm-other", "HEAD", If_None_Match='"nope"'),
    case("head-im-other", "HEAD", If_Match='"nope"'),
    case("head-ims-equal", "HEAD", If_Modified_Since="{lm}"),
    case("head-ius-earlier", "HEAD", If_Unmodified_Since="{earlier}"),
    # nginx answers a HEAD with a Range 206; 14.2: "GET is the only method for which range
    # handling is defined", a server MUST ignore Range on others.
    case("head-range", "HEAD", Range="bytes=0-9", rfc=(NO_BODY,)),
    case("range-0-9", Range="bytes=0-9"),
    case("range-suffix", Range="bytes=-5"),
    case("range-open", Range="bytes=10-"),
    case("range-beyond", Range="bytes=999999-"),
    case("range-last-beyond", Range="bytes=10-999999"),
    case("range-two", Range="bytes=0-1,5-6"),
    # nginx answers 416 (bytes */size); 14.2: a server MAY ignore or reject an invalid
    # ranges-specifier, and 416 is for valid but unsatisfiable ones: ignoring is the safe reading.
    case("range-malformed", Range="bytes=x-y", rfc=(WHOLE,)),
    case("range-items", Range="items=0-1"),
    case("range+inm-match", Range="bytes=0-9", If_None_Match="{etag}"),
    case("range+im-other", Range="bytes=0-9", If_Match='"nope"'),
    # If-Range: strong comparison, exact date (13.1.5).
    case("if-range-etag", Range="bytes=0-9", If_Range="{etag}"),
    case("if-range-other", Range="bytes=0-9", If_Range='"nope"'),
    case("if-range-weak", Range="bytes=0-9", If_Range="W/{etag}"),
    case("if-range-date", Range="bytes=0-9", If_Range="{lm}"),
    case("if-range-earlier", Range="bytes=0-9", If_Range="{earlier}"),
    case("if-range-etag-two", Range="bytes=0-1,5-6", If_Range="{etag}"),
    case("if-range-other-two", Range="bytes=0-1,5-6", If_Range='"nope"'),
    case("empty", path=EMPTY),
    # 14.1.2: of an empty file only a suffix range is satisfiable, yet no 206 can name a
    # part of it; both ignore Range there (14.2: a server MAY).
    case("empty-range", path=EMPTY, Range="bytes=0-9"),
    case("empty-suffix", path=EMPTY, Range="bytes=-5"),
    case("empty-suffix-zero", path=EMPTY, Range="bytes=-0"),
]


@pytest.mark.parametrize("request_case", CASES)
def test_same_answer_as_nginx(servers: tuple[Server, Server], request_case: Case) -> None:
    """wsgi-sse answers as nginx does, or as RFC 9110 says where nginx does not."""
    nginx, ours = servers
    theirs, mine = answer(nginx, request_case), answer(ours, request_case)
    if request_case.rfc:
        assert mine in request_case.rfc, f"nginx answered {theirs!r}"
    else:
        assert mine == theirs
