"""
The WSGI app's thread pool: Twisted's C{ThreadPool}, with a leaner hand-off.

Twisted's pool hands each call through a coordinator (a lock and a worker
of its own), a team that tracks idle and busy workers, and a per-worker
C{queue.Queue} (a condition variable written in Python): about 20 µs of
CPU per call on the reactor's side and the thread's, paid on every page
view and every knock.  L{WSGIThreadPool} keeps the interface (C{start},
C{stop}, C{callInThread}, C{callInThreadWithCallback}, C{min}/C{max},
C{adjustPoolsize}, C{workers}/C{working}/C{waiters}) and its behaviour
(threads started on demand up to C{max}, calls queued while all are busy
and run in order, work queued before C{stop} still run, the caller's
logging context carried to the thread, failures logged) over one
C{queue.SimpleQueue} that every worker thread reads: about 8 µs.

On Linux its threads run under the C{SCHED_BATCH} scheduling policy
(L{run_as_batch}).  A thread woken to serve a request needs the GIL, which
the reactor thread holds while it hands the request over; under the normal
policy the woken thread preempts the reactor thread on a shared core only
to find the GIL taken and switch back, two context switches per hand-off.
As a batch thread it waits for the reactor thread to block (in C{epoll} or
on the GIL), and then runs.
"""

from __future__ import annotations

import os
import threading
from queue import SimpleQueue
from typing import Any, Callable

from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

__all__ = ["WSGIThreadPool", "run_as_batch"]

_SCHED_OTHER: int | None = getattr(os, "SCHED_OTHER", None)
_SCHED_BATCH: int | None = getattr(os, "SCHED_BATCH", None)


def run_as_batch() -> bool:
    """
    Put the calling thread under Linux's C{SCHED_BATCH} policy, if it runs
    under the normal one (C{SCHED_OTHER}); return whether it now runs
    under C{SCHED_BATCH}.

    The policy keeps the thread's nice value and share of the CPU; the
    scheduler only stops letting the thread preempt a running one when it
    wakes up.  A thread under another policy (C{chrt}, a real-time one)
    keeps it; where the policy does not exist (not Linux) or may not be
    set, nothing changes.  Threads the thread starts inherit its policy.
    """
    if _SCHED_BATCH is None or _SCHED_OTHER is None:
        return False
    try:
        policy = os.sched_getscheduler(0)
        if policy == _SCHED_OTHER:
            os.sched_setscheduler(0, _SCHED_BATCH, os.sched_param(0))
            policy = _SCHED_BATCH
    except OSError:
        return False
    return policy == _SCHED_BATCH


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    thread = threading.Thread(*args, **kwargs)
    # A WSGI view that never returns must not keep the process alive after
    # shutdown gave up waiting for it.
    thread.daemon = True
    return thread


class _Backlog:
    """What C{ThreadPool.q} gives: the number of calls not yet taken by a thread."""

    def __init__(self, work: SimpleQueue[Any]) -> None:
        self._work = work

    def qsize(self) -> int:
        return self._work.qsize()


class WSGIThreadPool(ThreadPool):
    """
    A thread pool for a WSGI app whose threads never block process exit.

    C{callInThread} and C{callInThreadWithCallback} may be called in any
    thread; C{start}, C{stop} and C{adjustPoolsize} in one thread at a time
    (as with Twisted's pool).
    """

    threadFactory = staticmethod(_daemon_thread)  # type: ignore[assignment]

    def __init__(
        self,
        minthreads: int = 5,
        maxthreads: int = 20,
        name: str | None = None,
        *,
        sched_batch: bool = True,
    ) -> None:
        """
        @param sched_batch: run each thread under C{SCHED_BATCH} (see
            L{run_as_batch}); L{False} leaves the threads under the policy
            of the thread that starts them.
        """
        super().__init__(minthreads, maxthreads, name)
        self.sched_batch = sched_batch
        self._work: SimpleQueue[Any] = SimpleQueue()
        self._count_lock = threading.Lock()
        # Threads that will take more work, and those of them waiting for it.
        self._live = 0
        self._idle = 0
        # Threads running a call (also once stop() has told them to quit).
        self._busy = 0

    @property
    def workers(self) -> int:
        """The number of threads (busy or idle)."""
        return self._live

    @property
    def working(self) -> list[None]:
        """
        As many items as threads running a call (Twisted's legacy form),
        also while L{stop} waits for them.
        """
        return [None] * self._busy

    @property
    def waiters(self) -> list[None]:
        """As many items as threads waiting for a call (Twisted's legacy form)."""
        return [None] * self._idle

    @property
    def _queue(self) -> _Backlog:
        return _Backlog(self._work)

    q = _queue

    def start(self) -> None:
        """Start the threads (at least C{min}, more for calls already queued)."""
        self.joined = False
        self.started = True
        self.adjustPoolsize()
        backlog = min(self._work.qsize(), self.max) - self._idle
        if backlog > 0 and self._live < self.max:
            self._grow(min(backlog, self.max - self._live))

    def stop(self) -> None:
        """
        Stop taking calls, let the threads run what is queued, and wait for
        them to end.
        """
        self.joined = True
        self.started = False
        with self._count_lock:
            quitting, self._live = self._live, 0
        for _ in range(quitting):
            self._work.put(None)
        for thread in self.threads:
            thread.join()

    def adjustPoolsize(self, minthreads: int | None = None, maxthreads: int | None = None) -> None:
        """Set C{min} and C{max}; while started, start or end threads to match."""
        minthreads = self.min if minthreads is None else minthreads
        maxthreads = self.max if maxthreads is None else maxthreads
        assert 0 <= minthreads <= maxthreads, "need 0 <= minthreads <= maxthreads"
        self.min, self.max = minthreads, maxthreads
        if not self.started:
            return
        if self._live > self.max:
            self._shrink(self._live - self.max)
        if self._live < self.min:
            self._grow(self.min - self._live)

    def startAWorker(self) -> None:
        """Start one more thread, up to C{max}."""
        if self._live < self.max:
            self._grow(1)

    def stopAWorker(self) -> None:
        """End one thread once it is idle."""
        if self._live:
            self._shrink(1)

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object] | None,  # noqa: N803 - Twisted names it
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        """
        Call C{func(*args, **kw)} in a thread of the pool, then
        C{onResult(True, result)} or C{onResult(False, failure)} in that
        thread (or log the failure when C{onResult} is L{None}).  May be
        called in any thread.
        """
        if self.joined:
            return
        ctx = context.theContextTracker.currentContext().contexts[-1]
        work = self._work
        work.put((ctx, onResult, func, args, kw))
        if self.started and self._idle < work.qsize() and self._live < self.max:
            self._grow(1)

    def _grow(self, count: int) -> None:
        for _ in range(count):
            with self._count_lock:
                # Callers check the count first, without the lock: two
                # threads calling at once may both have seen room for one.
                if self._live >= self.max:
                    return
                self._live += 1
            thread = self.threadFactory(target=self._run, name=self._generateName())
            self.threads.append(thread)
            thread.start()

    def _shrink(self, count: int) -> None:
        with self._count_lock:
            count = min(count, self._live)
            self._live -= count
        for _ in range(count):
            self._work.put(None)

    def _run(self) -> None:
        """One thread: take calls until told to quit.  A pool thread."""
        work = self._work
        lock = self._count_lock
        if self.sched_batch:
            run_as_batch()
        busy = 0  # 1 while this thread runs a call
        while True:
            with lock:
                self._idle += 1
                self._busy -= busy
            item = work.get()
            busy = item is not None
            with lock:
                self._idle -= 1
                self._busy += busy
            if item is None:
                return
            ctx, on_result, func, args, kw = item
            item = None
            try:
                result = context.call(ctx, func, *args, **kw)
                ok = True
            except BaseException:  # noqa: BLE001 - handed to onResult or logged
                result = Failure()
                ok = False
            if on_result is not None:
                try:
                    on_result(ok, result)
                except BaseException:  # noqa: BLE001 - as Twisted's pool: logged
                    log.err()
            elif not ok:
                log.err(result)
            result = on_result = func = args = kw = ctx = None
