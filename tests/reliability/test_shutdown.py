"""Shutdown with 10,000 clients and a WSGI request in flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from relkit import HERE, Crowd, raise_fd_limit_in_child
from support import free_port, http_request, subprocess_env, wait_for_port

CLIENTS = int(os.environ.get("WSGI_SSE_SHUTDOWN_CLIENTS", "10000"))
TERMINATOR = b"0\r\n\r\n"


def _launch(how: str, port: int, log: Any) -> subprocess.Popen[bytes]:
    listen = f"tcp:{port}:interface=127.0.0.1"
    if how == "twistd":
        twistd = str(Path(sys.executable).with_name("twistd"))
        command = [twistd, "-ny", "shutdown_server.py", "--pidfile=", "--logfile=-"]
    else:
        command = [sys.executable, "-m", "wsgi_sse", "rel_app:app", "--listen", listen]
    return subprocess.Popen(
        command,
        cwd=HERE,
        env=subprocess_env(WSGI_SSE_LISTEN=listen),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=raise_fd_limit_in_child,
    )


def _refused(port: int) -> bool:
    """Whether a connection to C{port} is refused now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:  # a full accept queue while the port is closing
        return False
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize(
    ("how", "signum"),
    [("twistd", signal.SIGTERM), ("python -m wsgi_sse", signal.SIGINT)],
    ids=["twistd-SIGTERM", "python-m-SIGINT"],
)
def test_shutdown_with_ten_thousand_clients(how: str, signum: int) -> None:
    """It exits within 5 s; every client sees a clean end and reconnects to the next process."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = _launch(how, port, log)
        crowd = Crowd(port)
        try:
            wait_for_port(port, proc)
            started = time.monotonic()
            conns = crowd.open(CLIENTS)
            connect_seconds = time.monotonic() - started
            assert {c.status for c in conns} == {200}
            # One event, so every client has a Last-Event-ID to come back with.
            assert http_request(port, "POST", "/pump?n=1&size=1")[0] == 202
            crowd.run_until(lambda: all(b"id: " in c.tail for c in conns), 60)

            in_flight: list[tuple[int, bytes]] = []
            request = threading.Thread(
                target=lambda: in_flight.append(
                    http_request(port, "GET", "/slow?t=2.5")[0::2]  # type: ignore[arg-type]
                )
            )
            request.start()
            time.sleep(0.3)

            refused: list[bool] = []

            def watch_port() -> None:
                # Shutdown stops listening at once, while the in-flight
                # request is still being answered.  Watched from its own
                # thread: the streams end (and close) meanwhile, and reading
                # 10,000 ends must not delay the check.
                while not in_flight and proc.poll() is None:
                    if _refused(port) and not in_flight:
                        refused.append(True)
                        return
                    time.sleep(0.02)

            proc.send_signal(signum)
            signalled = time.monotonic()
            watcher = threading.Thread(target=watch_port, daemon=True)
            watcher.start()
            while proc.poll() is None and time.monotonic() - signalled < 15:
                crowd.poll(0.02)
            exit_seconds = time.monotonic() - signalled
            watcher.join(10)
            refused_while_finishing = bool(refused)
            crowd.run_until(lambda: all(c.eof for c in conns), 30)
            request.join(10)

            reset = sum(c.reset for c in conns)
            unterminated = sum(not c.tail.endswith(TERMINATOR) for c in conns)
            print(
                f"\nshutdown ({how}): {CLIENTS} clients connected in {connect_seconds:.1f} s; "
                f"exit {exit_seconds:.2f} s after the signal (code {proc.returncode}); "
                f"{reset} reset, {unterminated} without the chunked terminator"
            )
            assert proc.returncode is not None
            assert exit_seconds < 5.0
            assert reset == 0
            assert unterminated == 0
            assert in_flight == [(200, b"slow done")]
            assert refused_while_finishing
            last_id = conns[0].tail.split(b"id: ")[1].split(b"\n")[0].decode()
            crowd.close_all()

            # The next process on the same port takes every client back, all
            # at once (a reconnect storm: the listen backlog must absorb it).
            crowd = Crowd(port)
            proc = _launch(how, port, log)
            wait_for_port(port, proc)
            storm_started = time.monotonic()
            again = crowd.open(CLIENTS - 1, window=CLIENTS, timeout=60)
            # A connection the kernel could not set up (no free local port
            # while tens of thousands sit in TIME_WAIT from earlier tests)
            # retries, as EventSource does after its retry delay.
            failed = [c for c in again if c.status != 200]
            reasons = Counter(c.error or ("reset" if c.reset else "closed") for c in failed)
            crowd.close(failed)
            retried = crowd.open(len(failed)) if failed else []
            storm_seconds = time.monotonic() - storm_started
            print(
                f"reconnect storm: {CLIENTS - 1} clients at once back in {storm_seconds:.1f} s; "
                f"{len(failed)} retried ({dict(reasons)})"
            )
            assert {c.status for c in retried} <= {200}
            assert len(failed) < CLIENTS // 10
            (back,) = crowd.open(1, headers={"Last-Event-ID": last_id}, keep_body=True)
            crowd.run_until(lambda: back.events(), 10)
            assert back.status == 200
            # A new process cannot replay the old one's ids: the page is told to reset.
            assert [e.type for e in back.events()] == ["reset"]
        except BaseException:
            log.seek(0)
            print(log.read().decode(errors="replace")[-3000:])
            raise
        finally:
            crowd.close_all()
            _stop(proc)
