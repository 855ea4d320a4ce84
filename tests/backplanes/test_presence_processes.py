"""Presence and revocation across two processes sharing Redis or PostgreSQL."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from backplane_support import Backend
from redis_support import ServerProcess, processes
from support import http_request

HERE = Path(__file__).resolve().parent


def server(tmp: Path, name: str, backend: Backend, interval: str = "0.5") -> ServerProcess:
    """tests/backplanes/presence/server.py under twistd, reporting presence every C{interval} s."""
    twistd = shutil.which("twistd")
    assert twistd is not None
    return ServerProcess(
        [twistd, "-ny", "server.py", "--pidfile="],
        HERE / "presence",
        tmp / f"{name}.log",
        WSGI_SSE_BACKPLANE_URL=backend.url,
        PRESENCE_INTERVAL=interval,
    )


def present(process: ServerProcess, channel: str = "room") -> dict[str, Any]:
    """The presence of C{channel} as C{process} sees it."""
    status, _, body = http_request(process.port, "GET", f"/presence?channel={channel}")
    assert status == 200, body
    return dict(json.loads(body))


def history_length(backend: Backend) -> int:
    """Events in the shared history (Redis stream entries, PostgreSQL rows)."""
    if backend.kind == "redis":
        return int(backend.server.client().xlen("wsgi-sse:default:events"))
    with backend.server.connect(autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM wsgi_sse_events").fetchone()[0])


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    """Poll until C{predicate()} is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_presence_across_processes_and_a_killed_process_expires(
    shared_backend: Backend, tmp_path: Path
) -> None:
    """Each process sees the other's identities; a killed process's ones expire."""
    a, b = server(tmp_path, "a", shared_backend), server(tmp_path, "b", shared_backend)
    with processes(a, b):
        with (
            a.stream("/sse?channel=room", headers={"Cookie": "user=ada"}) as ada,
            b.stream("/sse?channel=room", headers={"Cookie": "user=ada"}) as ada2,
            b.stream("/sse?channel=room", headers={"Cookie": "user=bob"}) as bob,
            b.stream("/sse?channel=room") as guest,
        ):
            for client in (ada, ada2, bob, guest):
                client.wait_for(lambda c: c.parser.retry is not None)
            expected = {"identities": {"ada": 2, "bob": 1}, "guests": 1}
            wait_until(lambda: present(a) == expected and present(b) == expected)
            # Reports travel beside the events, never in their history.
            assert history_length(shared_backend) == 0

            # Revocation travels too: ada's streams end in both processes.
            http_request(a.port, "POST", "/disconnect?identity=ada")
            ada.read_to_end(timeout=2.0)
            ada2.read_to_end(timeout=2.0)
            left = {"identities": {"bob": 1}, "guests": 1}
            wait_until(lambda: present(a) == left and present(b) == left)

            # A process killed without a goodbye is forgotten after its TTL.
            assert b.proc is not None
            b.proc.send_signal(signal.SIGKILL)
            b.proc.wait(10)
            killed_at = time.monotonic()
            assert present(a) == left  # until the TTL (three intervals) passes
            wait_until(lambda: present(a) == {"identities": {}, "guests": 0}, timeout=10)
            print(f"killed process forgotten after {time.monotonic() - killed_at:.2f} s")


def test_a_process_that_stops_cleanly_is_forgotten_at_once(
    shared_backend: Backend, tmp_path: Path
) -> None:
    """A stopping process says goodbye: others drop its identities long before its TTL."""
    a = server(tmp_path, "a", shared_backend)
    # Reports every 20 s: forgotten after 60 s if it left without a word.
    c = server(tmp_path, "c", shared_backend, interval="20")
    with processes(a, c):
        with c.stream("/sse?channel=room", headers={"Cookie": "user=cy"}) as cy:
            cy.wait_for(lambda s: s.parser.retry is not None)
            wait_until(lambda: present(a) == {"identities": {"cy": 1}, "guests": 0})
            c.stop()
        wait_until(lambda: present(a) == {"identities": {}, "guests": 0}, timeout=10)


def test_a_process_started_later_learns_the_presence_at_once(
    shared_backend: Backend, tmp_path: Path
) -> None:
    """
    A process that starts (or reconnects) asks the others for their reports:
    it does not wait for their next full report, a minute away here.
    """
    c = server(tmp_path, "c", shared_backend, interval="60")
    with processes(c):
        with c.stream("/sse?channel=room", headers={"Cookie": "user=cy"}) as cy:
            cy.wait_for(lambda s: s.parser.retry is not None)
            time.sleep(0.5)  # c's reports so far went to nobody
            a = server(tmp_path, "a", shared_backend, interval="60")
            with processes(a):
                started = time.monotonic()
                wait_until(lambda: present(a) == {"identities": {"cy": 1}, "guests": 0}, timeout=10)
                print(f"presence known {time.monotonic() - started:.2f} s after start")
                # And c knows a has nobody: a's own full report.
                with a.stream("/sse?channel=room", headers={"Cookie": "user=ann"}) as ann:
                    ann.wait_for(lambda s: s.parser.retry is not None)
                    both = {"identities": {"ann": 1, "cy": 1}, "guests": 0}
                    wait_until(lambda: present(c) == both and present(a) == both, timeout=10)
