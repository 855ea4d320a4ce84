"""
What one heartbeat costs the reactor thread with many streams open: the
CPU time (user and system, the C{send()} calls included) of one
C{Streams.beat()}, beside a plain loop calling C{send()} on each stream;
then the same two loops with each stream's socket replaced by a no-op
(C{len}), which leaves the loops' own Python cost.

    python benchmarks/bench_heartbeat.py [--streams 10000] [--beats 10]

A real server runs in crochet's reactor thread; a child process opens the
streams over loopback and holds them without reading (a heartbeat is 7
bytes a stream, so the socket buffers never fill).  Both loops are timed
in the reactor thread, alternately, 5 rounds of C{--beats} beats each; the
figures are medians, in milliseconds per beat.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import serve

from wsgi_sse._streams import _HEARTBEAT

# The child: open N streams in batches, report, hold them until stdin closes.
_HOLDER = """
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
request = b"GET /sse HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    held.append(s)
    if i % 200 == 199:
        time.sleep(0.02)
print("ready", flush=True)
sys.stdin.read()
"""


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("204 No Content", [])
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--beats", type=int, default=10)
    args = parser.parse_args()
    n, beats = args.streams, args.beats
    with serve(app, heartbeat=0, max_connections=n + 10) as server:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(server.port), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            server.wait_clients(n, timeout=120)
            time.sleep(1.0)  # every opening written
            streams = server.service.sse_resource.streams

            def per_client_send() -> None:
                for client in tuple(streams.clients):
                    client.send(_HEARTBEAT)

            def timed(loop: Any) -> float:
                start = time.thread_time()
                for _ in range(beats):
                    loop()
                return (time.thread_time() - start) / beats * 1000

            rows: dict[str, list[float]] = {
                "send() per stream": [],
                "Streams.beat()": [],
                "send() per stream, no system call": [],
                "Streams.beat(), no system call": [],
            }
            for _ in range(5):
                rows["send() per stream"].append(server.call(timed, per_client_send))
                rows["Streams.beat()"].append(server.call(timed, streams.beat))
            fast = server.call(lambda: sum(1 for c in streams.clients if c._sock))

            def without_syscalls(loop: Any) -> float:
                # A socket whose send() takes every byte, in C (len).
                null = SimpleNamespace(send=len)
                saved = [(c, c._sock) for c in streams.clients if c._sock]
                for client, _ in saved:
                    client._sock = null
                try:
                    return timed(loop)
                finally:
                    for client, sock in saved:
                        client._sock = sock

            for _ in range(5):
                rows["send() per stream, no system call"].append(
                    server.call(without_syscalls, per_client_send)
                )
                rows["Streams.beat(), no system call"].append(
                    server.call(without_syscalls, streams.beat)
                )
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(30)
    print(f"\nreactor-thread CPU per heartbeat, {n} streams ({fast} on the fast path)")
    print("(median of 5)\n")
    print("| loop | ms per beat | vs the send() loop above it |")
    print("|---|---:|---:|")
    names = list(rows)
    for name in names:
        base = statistics.median(rows[names[0] if "system" not in name else names[2]])
        cost = statistics.median(rows[name])
        print(f"| {name} | {cost:.2f} | {cost / base:.2f} |")


if __name__ == "__main__":
    main()
