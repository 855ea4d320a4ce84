"""The Bottle example, started exactly as README says: twistd -ny server.py."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    ROOT,
    StreamClient,
    free_port,
    http_request,
    subprocess_env,
    wait_for_port,
)

EXAMPLE = ROOT / "examples" / "bottle_app"


def _start(cwd: Path, server_py: str, port: int) -> subprocess.Popen[str]:
    env = subprocess_env(WSGI_SSE_LISTEN=f"tcp:{port}:interface=127.0.0.1")
    return subprocess.Popen(
        ["twistd", "--pidfile=", "-ny", server_py],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(params=["example dir", "repo root"])
def example_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """The example running under twistd, from its directory or from the repo root."""
    port = free_port()
    if request.param == "example dir":
        proc = _start(EXAMPLE, "server.py", port)
    else:
        proc = _start(ROOT, "examples/bottle_app/server.py", port)
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
        # twistd re-raises the terminating signal: -15 is a clean exit.
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "Traceback" not in output, output
        assert "served nothing" not in output, output


def test_index_page_opens_event_source(example_port: int) -> None:
    """GET / serves the page that listens on /sse through the client module at /sse.js."""
    status, _headers, body = http_request(example_port, "GET", "/")
    assert status == 200
    assert b'import { openStream } from "/sse.js"' in body
    assert b'openStream({ url: "/sse" })' in body
    status, headers, body = http_request(example_port, "GET", "/sse.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"export function openStream" in body


def test_hello_form(example_port: int) -> None:
    """GET /hello/ serves a form that posts a name to /knock."""
    status, _, body = http_request(example_port, "GET", "/hello/")
    assert status == 200
    assert b'action="/knock"' in body and b'name="name"' in body


def test_knock_reaches_stream(example_port: int) -> None:
    """POST /knock answers a page and every stream sees '<name> knocked'."""
    with StreamClient(example_port) as first, StreamClient(example_port) as second:
        first.wait_for(lambda c: c.parser.retry is not None)
        second.wait_for(lambda c: c.parser.retry is not None)
        status, _, body = http_request(
            example_port,
            "POST",
            "/knock",
            body=b"name=Ada Lovelace",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        assert b"Ada Lovelace knocked!" in body
        for client in (first, second):
            (event,) = client.wait_events(1)
            assert event.data == "Ada Lovelace knocked"
            assert event.last_event_id


def test_knock_escapes_html(example_port: int) -> None:
    """A name with markup is escaped in the answer page and sent as text."""
    with StreamClient(example_port) as client:
        client.wait_for(lambda c: c.parser.retry is not None)
        status, _, body = http_request(
            example_port,
            "POST",
            "/knock",
            body=b"name=%3Cb%3EEve%3C%2Fb%3E",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and b"<b>Eve" not in body and b"&lt;b&gt;Eve" in body
        assert client.wait_events(1)[0].data == "<b>Eve</b> knocked"


def test_python_server_py_says_to_use_twistd() -> None:
    """`python server.py` serves nothing: it says so, and how to run the file, in one line."""
    proc = subprocess.run(
        [sys.executable, "server.py"],
        cwd=EXAMPLE,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (
        "server.py is a Twisted application file and served nothing: "
        "run it with twistd -ny server.py"
    )


def test_a_script_that_starts_the_application_gets_no_hint() -> None:
    """A __main__ that builds the application and starts its service is left alone."""
    code = (
        "from twisted.application.service import IService\n"
        "from app import app\n"
        "from wsgi_sse import make_application\n"
        "application = make_application(app, listen='tcp:0:interface=127.0.0.1')\n"
        "IService(application).startService()\n"
        "IService(application).stopService()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLE,
        env=subprocess_env(PYTHONPATH=f"{ROOT}:{EXAMPLE}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "served nothing" not in proc.stderr, proc.stderr
