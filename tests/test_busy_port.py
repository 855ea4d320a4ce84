"""A port already in use ends the server at once, in every way of running it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, subprocess_env

EXAMPLE = ROOT / "examples" / "bottle_app"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _run(args: list[str], port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=EXAMPLE,
        env=subprocess_env(WSGI_SSE_LISTEN=f"tcp:{port}:interface=127.0.0.1"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode != 0, result
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    last = result.stderr.strip().splitlines()[-1]
    assert f"cannot listen on tcp:{port}:interface=127.0.0.1" in last, output
    assert "Address already in use" in last, output
    # How to choose another port, in every way of running the server.
    assert (
        "(another program is using the port: choose another with $WSGI_SSE_LISTEN, --listen or "
        f"listen=, e.g. tcp:{port + 1}:interface=127.0.0.1)"
    ) in last, output


def test_twistd_ny_exits_with_one_line(busy_port: int) -> None:
    """twistd -ny server.py on a busy port exits non-zero with one line naming it and why."""
    result = _run(["twistd", "--pidfile=", "-ny", "server.py"], busy_port)
    _assert_one_clear_line(result, busy_port)
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_twistd_plugin_exits_with_one_line(busy_port: int) -> None:
    """twistd -n wsgi-sse on a busy port exits non-zero with one line naming it and why."""
    result = _run(
        ["twistd", "--pidfile=", "-n", "wsgi-sse", "--app", "app:app"],
        busy_port,
    )
    _assert_one_clear_line(result, busy_port)
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_python_m_exits_with_one_line(busy_port: int) -> None:
    """python -m wsgi_sse on a busy port exits 1 with one line naming it and why."""
    result = _run([sys.executable, "-m", "wsgi_sse", "app:app"], busy_port)
    _assert_one_clear_line(result, busy_port)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("python -m wsgi_sse: ")


def test_daemonized_twistd_fails_and_says_why(busy_port: int, tmp_path: Path) -> None:
    """Daemonized twistd -y on a busy port fails, naming it and why, and leaves no process."""
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    try:
        result = _run(
            ["twistd", f"--pidfile={pidfile}", f"--logfile={logfile}", "-y", "server.py"],
            busy_port,
        )
    finally:
        # The daemon removes its pidfile as it exits, which may be just
        # after twistd's parent process has reported the failure.
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = pidfile.exists()
        if left:  # a daemon left serving nothing: stop it
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert result.returncode != 0, result
    assert f"cannot listen on tcp:{busy_port}:interface=127.0.0.1" in result.stderr
    assert "Address already in use" in result.stderr
    assert not left
    log = logfile.read_text()
    assert f"cannot listen on tcp:{busy_port}:interface=127.0.0.1" in log, log
