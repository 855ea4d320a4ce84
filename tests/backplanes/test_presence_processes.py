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


def memory(process: ServerProcess) -> dict[str, Any]:
    """What the other processes' reports take in C{process}."""
    status, _, body = http_request(process.port, "GET", "/presence-memory")
    assert status == 200, body
    return dict(json.loads(body))


def forge(backend: Backend, messages: list[dict[str, Any]]) -> None:
    """Publish presence reports on the control path as any client of the server could."""
    bodies = ["data: " + json.dumps(m, separators=(",", ":")) + "\n" for m in messages]
    if backend.kind == "redis":
        client = backend.server.client()
        pipe = client.pipeline(transaction=False)
        for body in bodies:
            pipe.publish("wsgi-sse:default:events:control", body)
        pipe.execute()
        return
    with backend.server.connect(autocommit=True) as conn:
        for body in bodies:
            conn.execute("SELECT pg_notify('wsgi_sse_events_control', %s)", (body,))


def flood(backend: Backend, instance: str, start: int, count: int) -> list[dict[str, Any]]:
    """Partial reports of C{instance} adding C{count} made-up channels, as big as fits."""
    per = 7000 if backend.kind == "redis" else 250
    return [
        {
            "k": "p",
            "i": instance,
            "t": 3600,
            "c": {f"{instance}-{n}": [{}, 1] for n in range(s, min(s + per, start + count))},
        }
        for s in range(start, start + count, per)
    ]


def test_a_forged_flood_of_reports_stays_within_the_bound_per_process(
    session_redis: Any, tmp_path: Path
) -> None:
    """
    A made-up process adding channels without end through Redis takes at most
    the bound per process in each process; presence between the real ones
    still works.
    """
    bound = 16 * 1024 * 1024  # the default is 128 MiB: a lighter test
    backend = Backend("redis", session_redis)
    backend.clean()
    a, b = server(tmp_path, "a", backend), server(tmp_path, "b", backend)
    with processes(a, b):
        for process in (a, b):
            assert process.post(f"/presence-bound?process={bound}")[0] == 200
        # 105,000 channels: about twice the bound.
        forge(backend, flood(backend, "x1", 0, 105_000))
        forge(backend, [{"k": "p", "i": "x2", "t": 3600, "c": {"sentinel": [{}, 1]}}])
        for process in (a, b):
            wait_until(lambda p=process: present(p, "sentinel")["guests"] == 1, timeout=30)
            held = memory(process)
            print(held)
            # Each made-up channel takes more than 300 bytes (estimated).
            assert held["channels"] < bound // 300
            assert held["overflow"] > 0
            assert 0 < held["remote_bytes"] <= bound + 1000
        with (
            a.stream("/sse?channel=room", headers={"Cookie": "user=ada"}) as ada,
            b.stream("/sse?channel=room", headers={"Cookie": "user=bob"}) as bob,
        ):
            for client in (ada, bob):
                client.wait_for(lambda c: c.parser.retry is not None)
            expected = {"identities": {"ada": 1, "bob": 1}, "guests": 0}
            wait_until(lambda: present(a) == expected and present(b) == expected)


def test_forged_reports_of_many_processes_stay_within_the_bound_in_all(
    shared_backend: Backend, tmp_path: Path
) -> None:
    """
    Made-up processes together take at most the bound in all; the real
    processes' reports, taken in before, stay right as they repeat them.
    """
    total = 2 * 1024 * 1024
    a, b = server(tmp_path, "a", shared_backend), server(tmp_path, "b", shared_backend)
    with processes(a, b):
        for process in (a, b):
            assert process.post(f"/presence-bound?total={total}")[0] == 200
        with (
            a.stream("/sse?channel=room", headers={"Cookie": "user=ada"}) as ada,
            b.stream("/sse?channel=room", headers={"Cookie": "user=bob"}) as bob,
            b.stream("/sse?channel=room") as guest,
        ):
            for client in (ada, bob, guest):
                client.wait_for(lambda c: c.parser.retry is not None)
            expected = {"identities": {"ada": 1, "bob": 1}, "guests": 1}
            wait_until(lambda: present(a) == expected and present(b) == expected)
            # Eight made-up processes of 3,500 channels each: about 8 MiB.
            forge(
                shared_backend,
                [m for i in range(8) for m in flood(shared_backend, f"x{i}", 0, 3500)],
            )
            # Then x0 (taken in whole, first) counts 2 guests on one of its channels.
            forge(shared_backend, [{"k": "p", "i": "x0", "t": 3600, "c": {"x0-0": [{}, 2]}}])
            for process in (a, b):
                wait_until(lambda p=process: present(p, "x0-0")["guests"] == 2, timeout=30)
                held = memory(process)
                print(held)
                assert held["channels"] < total // 300
                assert held["overflow"] > 0 and held["remote_bytes"] <= total
            # The real processes' changes still go through,
            left = {"identities": {"ada": 1, "bob": 1}, "guests": 0}
            guest.close()
            wait_until(lambda: present(a) == left and present(b) == left)
            # and so do their full reports (every 0.5 s).
            time.sleep(1.5)
            assert present(a) == left and present(b) == left
