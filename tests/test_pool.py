"""The WSGI thread pool: Twisted's ThreadPool interface and behaviour over a leaner hand-off."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import cli_page, http_request, serve
from twisted.python import context

from wsgi_sse import WSGIThreadPool
from wsgi_sse._pool import run_as_batch

linux_policies = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH"), reason="scheduling policies are Linux's"
)

# A WSGI app answering with the scheduling policy of the thread it runs in.
POLICY_APP = """
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.sched_getscheduler(0)).encode()]
"""


def _results(pool: WSGIThreadPool, calls: int, func: Any) -> list[tuple[bool, Any]]:
    done = threading.Semaphore(0)
    results: list[tuple[bool, Any]] = []

    def on_result(ok: bool, result: Any) -> None:
        results.append((ok, result))
        done.release()

    for i in range(calls):
        pool.callInThreadWithCallback(on_result, func, i)
    for _ in range(calls):
        assert done.acquire(timeout=10)
    return results


def test_results_failures_and_context_reach_the_caller() -> None:
    """A call's result or failure goes to onResult; the caller's context travels with it."""
    pool = WSGIThreadPool(0, 2, "t")
    pool.start()
    try:

        def work(i: int) -> Any:
            if i == 1:
                raise ValueError("boom")
            return (i, context.get("who"), threading.current_thread().daemon)

        results = context.call({"who": "caller"}, _results, pool, 3, work)
    finally:
        pool.stop()
    ok = sorted(r for good, r in results if good)
    failures = [r for good, r in results if not good]
    assert ok == [(0, "caller", True), (2, "caller", True)]
    assert [f.value.args for f in failures] == [("boom",)]


def test_work_queued_before_start_and_before_stop_runs() -> None:
    """Calls made before start run once it starts; calls queued before stop run before it ends."""
    pool = WSGIThreadPool(0, 1, "t")
    ran: list[int] = []
    gate = threading.Event()
    pool.callInThread(lambda: (gate.wait(10), ran.append(0)))
    for i in range(1, 5):
        pool.callInThread(ran.append, i)
    pool.start()
    assert pool.workers == 1
    gate.set()
    pool.stop()
    assert ran == [0, 1, 2, 3, 4]
    pool.callInThread(ran.append, 5)  # after stop: ignored, as in Twisted
    assert ran == [0, 1, 2, 3, 4] and pool.workers == 0
    assert not any(t.is_alive() for t in pool.threads)


def test_threads_grow_to_max_and_shrink() -> None:
    """Busy threads make the pool grow up to max, never past; adjustPoolsize ends extra threads."""
    pool = WSGIThreadPool(0, 3, "t")
    pool.start()
    release = threading.Event()
    running = threading.Semaphore(0)
    try:
        for _ in range(5):
            pool.callInThread(lambda: (running.release(), release.wait(10)))
        for _ in range(3):
            assert running.acquire(timeout=10)
        assert pool.workers == 3 and len(pool.working) == 3
        assert pool.q.qsize() == 2  # two calls wait for a free thread
        release.set()
        for _ in range(2):
            assert running.acquire(timeout=10)
        pool.adjustPoolsize(0, 1)
        assert pool.workers == 1
    finally:
        release.set()
        pool.stop()
    assert len(pool.threads) == 3


def test_shutdown_names_the_views_still_running() -> None:
    """At shutdown, views that never return are counted in the warning, one per thread."""
    from twisted.logger import formatEvent, globalLogPublisher

    entered = threading.Semaphore(0)
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        entered.release()
        release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    seen: list[dict[str, Any]] = []
    with serve(app, threads=4, shutdown_timeout=0.5) as server, ThreadPoolExecutor(2) as clients:
        try:
            for _ in range(2):
                clients.submit(http_request, server.port, "GET", "/forever", timeout=30)
            for _ in range(2):
                assert entered.acquire(timeout=10)
            globalLogPublisher.addObserver(seen.append)
            try:
                server.call(server.service.stopService, timeout=15)
            finally:
                globalLogPublisher.removeObserver(seen.append)
        finally:
            release.set()
    warnings = [formatEvent(e) for e in seen if "still busy" in e.get("log_format", "")]
    assert warnings == ["2 WSGI thread(s) still busy after 0.5s; not waiting"]


def test_server_runs_views_on_its_threads_at_once() -> None:
    """threads=3 serves three slow views at the same time, and a fourth after one of them."""
    barrier = threading.Barrier(3, timeout=10)
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            if environ["PATH_INFO"] == "/wait":
                barrier.wait()
        finally:
            with lock:
                running[0] -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with serve(app, threads=3) as server, ThreadPoolExecutor(4) as clients:
        answers = [
            clients.submit(http_request, server.port, "GET", path)
            for path in ("/wait", "/wait", "/other", "/wait")
        ]
        assert sorted(a.result()[0] for a in answers) == [200, 200, 200, 200]
        assert server.call(lambda: server.service.threadpool.workers) == 3
    assert running[1] <= 3


def _policy_in_thread(pool: WSGIThreadPool) -> int:
    """The scheduling policy a call sees in one of C{pool}'s threads."""
    pool.start()
    try:
        [(ok, policy)] = _results(pool, 1, lambda _: os.sched_getscheduler(0))
    finally:
        pool.stop()
    assert ok
    return int(policy)


@linux_policies
def test_threads_run_as_batch_unless_told_not_to() -> None:
    """The pool's threads run under SCHED_BATCH; with sched_batch=False, under the starter's."""
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert _policy_in_thread(WSGIThreadPool(0, 1, "t")) == os.SCHED_BATCH
    assert _policy_in_thread(WSGIThreadPool(0, 1, "t", sched_batch=False)) == os.SCHED_OTHER
    # The thread that started them keeps its own policy.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


@linux_policies
def test_run_as_batch_keeps_another_policy() -> None:
    """A thread under a policy other than SCHED_OTHER (here SCHED_IDLE) keeps it."""
    seen: list[tuple[bool, int]] = []

    def idle_thread() -> None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        seen.append((run_as_batch(), os.sched_getscheduler(0)))

    thread = threading.Thread(target=idle_thread)
    thread.start()
    thread.join(10)
    assert seen == [(False, os.SCHED_IDLE)]


@linux_policies
@pytest.mark.parametrize("sched_batch", [True, False])
def test_server_runs_views_under_batch_policy(sched_batch: bool) -> None:
    """A view of the server runs under SCHED_BATCH, or SCHED_OTHER with sched_batch=False."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.sched_getscheduler(0)).encode()]

    with serve(app, sched_batch=sched_batch) as server:
        status, _, body = http_request(server.port, "GET", "/")
    assert status == 200
    assert int(body) == (os.SCHED_BATCH if sched_batch else os.SCHED_OTHER)


@linux_policies
@pytest.mark.parametrize(("flags", "batch"), [((), True), (("--sched-batch", "false"), False)])
def test_command_line_sched_batch(tmp_path: Path, flags: tuple[str, ...], batch: bool) -> None:
    """python -m wsgi_sse runs views under SCHED_BATCH; --sched-batch false does not."""
    status, body, output = cli_page(POLICY_APP, *flags, tmp_path=tmp_path)
    assert status == 200, output
    assert int(body) == (os.SCHED_BATCH if batch else os.SCHED_OTHER), output


class _RacingPool(WSGIThreadPool):
    """
    A pool whose C{max} holds each thread named C{caller-*}, the first time
    it reads it, until the other one reads it too: both have read the
    thread count by then, and neither has added to it.
    """

    def __init__(self) -> None:
        self._both = threading.Barrier(2, timeout=10)
        self._seen = threading.local()
        super().__init__(0, 2, "t")

    @property  # type: ignore[override]
    def max(self) -> int:
        if threading.current_thread().name.startswith("caller") and not hasattr(self._seen, "it"):
            self._seen.it = True
            self._both.wait()
        return self._max

    @max.setter
    def max(self, value: int) -> None:
        self._max = value


def test_two_threads_calling_at_once_never_start_more_than_max() -> None:
    """Two threads that both see room for one more thread start only one of them."""
    pool = _RacingPool()
    pool.start()
    release = threading.Event()
    running = threading.Semaphore(0)
    try:
        pool.callInThread(lambda: (running.release(), release.wait(10)))
        assert running.acquire(timeout=10) and pool.workers == 1
        # Both callers find one busy thread and room for one more.
        callers = [
            threading.Thread(
                target=pool.callInThread,
                args=(lambda: (running.release(), release.wait(10)),),
                name=f"caller-{i}",
            )
            for i in range(2)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10)
        assert running.acquire(timeout=10)
        assert pool.workers == 2 and len(pool.threads) == 2
        assert pool.q.qsize() == 1  # the other call waits for a free thread
    finally:
        release.set()
        pool.stop()
