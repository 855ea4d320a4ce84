"""django-grip's own API (GripMiddleware + set_hold_stream) holds wsgi-sse streams unchanged."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from support import (
    PYTHON,
    ROOT,
    StreamClient,
    free_port,
    http_request,
    subprocess_env,
    wait_for_port,
)

SITE = ROOT / "tests" / "grip_site"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The grip site served by ``python -m wsgi_sse`` in a child process."""
    port = free_port()
    env = subprocess_env()
    env["PYTHONPATH"] = f"{SITE}:{env['PYTHONPATH']}"
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "wsgi_sse",
            "gripsite:application",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)
        assert proc.stdout is not None
        proc.stdout.close()


def test_set_hold_stream_holds_a_stream(port: int) -> None:
    """A django-grip view's hold: no Grip-* header reaches the client, events flow, close ends."""
    with StreamClient(port, "/events/lobby") as client:
        assert client.status == 200
        assert not [n for n in client.headers if n.startswith("grip")]
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        (hello,) = client.wait_events(1)
        assert (hello.type, hello.data) == ("hello", "welcome")
        # The stream was subscribed before its first body was sent.
        assert http_request(port, "GET", "/say/lobby/hi")[0] == 200
        client.wait_events(2)
        assert client.events[1].data == "hi"
        assert client.events[1].last_event_id
        assert http_request(port, "GET", "/end/lobby")[2] == b"closed"
        client.read_to_end()
        assert client.eof
