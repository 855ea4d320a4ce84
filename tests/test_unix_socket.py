"""
WSGI requests over a UNIX-socket listener (C{unix:/path}, behind a reverse
proxy on the same host): the app is served, with an environ that makes
sense for a connection that has no IP addresses, and every request has its
access log line.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import dechunk, serve, set_lean, subprocess_env

ADDRESS_KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT")


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the addresses in the environ and the body read (JSON)."""
    body = environ["wsgi.input"].read()
    seen = {key: environ.get(key) for key in ADDRESS_KEYS}
    seen["body"] = body.decode("latin-1")
    seen["CONTENT_LENGTH"] = environ.get("CONTENT_LENGTH")
    out = json.dumps(seen).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    start_response("200 OK", headers)
    return [out]


def unix_exchange(path: str, request: bytes) -> tuple[int, bytes]:
    """Send C{request} on a new connection to the UNIX socket C{path}; read the answer to EOF."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(request)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"\r\ntransfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return int(head.split(b" ", 2)[1]), body


REQUESTS = {
    "page": (
        b"GET /page?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        {"SERVER_NAME": "example.test", "SERVER_PORT": "80", "body": ""},
    ),
    "port in Host": (
        b"GET / HTTP/1.1\r\nHost: example.test:8443\r\nConnection: close\r\n\r\n",
        {"SERVER_NAME": "example.test", "SERVER_PORT": "8443", "body": ""},
    ),
    "IPv6 Host": (
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
        {"SERVER_NAME": "::1", "SERVER_PORT": "8080", "body": ""},
    ),
    "no Host": (
        b"GET / HTTP/1.0\r\n\r\n",
        {"SERVER_NAME": "localhost", "SERVER_PORT": "80", "body": ""},
    ),
    "POST with a body": (
        b"POST /form HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\nname=ab",
        {"SERVER_NAME": "example.test", "body": "name=ab", "CONTENT_LENGTH": "7"},
    ),
    "chunked POST": (
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        {"SERVER_NAME": "example.test", "body": "abcde", "CONTENT_LENGTH": "5"},
    ),
}


@pytest.mark.parametrize("lean", [True, False], ids=["one pass", "line parser"])
def test_app_is_served_over_a_unix_socket(tmp_path: Path, lean: bool) -> None:
    """Pages and bodies reach the app over a UNIX socket; its environ names no IP address."""
    path = str(tmp_path / "app.sock")
    with serve(environ_app, listen=f"unix:{path}") as server:
        set_lean(server, lean)
        for name, (request, expected) in REQUESTS.items():
            status, body = unix_exchange(path, request)
            assert status == 200, (name, body)
            seen = json.loads(body)
            # The client of a UNIX socket is on this host and has no port.
            assert seen["REMOTE_ADDR"] == "localhost", name
            assert seen["REMOTE_PORT"] is None, name
            for key, value in expected.items():
                assert seen[key] == value, (name, key)


PAGE_APP = """
def app(environ, start_response):
    body = environ["wsgi.input"].read()
    out = b"addr " + environ["REMOTE_ADDR"].encode() + b" read " + str(len(body)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
"""


def test_cli_on_a_unix_socket_serves_and_logs_every_request(tmp_path: Path) -> None:
    """C{python -m wsgi_sse --listen unix:...} answers a page and a POST and logs both lines."""
    (tmp_path / "page_app.py").write_text(PAGE_APP)
    path = str(tmp_path / "app.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsgi_sse", "page_app:app", "--listen", f"unix:{path}"],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not Path(path).exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.05)
        page = unix_exchange(path, b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        post = unix_exchange(
            path,
            b"POST /form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: 11\r\n\r\nhello world",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0]
    assert page == (200, b"addr localhost read 0")
    assert post == (200, b"addr localhost read 11")
    stamp = r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]"
    for line in (r'"GET /page HTTP/1\.1" 200 21', r'"POST /form HTTP/1\.1" 200 22'):
        assert re.search(rf'"-" - - {stamp} {line} "-" "-"', output), output
    assert "Traceback" not in output, output
