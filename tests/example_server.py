"""
Run an example exactly as README.md says: ``cd examples/<name> && twistd -ny
server.py``, with ``--pidfile=`` so tests may run side by side, listening on
127.0.0.1 and a port chosen by the test (``WSGI_SSE_LISTEN``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from support import ROOT, free_port, subprocess_env, wait_for_port

EXAMPLES = ROOT / "examples"


def twistd() -> str:
    """The twistd script of the Python running the tests."""
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    assert found, "twistd is not installed"
    return found


class ExampleServer:
    """One example's ``twistd -ny server.py`` in a child process."""

    def __init__(self, name: str, port: int | None = None, **env: str) -> None:
        self.directory = EXAMPLES / name
        self.port = port or free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it listens."""
        env = subprocess_env(WSGI_SSE_LISTEN=f"tcp:{self.port}:interface=127.0.0.1", **self.env)
        self.proc = subprocess.Popen(
            [twistd(), "-ny", "server.py", "--pidfile="],
            cwd=self.directory,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, timeout=30)
        except AssertionError:
            self.stop()
            raise AssertionError(f"server did not start:\n{self.log()}") from None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited:\n{self.log()}")

    def stop(self) -> int | None:
        """Stop the server with SIGTERM, as a service manager would; return its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise AssertionError(f"server ignored SIGTERM:\n{self.log()}") from None
        return proc.returncode

    def log(self) -> str:
        """Everything the server wrote so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.stop()
        self._log.close()


@contextlib.contextmanager
def run_example(name: str, port: int | None = None, **env: str) -> Iterator[ExampleServer]:
    """Run an example for the duration of the block."""
    server = ExampleServer(name, port, **env)
    try:
        server.start()
        yield server
    finally:
        server.close()


__all__ = ["EXAMPLES", "ExampleServer", "run_example", "twistd"]
