"""
What a view pays for broadcast(): the caller-side cost per call, measured
side by side with crochet's run_in_reactor and broadcast_and_wait().

    python benchmarks/bench_broadcast.py [--events 20000]

A real server runs in crochet's reactor thread with one connected stream
client reading every event; the figures are per call, in the calling thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import serve

from wsgi_sse import broadcast, broadcast_and_wait, get_broadcaster
from wsgi_sse._encoding import encode_body


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("204 No Content", [])
    return []


def per_call(fn: Any, n: int) -> float:
    """Median of 5 runs of n calls, in microseconds per call."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    n = parser.parse_args().events
    import crochet

    with serve(app, heartbeat=0, max_buffer=1 << 30) as server:
        with server.stream() as client:
            server.wait_clients(1)
            publisher = get_broadcaster().publisher
            rows = [
                ("encode only (encode_body)", per_call(lambda i: encode_body({"n": i}), n)),
                ("broadcast()", per_call(lambda i: broadcast({"n": i}), n)),
                (
                    "crochet run_in_reactor (no wait)",
                    per_call(
                        lambda i: crochet.run_in_reactor(publisher.publish)(
                            "default", encode_body({"n": i})
                        ),
                        n // 4,
                    ),
                ),
                ("broadcast_and_wait()", per_call(lambda i: broadcast_and_wait({"n": i}), n // 20)),
            ]
            expected = 5 * (n + n // 4 + n // 20)
            client.wait_events(expected, timeout=300)
    print(f"\ncaller-side cost per call, {n} events, 1 connected client (median of 5 runs)\n")
    print("| call | us per call | vs broadcast() |")
    print("|---|---:|---:|")
    base = rows[1][1]
    for name, cost in rows:
        print(f"| {name} | {cost:.1f} | {cost / base:.2f} |")


if __name__ == "__main__":
    main()
