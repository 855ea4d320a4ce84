"""broadcast() from 16 threads while clients connect and disconnect."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from support import StreamClient, serve

from wsgi_sse import Hub, broadcast

THREADS = 16
PER_THREAD = 400


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer every request with hello."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def _check_per_thread_order(numbers: list[tuple[int, int]], *, complete: bool) -> None:
    """Each thread's events appear in order with no gap (and all of them if C{complete})."""
    seen: dict[int, list[int]] = {}
    for thread, n in numbers:
        seen.setdefault(thread, []).append(n)
    for thread, ns in seen.items():
        first = ns[0] if not complete else 0
        assert ns == list(range(first, first + len(ns))), f"thread {thread} out of order"
    if complete:
        assert {t: len(ns) for t, ns in seen.items()} == dict.fromkeys(range(THREADS), PER_THREAD)


def test_sixteen_threads_broadcast_during_churn() -> None:
    """No exception, no lost, duplicated or reordered event per thread, for any client."""
    hub = Hub(history_size=THREADS * PER_THREAD)
    with serve(hello_app, hub=hub) as server:
        with server.stream() as steady:
            server.wait_clients(1)
            errors: list[BaseException] = []
            start = threading.Barrier(THREADS + 1)
            churned: list[list[tuple[int, int]]] = []
            reconnecting: list[tuple[int, int]] = []
            stop = threading.Event()

            def publish(thread: int) -> None:
                try:
                    start.wait()
                    for n in range(PER_THREAD):
                        broadcast({"t": thread, "n": n})
                        if n % 4 == 0:
                            time.sleep(0.005)  # spread over ~1 s so connects interleave
                except BaseException as e:
                    errors.append(e)

            def churn() -> None:
                # Short-lived clients, and one that keeps reconnecting with its
                # Last-Event-ID: together they must see every event exactly once.
                last_id = server.call(lambda: hub.last_id)  # before any event
                try:
                    while not stop.is_set():
                        headers = {"Last-Event-ID": last_id}
                        with StreamClient(server.port, headers=headers) as client:
                            client.read_some(0.02)
                            client.read_some(0.02)
                            events = client.events
                            churned.append([_key(e.data) for e in events])
                            reconnecting.extend(_key(e.data) for e in events)
                            if events:
                                last_id = events[-1].last_event_id
                        with StreamClient(server.port) as _:
                            pass
                    with StreamClient(server.port, headers={"Last-Event-ID": last_id}) as client:
                        client.wait_events(THREADS * PER_THREAD - len(reconnecting), 20)
                        reconnecting.extend(_key(e.data) for e in client.events)
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=publish, args=(t,)) for t in range(THREADS)]
            churner = threading.Thread(target=churn)
            churner.start()
            for thread in threads:
                thread.start()
            start.wait()
            steady.wait_events(THREADS * PER_THREAD, timeout=60)
            for thread in threads:
                thread.join(30)
            stop.set()
            churner.join(60)

            assert errors == []
            _check_per_thread_order([_key(e.data) for e in steady.events], complete=True)
            _check_per_thread_order(reconnecting, complete=True)
            assert sum(1 for keys in churned if keys) > 5
            for keys in churned:
                _check_per_thread_order(keys, complete=False)
            server.wait_clients(1)
            assert server.call(lambda: hub.subscriber_count()) == 1


def _key(data: str) -> tuple[int, int]:
    value = json.loads(data)
    return value["t"], value["n"]
