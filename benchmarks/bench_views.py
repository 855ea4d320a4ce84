"""
What streams held by views cost, next to /sse streams.

    python benchmarks/bench_views.py [--streams 200]

1. The check every ordinary WSGI response goes through (does it carry a GRIP
   hold?), per request, in the WSGI thread: the app called directly, then
   through the holding wrapper.
2. A real server on a 2-thread WSGI pool: open N streams through a view that
   holds them and N through /sse, then time a page request while they are
   open.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import StreamClient, http_request, serve

from wsgi_sse import Hub, StreamOptions, hold_headers
from wsgi_sse._streams import Streams
from wsgi_sse._views import HoldingWSGIResource


def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/held":
        start_response("200 OK", hold_headers("bench"))
        return []
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


class _Reactor:
    def callFromThread(self, *args: Any) -> None:
        pass


class _Response:
    _requestFinished = False


def wrapper_cost(n: int) -> tuple[float, float]:
    """Median microseconds per call: the app alone, and through the holding wrapper."""
    streams = Streams(Hub(instance_id="b"), reactor=_Reactor(), options=StreamOptions())
    resource = HoldingWSGIResource(_Reactor(), None, page, streams)  # type: ignore[arg-type]
    environ = {"PATH_INFO": "/"}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    def raw() -> None:
        for _ in page(environ, start_response):
            pass

    def wrapped() -> None:
        app = resource._holding(_Response(), None, "b-0")  # type: ignore[arg-type]
        for _ in app(environ, start_response):
            pass

    out = []
    for fn in (raw, wrapped):
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - start) / n * 1e6)
        out.append(statistics.median(runs))
    return out[0], out[1]


def open_streams(server: Any, path: str, n: int) -> tuple[float, float, list[StreamClient]]:
    """
    Open C{n} streams one after the other: seconds until every response head
    arrived, and the memory allocated in the process per stream (server and
    client sides; the client side is the same for both kinds).
    """
    server.call(gc.collect)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    clients = [StreamClient(server.port, path) for _ in range(n)]
    seconds = time.perf_counter() - start
    server.wait_clients(n)
    server.call(gc.collect)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return seconds, (after - before) / n, clients


def page_latency(port: int, n: int = 50) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        status, _, _ = http_request(port, "GET", "/")
        assert status == 200
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args()
    raw, wrapped = wrapper_cost(100_000)
    print(f"ordinary response: app alone {raw:.2f} us, through the hold check {wrapped:.2f} us")
    with serve(page, threads=2) as server:
        idle = page_latency(server.port)
        for path in ("/sse?channel=bench", "/held"):
            seconds, memory, clients = open_streams(server, path, args.streams)
            latency = page_latency(server.port)
            print(
                f"{path:20} {args.streams} streams open in {seconds:.2f} s "
                f"({seconds / args.streams * 1e3:.2f} ms each, {memory / 1024:.1f} KiB each); "
                f"page median {latency:.2f} ms "
                f"with them open ({idle:.2f} ms without); WSGI threads busy: "
                f"{server.call(lambda: len(server.service.threadpool.working))}"
            )
            for c in clients:
                c.close()
            server.wait_clients(0)


if __name__ == "__main__":
    main()
