"""
What the shared backplanes cost: delivery latency added by the Redis or
PostgreSQL hop and throughput with 1, 2 and 4 server processes, against the
single-process hub, all in one run on this machine.

    python benchmarks/bench_redis.py            # about a minute
    python benchmarks/bench_redis.py --quick    # about 30 seconds, smaller figures

Needs redis-server on PATH, PostgreSQL's server binaries
(/usr/lib/postgresql/<version>/bin, Debian's ``postgresql``) and the ``redis``
and ``postgres`` extras.  Everything runs on 127.0.0.1: one redis-server (no
persistence), one PostgreSQL (a throwaway data directory, fsync off), the server processes
(``python -m wsgi_sse bench_redis:app``), and the clients, read by one
selector loop in this process.

Latency: one event stamped with the time it was broadcast, sent from a view of
process 0; "first" and "last" are when the first and the last of all clients
(spread over every process) had it; medians over the rounds.  Throughput: each
process broadcasts its share of a burst from a view at once; events/s is the
burst size over the time until every client had every event.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# -- the app the server processes run -------------------------------------------


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """POST /burst?tag=T&n=N&stamp=1 broadcasts N events "T:i[:time]" on channel "bench"."""
    from wsgi_sse import broadcast

    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ["PATH_INFO"] == "/burst":
        tag, n, stamp = query["tag"], int(query.get("n", "1")), query.get("stamp") == "1"
        for i in range(n):
            broadcast(f"{tag}:{i}:{time.time():.6f}" if stamp else f"{tag}:{i}", channel="bench")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_postgres(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import glob

    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    data = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(
        [*as_postgres, f"{bindir}/initdb", "-D", str(data / "d"), "-A", "trust", "-U", "postgres"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            *as_postgres,
            f"{bindir}/postgres",
            "-D",
            str(data / "d"),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    time.sleep(0.5)
    proc.data = data  # type: ignore[attr-defined]
    return proc, f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop_postgres(proc: subprocess.Popen[bytes]) -> None:
    import signal

    data = proc.data  # type: ignore[attr-defined]
    try:
        # The postmaster itself (runuser does not pass signals on): fast shutdown.
        os.kill(int((data / "d" / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
        proc.wait(15)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()
    shutil.rmtree(data, ignore_errors=True)


def start_servers(count: int, backplane_url: str | None, tmp: Path) -> list[tuple[Any, int]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("WSGI_SSE_REDIS_URL", None)
    env.pop("WSGI_SSE_BACKPLANE_URL", None)
    if backplane_url:
        env["WSGI_SSE_BACKPLANE_URL"] = backplane_url
    servers = []
    for n in range(count):
        port = free_port()
        log = open(tmp / f"server-{n}-{port}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wsgi_sse",
                "bench_redis:app",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--threads",
                "8",
            ],
            cwd=HERE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        servers.append((proc, port))
    for proc, port in servers:
        wait_port(port, proc)
    return servers


def stop_servers(servers: list[tuple[Any, int]]) -> None:
    for proc, _ in servers:
        proc.terminate()
    for proc, _ in servers:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def post(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(f"POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        while s.recv(65536):
            pass


# -- clients ------------------------------------------------------------------------------


class Clients:
    """Many event streams read by one selector loop: counts events, keeps stamped lines."""

    def __init__(self, ports: list[int], count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.counts = [0] * count
        self.tails = [b""] * count
        self.lines: list[list[tuple[float, bytes]]] = [[] for _ in range(count)]
        self.partial = [b""] * count
        self.socks = []
        for n in range(count):
            s = socket.create_connection(("127.0.0.1", ports[n % len(ports)]))
            s.sendall(b"GET /sse?channel=bench HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            s.setblocking(False)
            self.socks.append(s)
            self.selector.register(s, selectors.EVENT_READ, n)
        self.stamped = False
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            for key, _ in self.selector.select(0.1):
                n = key.data
                try:
                    data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not data:
                    self.selector.unregister(key.fileobj)
                    continue
                now = time.time()
                joined = self.tails[n] + data
                self.counts[n] += joined.count(b"\ndata: ")
                self.tails[n] = joined[-6:]
                if self.stamped:
                    text = self.partial[n] + data
                    *lines, self.partial[n] = text.split(b"\n")
                    self.lines[n].extend(
                        (now, line) for line in lines if line.startswith(b"data: ")
                    )

    def wait(self, total: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while min(self.counts) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"clients got {min(self.counts)}/{total} events")
            time.sleep(0.002)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        for s in self.socks:
            s.close()


# -- measurements ----------------------------------------------------------------------------


def measure(
    processes: int, backplane_url: str | None, clients: int, rounds: int, burst: int, tmp: Path
) -> dict[str, float]:
    servers = start_servers(processes, backplane_url, tmp)
    ports = [port for _, port in servers]
    try:
        time.sleep(0.5)  # let the backplanes connect
        readers = Clients(ports, clients)
        time.sleep(0.3)
        # Warm-up.
        expected = 20
        post(ports[0], "/burst?tag=w&n=20")
        readers.wait(expected)

        readers.stamped = True
        firsts, lasts = [], []
        for r in range(rounds):
            for n in range(clients):
                readers.lines[n].clear()
            post(ports[0], f"/burst?tag=L{r}&n=1&stamp=1")
            expected += 1
            readers.wait(expected)
            sent = float(readers.lines[0][-1][1].rsplit(b":", 1)[1])
            received = [lines[-1][0] for lines in readers.lines]
            firsts.append(min(received) - sent)
            lasts.append(max(received) - sent)
        readers.stamped = False

        share = burst // processes
        started = time.perf_counter()
        threads = [
            threading.Thread(target=post, args=(port, f"/burst?tag=T{i}&n={share}"))
            for i, port in enumerate(ports)
        ]
        for t in threads:
            t.start()
        expected += share * processes
        readers.wait(expected)
        elapsed = time.perf_counter() - started
        for t in threads:
            t.join()
        readers.close()
    finally:
        stop_servers(servers)
    return {
        "first_ms": statistics.median(firsts) * 1000,
        "last_ms": statistics.median(lasts) * 1000,
        "events_per_s": share * processes / elapsed,
        "deliveries_per_s": share * processes * clients / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small figures in a few seconds")
    parser.add_argument("--clients", type=int, default=40, help="streams, spread over processes")
    args = parser.parse_args()
    rounds, burst = (10, 2000) if args.quick else (40, 20000)
    clients = args.clients
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_proc, url = start_redis(tmp)
        pg_proc, pg_url = start_postgres(tmp)
        try:
            scenarios = [
                ("hub, 1 process (no backplane)", 1, None),
                ("Redis, 1 process", 1, url),
                ("Redis, 2 processes", 2, url),
                ("Redis, 4 processes", 4, url),
                ("PostgreSQL, 1 process", 1, pg_url),
                ("PostgreSQL, 2 processes", 2, pg_url),
            ]
            results = []
            for name, count, backplane_url in scenarios:
                print(f"measuring: {name} ...", file=sys.stderr, flush=True)
                results.append((name, measure(count, backplane_url, clients, rounds, burst, tmp)))
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
            stop_postgres(pg_proc)
    base = results[0][1]
    print(
        f"\n{clients} clients, {rounds} latency rounds, bursts of {burst} events, "
        f"{os.cpu_count()} CPUs\n"
    )
    header = (
        f"{'setup':<30} {'first ms':>9} {'last ms':>9} {'events/s':>10} "
        f"{'deliveries/s':>13} {'vs hub':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results:
        print(
            f"{name:<30} {r['first_ms']:>9.2f} {r['last_ms']:>9.2f} {r['events_per_s']:>10.0f} "
            f"{r['deliveries_per_s']:>13.0f} {r['events_per_s'] / base['events_per_s']:>6.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
