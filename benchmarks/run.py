"""
Benchmark wsgi-sse against its peers, side by side, in one run.

    python benchmarks/run.py                       # the full run (several minutes)
    python benchmarks/run.py --quick               # a smoke run with small numbers
    python benchmarks/run.py --clients 1000,5000,10000 --subjects wsgi-sse,seed

Subjects (each started fresh for every scenario, on 127.0.0.1):
  wsgi-sse   examples/bottle_app started as README says: ``twistd -ny server.py``
  seed       the seed blog's design (benchmarks/peers/seed_server.py)
  starlette  Starlette + sse-starlette on uvicorn, uvloop + httptools
  floor      a minimal C/epoll server, one send() per client per event
and, in the repeated scenarios only:
  wsgi-sse-logged  the same example with a log line per stream (log_streams=True)
  wsgi-sse-no-access-log  the same example without access log lines (access_log=False)
  wsgi-sse-no-sched-batch  the same example with its WSGI threads under the normal
                   scheduling policy (sched_batch=False)
  seed-quiet       the seed design without its prints, backlog 4096
  twisted-stream   a bare Twisted protocol holding the streams, no HTTP library
                   (accept only: what Twisted's reactor and transport cost)
  twisted-web-stream  a twisted.web resource holding the streams (accept only:
                   what twisted.web's channel and request add)
  twisted-web      the example's WSGI app under plain ``twistd web --wsgi``
  waitress         the example's WSGI app under waitress (10 threads)
  gunicorn         the example's WSGI app under gunicorn, one gthread worker (10 threads)
  wsgi-sse-baseline  with --baseline REF: the example on another version of
                   wsgi-sse (a commit, or a directory holding a checkout), next
                   to wsgi-sse in every repeated scenario, to measure a change
                   side by side
and, in benchmarks/requestcost.py only, the rungs below wsgi-sse's request:
  twisted-protocol      a bare Twisted protocol answering the knock
  twisted-web-resource  a twisted.web leaf resource answering it
  twisted-web-wsgi      a minimal WSGI app under twisted.web's WSGIResource
  wsgi-sse-minimal      the same minimal app under wsgi-sse, no access log

Scenarios: fanout, burst and slow fill the main table (one run per subject);
accept, burst-spread, fanout-spread and pages are repeated --rounds times and
reported with their spread and their ratio to the reference subject of the
same round.  Within a round the subjects take turns: --repeats turns each
in accept (each turn into a freshly started server) and in burst-spread
(every subject started at once); in fanout-spread both subjects run at once,
each holding its own clients, and take one turn per lockstep event.  Pages
starts the subjects one after another.  The order is reversed in every
other round (and turn), so that no subject is always started first.

The load comes from benchmarks/loadgen.c (compiled here with gcc), which
triggers every event with a real ``POST /knock`` (the view calls
``broadcast()``) and timestamps its arrival at each client.  Raw figures go to
benchmarks/results/ (JSON), the table to docs/benchmarks.md (between the
``figures`` markers) and the plot to docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BIN = RESULTS / "bin"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

SUBJECTS = ("wsgi-sse", "seed", "starlette", "floor")
# The example served by another version of wsgi-sse (--baseline), in the repeated scenarios.
BASELINE = "wsgi-sse-baseline"

# The repeated scenarios: (subjects, the reference wsgi-sse is divided by).
ROUNDS = {
    "accept": (
        (
            "wsgi-sse",
            "wsgi-sse-logged",
            "seed-quiet",
            "twisted-web-stream",
            "twisted-stream",
            "floor",
        ),
        "seed-quiet",
    ),
    "burst-spread": (
        ("wsgi-sse", "wsgi-sse-no-access-log", "wsgi-sse-no-sched-batch", "floor"),
        "floor",
    ),
    "fanout-spread": (("wsgi-sse", "floor"), "floor"),
    "pages": (
        (
            "wsgi-sse",
            "wsgi-sse-no-access-log",
            "wsgi-sse-no-sched-batch",
            "twisted-web",
            "waitress",
            "gunicorn",
        ),
        "twisted-web",
    ),
}
# Subjects that only serve the WSGI app's pages (no stream, no knock).
PAGE_ONLY = ("twisted-web", "waitress", "gunicorn")


# -- plumbing -------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise this process's (and so every child's) open-file limit to the hard cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def build() -> dict[str, Path]:
    """Compile the load generator and the C floor server."""
    BIN.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in (("loadgen", HERE / "loadgen.c"), ("floor", HERE / "peers" / "floor.c")):
        exe = BIN / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
        out[name] = exe
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def http(port: int, method: str, path: str, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        s.sendall(head.encode() + body)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes (from /proc)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads and its live child processes (gunicorn's worker)."""
    total = 0.0
    for one in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{one}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def context_switches(pid: int) -> int:
    """
    How often the threads of a process and of its live child processes
    have left their CPU, voluntarily or not (from /proc).
    """
    total = 0
    for one in [pid, *_children(pid)]:
        try:
            tasks = os.listdir(f"/proc/{one}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{one}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                            total += int(line.split()[1])
            except (OSError, ValueError):
                continue
    return total


def _children(pid: int) -> list[int]:
    """Descendant process ids of C{pid}, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Server:
    """One subject, started fresh on a free port; a context manager."""

    def __init__(
        self, subject: str, bins: dict[str, Path], log_dir: Path, cpus: set[int] | None = None
    ) -> None:
        self.subject = subject
        self.cpus = cpus
        self.port = free_port()
        self.bins = bins
        self.log_path = log_dir / f"{subject}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    baseline_root: Path | None = None
    """Where the C{wsgi-sse-baseline} subject's wsgi-sse and example are (L{baseline_tree})."""

    @property
    def root(self) -> Path:
        """The tree whose wsgi_sse package and example this subject runs."""
        if self.subject == BASELINE:
            if self.baseline_root is None:
                raise ValueError(f"{BASELINE} needs --baseline")
            return self.baseline_root
        return ROOT

    def command(self) -> tuple[list[str], Path]:
        twistd = shutil.which("twistd") or "twistd"
        example = self.root / "examples" / "bottle_app"
        if self.subject in ("wsgi-sse", BASELINE):
            return [twistd, "-ny", "server.py", "--pidfile="], example
        if self.subject == "wsgi-sse-logged":
            return [twistd, "-ny", "wsgi_sse_logged.py", "--pidfile="], HERE / "peers"
        if self.subject == "wsgi-sse-no-access-log":
            return [twistd, "-ny", "wsgi_sse_no_access_log.py", "--pidfile="], HERE / "peers"
        if self.subject == "wsgi-sse-no-sched-batch":
            return [twistd, "-ny", "wsgi_sse_no_sched_batch.py", "--pidfile="], HERE / "peers"
        if self.subject == "seed":
            return [twistd, "-ny", "seed_server.py", "--pidfile="], HERE / "peers"
        if self.subject == "seed-quiet":
            return [twistd, "-ny", "seed_quiet_server.py", "--pidfile="], HERE / "peers"
        if self.subject == "twisted-web":
            return [
                twistd, "-n", "--pidfile=", "web", "--wsgi", "app.application",
                "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            ], example  # fmt: skip
        if self.subject == "waitress":
            return [
                sys.executable, "-m", "waitress", "--listen", f"127.0.0.1:{self.port}",
                "--threads", "10", "app:application",
            ], example  # fmt: skip
        if self.subject == "gunicorn":
            return [
                sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
                "--threads", "10", "--bind", f"127.0.0.1:{self.port}", "app:application",
            ], example  # fmt: skip
        if self.subject == "starlette":
            return [
                sys.executable, "-m", "uvicorn", "starlette_server:app",
                "--loop", "uvloop", "--http", "httptools",
                "--host", "127.0.0.1", "--port", str(self.port),
            ], HERE / "peers"  # fmt: skip
        if self.subject == "floor":
            return [str(self.bins["floor"]), str(self.port)], HERE / "peers"
        if self.subject == "twisted-web-stream":
            return [
                sys.executable, "twisted_web_server.py", str(self.port), "--stream",
            ], HERE / "peers"  # fmt: skip
        if self.subject == "twisted-stream":
            return [sys.executable, "twisted_stream_server.py", str(self.port)], HERE / "peers"
        if self.subject == "twisted-protocol":
            return [sys.executable, "twisted_protocol_server.py", str(self.port)], HERE / "peers"
        if self.subject == "twisted-web-resource":
            return [sys.executable, "twisted_web_server.py", str(self.port)], HERE / "peers"
        if self.subject == "twisted-web-wsgi":
            return [
                sys.executable, "twisted_web_server.py", str(self.port), "--wsgi",
            ], HERE / "peers"  # fmt: skip
        if self.subject == "wsgi-sse-minimal":
            return [twistd, "-ny", "wsgi_sse_minimal.py", "--pidfile="], HERE / "peers"
        raise ValueError(self.subject)

    def __enter__(self) -> Server:
        cmd, cwd = self.command()
        env = dict(os.environ)
        root = self.root
        paths = [str(root), str(root / "examples" / "bottle_app"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
        env["WSGI_SSE_LISTEN"] = f"tcp:{self.port}:interface=127.0.0.1"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self._log, stderr=self._log, preexec_fn=on_cpus(self.cpus)
        )
        wait_port(self.port, self.proc)
        # Warm up: import everything a page view and a broadcast touch.
        http(self.port, "GET", "/")
        if self.subject in PAGE_ONLY:
            http(self.port, "GET", "/hello/")
        else:
            http(self.port, "POST", "/knock", b"name=warmup")
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def greets(self) -> bool:
        """Whether the subject writes something as soon as a stream opens."""
        return self.subject not in ("seed", "seed-quiet")


def available(subject: str) -> str | None:
    """Why C{subject} cannot run here (a missing tool), or L{None}."""
    import importlib.util

    module = {"waitress": "waitress", "gunicorn": "gunicorn"}.get(subject)
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install -e '.[bench]')"
    return None


def baseline_tree(ref: str, into: Path) -> tuple[Path, str]:
    """
    The wsgi-sse to compare the working tree with (C{--baseline}): C{ref}
    names a directory holding a checkout, used as it is, or a commit of this
    repository (a tag, a branch, C{HEAD~1}), whose C{wsgi_sse} package and
    examples are extracted into C{into}.  Return the tree's root and what it
    is (the full commit id, or the directory).

    @raise ValueError: if C{ref} is neither, or holds no Bottle example.
    """
    path = Path(ref)
    if path.is_dir():
        root = path.resolve()
        described = str(root)
    else:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        if found.returncode != 0:
            raise ValueError(f"--baseline {ref}: neither a directory nor a commit of {ROOT}")
        described = found.stdout.strip()
        root = into
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", described, "wsgi_sse", "examples"],
            cwd=ROOT, capture_output=True,
        )  # fmt: skip
        if archive.returncode != 0:
            raise ValueError(f"--baseline {ref}: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    for needed in ("wsgi_sse/__init__.py", "examples/bottle_app/server.py"):
        if not (root / needed).is_file():
            raise ValueError(f"--baseline {ref}: no {needed} there")
    return root, described


def use_baseline(ref: str) -> str:
    """
    Serve the C{wsgi-sse-baseline} subject from C{ref} (see L{baseline_tree})
    and say so; return what C{ref} is.

    @raise ValueError: as L{baseline_tree}.
    """
    root, described = baseline_tree(ref, RESULTS / "baseline")
    Server.baseline_root = root
    print(f"{BASELINE}: {described}", flush=True)
    return described


def on_cpus(cpus: set[int] | None) -> Any:
    """A C{preexec_fn} confining a child process to C{cpus} (L{None}: no confinement)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def split_cpus(cfg: argparse.Namespace) -> tuple[set[int] | None, set[int] | None]:
    """
    With C{--pin-loadgen} (the default): the CPUs for the server and for
    the load generator (the last one), so that they never share a core;
    else (L{None}, L{None}).
    """
    cpus = sorted(os.sched_getaffinity(0))
    if not cfg.pin_loadgen or len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


def spawn_loadgen(
    bins: dict[str, Path],
    server: Server,
    args: list[str],
    timeout: float,
    cpus: set[int] | None,
) -> subprocess.Popen[str]:
    """Start the load generator against C{server}, its pipes open, on C{cpus}."""
    cmd = [str(bins["loadgen"]), "--port", str(server.port), "--timeout", str(timeout), *args]
    if not server.greets:
        cmd.append("--no-greeting")
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=on_cpus(cpus),
    )


def loadgen(
    bins: dict[str, Path],
    server: Server,
    args: list[str],
    timeout: float,
    on_ready: Any = None,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    proc = spawn_loadgen(
        bins, server, [*args, "--wait-go"] if on_ready is not None else args, timeout, cpus
    )
    assert proc.stdin is not None and proc.stdout is not None
    extra: dict[str, Any] = {}
    if on_ready is not None:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            proc.kill()
            raise RuntimeError(f"loadgen: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        extra = on_ready() or {}
        proc.stdin.write("go\n")
        proc.stdin.flush()
    out, err = proc.communicate(timeout=timeout + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {err}")
    result: dict[str, Any] = json.loads(out)
    result.update(extra)
    return result


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v >= 0]
    return statistics.median(values) if values else None


# -- scenarios ------------------------------------------------------------------


def fanout(
    subject: str, bins: dict[str, Path], clients: int, cfg: argparse.Namespace
) -> dict[str, Any]:
    """Connect C idle clients, then lockstep events, then page GETs while events flow."""
    server_cpus, loadgen_cpus = split_cpus(cfg)
    with Server(subject, bins, cfg.log_dir, server_cpus) as server:
        base = rss(server.pid)

        def ready() -> dict[str, Any]:
            time.sleep(1.0)  # let the server settle (logs, GC) before measuring
            return {"rss_base": base, "rss_connected": rss(server.pid)}

        cpu0 = cpu_seconds(server.pid)
        result = loadgen(
            bins,
            server,
            [
                "--clients", str(clients), "--events", str(cfg.events),
                "--gap-ms", "100", "--page-gets", str(cfg.page_gets), "--page-event-ms", "500",
                "--event-timeout", "20",
            ],
            timeout=cfg.timeout,
            on_ready=ready,
            cpus=loadgen_cpus,
        )  # fmt: skip
        result["server_cpu_s"] = cpu_seconds(server.pid) - cpu0
    events = result["events"]
    result["summary"] = {
        key: med([e[key] for e in events]) for key in ("first", "median", "p99", "last", "post_rtt")
    }
    result["mem_per_conn"] = (result["rss_connected"] - result["rss_base"]) / clients
    return result


def burst(subject: str, bins: dict[str, Path], cfg: argparse.Namespace) -> dict[str, Any]:
    """Back-to-back events to a few hundred clients: deliveries per second."""
    server_cpus, loadgen_cpus = split_cpus(cfg)
    with Server(subject, bins, cfg.log_dir, server_cpus) as server:
        return burst_run(server, bins, cfg, loadgen_cpus)


def slow(subject: str, bins: dict[str, Path], cfg: argparse.Namespace) -> dict[str, Any]:
    """Some clients stop reading while big events flow: what the others see."""
    with Server(subject, bins, cfg.log_dir) as server:
        base = rss(server.pid)
        result = loadgen(
            bins,
            server,
            ["--clients", str(cfg.slow_clients), "--slow", str(cfg.slow_clients // 10),
             "--events", str(cfg.slow_events), "--payload", str(cfg.slow_payload), "--gap-ms", "20",
             "--event-timeout", "10"],
            timeout=cfg.timeout,
        )  # fmt: skip
        result["rss_growth"] = rss(server.pid) - base
    events = result["events"]
    result["summary"] = {key: med([e[key] for e in events]) for key in ("first", "median", "last")}
    return result


def accept_run(
    server: Server, bins: dict[str, Path], cfg: argparse.Namespace, cpus: set[int] | None
) -> dict[str, Any]:
    """Open many streams as fast as the server takes them: streams accepted per second."""
    cpu0 = cpu_seconds(server.pid)
    args = ["--clients", str(cfg.accept_clients)]
    result = loadgen(bins, server, args, timeout=cfg.timeout, cpus=cpus)
    result["server_cpu_s"] = cpu_seconds(server.pid) - cpu0
    return result


def burst_run(
    server: Server,
    bins: dict[str, Path],
    cfg: argparse.Namespace,
    cpus: set[int] | None,
    turn: int = 0,
) -> dict[str, Any]:
    """One burst against a running server: deliveries per second."""
    cpu0 = cpu_seconds(server.pid)
    switches0 = context_switches(server.pid)
    result = loadgen(
        bins,
        server,
        ["--clients", str(cfg.burst_clients), "--burst", str(cfg.burst_events),
         "--posters", str(cfg.burst_posters), "--event-timeout", "5", *fresh_sources(turn)],
        timeout=cfg.timeout,
        cpus=cpus,
    )  # fmt: skip
    result["server_cpu_s"] = cpu_seconds(server.pid) - cpu0
    result["server_switches"] = context_switches(server.pid) - switches0
    return result


def fresh_sources(turn: int) -> list[str]:
    """
    Load generator options for turn C{turn} against a running server: source
    addresses of its own, so that the connections the last turn closed (in
    TIME_WAIT for a minute) do not slow down finding a free port.
    """
    return ["--src-offset", str(turn * 8)]


def settle(server: Server, window: float = 0.2, limit: float = 10.0) -> None:
    """
    Wait until C{server} has finished the work the last run left it (closing
    thousands of connections takes a while), so that it does not take CPU
    from the next subject's run.
    """
    deadline = time.monotonic() + limit
    last = cpu_seconds(server.pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(server.pid)
        if now - last < 0.011:  # one clock tick or none
            return
        last = now


def start_all(
    stack: contextlib.ExitStack,
    subjects: tuple[str, ...],
    bins: dict[str, Path],
    cfg: argparse.Namespace,
    cpus: set[int] | None,
) -> dict[str, Server]:
    """Start every subject, each stopped when C{stack} closes."""
    return {s: stack.enter_context(Server(s, bins, cfg.log_dir, cpus)) for s in subjects}


def turns(subjects: tuple[str, ...], n: int) -> tuple[str, ...]:
    """The order of the subjects' turn C{n}: alternating, so no subject always goes first."""
    return subjects if n % 2 == 0 else subjects[::-1]


def speed_probe(cpus: set[int] | None) -> float:
    """
    The CPU time, in ms, that a fixed Python loop takes on C{cpus} (the
    servers' CPUs) at this moment: the machine's speed for the next turn.
    On a shared host it moves from one second to the next by as much as
    the figures do.
    """
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        start = time.thread_time()
        table: dict[int, str] = {}
        for i in range(100_000):
            table[i & 1023] = str(i)
        return (time.thread_time() - start) * 1000
    finally:
        os.sched_setaffinity(0, before)


def repeated(
    subjects: tuple[str, ...],
    bins: dict[str, Path],
    cfg: argparse.Namespace,
    run: Any,
    server_cpus: set[int] | None,
) -> dict[str, list[dict[str, Any]]]:
    """
    Start every subject at once (on C{server_cpus}), then let them take
    turns C{cfg.repeats} times, one C{run(server, turn)} each, waiting
    before each turn until no server is still busy with the last one.  The
    machine's speed drifts over seconds (see docs/benchmarks.md), so turns
    a second apart compare like with like far better than whole rounds in
    sequence.
    """
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in subjects}
    with contextlib.ExitStack() as stack:
        servers = start_all(stack, subjects, bins, cfg, server_cpus)
        for n in range(cfg.repeats):
            for s in turns(subjects, n):
                for server in servers.values():  # the last turn's server closing its clients
                    settle(server)
                probe = speed_probe(server_cpus)
                runs[s].append({**run(servers[s], n), "probe_ms": probe})
    return runs


def combine(runs: list[dict[str, Any]], value: Any) -> dict[str, Any]:
    """One subject's turns in a round: the median value, the summed CPU, every turn."""
    return {
        "value": med([value(r) for r in runs]),
        "server_cpu_s": sum(r["server_cpu_s"] for r in runs),
        "turns": runs,
    }


def accept_round(
    subjects: tuple[str, ...], bins: dict[str, Path], cfg: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """
    The accept scenario, one round: the subjects take turns C{cfg.repeats}
    times, each turn into a freshly started server (the storm after a
    restart); the median rate of each subject's turns.
    """
    server_cpus, loadgen_cpus = split_cpus(cfg)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in subjects}
    for n in range(cfg.repeats):
        for s in turns(subjects, n):
            with Server(s, bins, cfg.log_dir, server_cpus) as server:
                settle(server)
                probe = speed_probe(server_cpus)
                runs[s].append({**accept_run(server, bins, cfg, loadgen_cpus), "probe_ms": probe})
    out = {}
    for s, turns_ in runs.items():
        result = combine(turns_, lambda r: r["connect_rate"])
        result["clients"] = sum(r["clients"] for r in turns_)
        result["connected"] = sum(r["connected"] for r in turns_)
        result["failed"] = sum(r["failed"] for r in turns_)
        out[s] = result
    return out


def burst_round(
    subjects: tuple[str, ...], bins: dict[str, Path], cfg: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """The burst scenario, one round: the median deliveries per second of each subject's turns."""
    server_cpus, loadgen_cpus = split_cpus(cfg)
    runs = repeated(
        subjects,
        bins,
        cfg,
        lambda server, n: burst_run(server, bins, cfg, loadgen_cpus, n),
        server_cpus,
    )
    out = {}
    for s, turns_ in runs.items():
        result = combine(turns_, lambda r: r["burst"]["per_second"])
        result["burst"] = {
            key: sum(r["burst"][key] for r in turns_)
            for key in ("events", "deliveries", "expected")
        }
        out[s] = result
    return out


class Stepper:
    """A load generator run with --step: one lockstep event per call to L{step}."""

    def __init__(
        self,
        bins: dict[str, Path],
        server: Server,
        args: list[str],
        timeout: float,
        cpus: set[int] | None,
    ) -> None:
        self.timeout = timeout
        self.proc = spawn_loadgen(bins, server, ["--step", *args], timeout, cpus)
        self._expect("READY")

    def _expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"loadgen: expected {word}, got {line!r} {err}")

    def step(self) -> None:
        """Trigger one event and wait until every client has it (and the gap after it)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self._expect("EVENT")

    def finish(self) -> dict[str, Any]:
        """The load generator's JSON, once it has run its last event."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        # Read through the same buffered pipe as the EVENT lines.
        out = self.proc.stdout.read()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        if self.proc.wait(timeout=60) != 0:
            raise RuntimeError(f"loadgen failed ({self.proc.returncode}): {err}")
        result: dict[str, Any] = json.loads(out)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def fanout_round(
    subjects: tuple[str, ...], bins: dict[str, Path], cfg: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """
    Lockstep events to the largest client count, one round: every subject
    holds its clients at once, and they take turns event by event.  The
    value is the median of the last client's times.
    """
    server_cpus, loadgen_cpus = split_cpus(cfg)
    args = ["--clients", str(cfg.spread_clients), "--events", str(cfg.events),
            "--gap-ms", "100", "--event-timeout", "20"]  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        servers = start_all(stack, subjects, bins, cfg, server_cpus)
        cpu0, steppers = {}, {}
        for s, server in servers.items():
            cpu0[s] = cpu_seconds(server.pid)
            steppers[s] = Stepper(bins, server, args, cfg.timeout, loadgen_cpus)
            stack.callback(steppers[s].kill)
        for s in subjects:
            settle(servers[s])
        for n in range(cfg.events):
            for s in turns(subjects, n):
                steppers[s].step()
        # Every server is done: now the load generators may close their clients.
        for s in subjects:
            result = steppers[s].finish()
            result["server_cpu_s"] = cpu_seconds(servers[s].pid) - cpu0[s]
            events = result["events"]
            result["summary"] = {
                key: med([e[key] for e in events]) for key in ("first", "median", "last")
            }
            result["lasts"] = [e["last"] for e in events]
            result["value"] = result["summary"]["last"]
            out[s] = result
    return out


def wrk(
    port: int,
    path: str,
    seconds: float,
    connections: int,
    script: Path | None = None,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    """
    Run wrk (one thread) against C{path}, with the Lua C{script} if given,
    on C{cpus}; return requests/s and error counts.
    """
    options = ["-s", str(script)] if script is not None else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *options,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
        preexec_fn=on_cpus(cpus),
    ).stdout  # fmt: skip
    result: dict[str, Any] = {"requests_per_second": None, "non_2xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            result["requests_per_second"] = float(words[1])
        elif line.strip().startswith("Non-2xx"):
            result["non_2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            result["socket_errors"] = sum(int(w.rstrip(",")) for w in words[3::2])
        elif "requests in" in line:
            result["requests"] = int(words[0])
    return result


def pages(subject: str, bins: dict[str, Path], cfg: argparse.Namespace) -> dict[str, Any]:
    """The example's /hello/ page under wrk, 50 connections: requests per second."""
    with Server(subject, bins, cfg.log_dir) as server:
        if not cfg.quick:
            wrk(server.port, "/hello/", 1, cfg.page_connections)  # warm up
        cpu0 = cpu_seconds(server.pid)
        switches0 = context_switches(server.pid)
        result = wrk(server.port, "/hello/", cfg.page_seconds, cfg.page_connections)
        result["server_cpu_s"] = cpu_seconds(server.pid) - cpu0
        result["server_switches"] = context_switches(server.pid) - switches0
    rps = result["requests_per_second"]
    requests = result.get("requests") or 0
    result["value"] = rps
    # Server CPU per page, counting the server's threads and (gunicorn) its worker.
    result["cpu_us_per_request"] = result["server_cpu_s"] / requests * 1e6 if requests else None
    return result


def pages_round(
    subjects: tuple[str, ...], bins: dict[str, Path], cfg: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """The pages scenario, one round: each subject started in turn, under wrk."""
    return {s: pages(s, bins, cfg) for s in subjects}


ROUND_RUNNERS = {
    "accept": accept_round,
    "burst-spread": burst_round,
    "fanout-spread": fanout_round,
    "pages": pages_round,
}
HIGHER_IS_BETTER = {"accept": True, "burst-spread": True, "fanout-spread": False, "pages": True}
CPU_UNITS = {
    "accept": "µs per stream",
    "burst-spread": "µs per knock",
    "fanout-spread": "µs per stream",
    "pages": "µs per page",
}
UNITS = {
    "accept": "streams/s",
    "burst-spread": "deliveries/s",
    "fanout-spread": "ms, last client",
    "pages": "requests/s",
}


def run_rounds(
    scenario: str, bins: dict[str, Path], cfg: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """Run one repeated scenario: every subject once per round, taking turns."""
    subjects, _ = ROUNDS[scenario]
    if cfg.round_subjects:
        wanted = cfg.round_subjects.split(",")
        subjects = tuple(s for s in subjects if s in wanted)
    if Server.baseline_root is not None and "wsgi-sse" in subjects:
        at = subjects.index("wsgi-sse") + 1
        subjects = (*subjects[:at], BASELINE, *subjects[at:])
    runner = ROUND_RUNNERS[scenario]
    out: dict[str, list[dict[str, Any]]] = {}
    for subject in subjects:
        why = available(subject)
        if why is not None:
            print(f"[{subject}] skipped: {why}", flush=True)
    subjects = tuple(s for s in subjects if available(s) is None)
    for n in range(cfg.rounds):
        print(f"{scenario}, round {n + 1}/{cfg.rounds}: {', '.join(subjects)} ...", flush=True)
        # The order alternates from round to round too: the servers are
        # started (and in fan-out, connected) in it, and the first one
        # started spends a few percent more CPU than the others.
        for subject, result in runner(turns(subjects, n), bins, cfg).items():
            out.setdefault(subject, []).append(result)
            value = result["value"]
            shown = ms(value) if scenario == "fanout-spread" else fmt_num(value)
            print(f"  [{subject}] {shown} {UNITS[scenario]}", flush=True)
    return out


def cpu_us(scenario: str, result: dict[str, Any]) -> float | None:
    """
    The server's CPU time per unit of work in one round (a count of work,
    which moves far less than rates and latencies on a shared machine).
    """
    cpu = result.get("server_cpu_s")
    if cpu is None:
        return None
    if scenario == "accept":
        return float(cpu / result["clients"] * 1e6)
    if scenario == "burst-spread":  # per knock: the POST, the view, the fan-out
        events = result["burst"]["events"]
        return float(cpu / events * 1e6) if events else None
    if scenario == "fanout-spread":  # per stream: connecting, then every event
        return float(cpu / result["clients"] * 1e6)
    requests = result.get("requests")
    return float(cpu / requests * 1e6) if requests else None


def per_round(values: list[float], against: list[float]) -> list[float]:
    """
    Each round's value divided by C{against}'s in the same round; none
    unless C{against} has a value for every round.
    """
    if not against or len(against) != len(values):
        return []
    return [v / a for v, a in zip(values, against, strict=True) if v and a]


def spread_rows(rounds: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per (scenario, subject): median, range and the ratio to the reference."""
    rows = []
    for scenario, by_subject in rounds.items():
        _, reference = ROUNDS[scenario]
        ref_values = [r["value"] for r in by_subject.get(reference, [])]
        base_values = [r["value"] for r in by_subject.get(BASELINE, [])]
        for subject, results in by_subject.items():
            values = [r["value"] for r in results]
            ratios = per_round(values, ref_values) if subject != reference else []
            # With --baseline: the working tree against the other version, round by round.
            baseline_ratios = per_round(values, base_values) if subject == "wsgi-sse" else []
            rows.append(
                {
                    "scenario": scenario,
                    "subject": subject,
                    "values": values,
                    "median": med(values),
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "reference": reference,
                    "ratios": ratios,
                    "baseline_ratios": baseline_ratios,
                    "cpu_us": med([cpu_us(scenario, r) for r in results]),
                }
            )
    return rows


def spread_table(rounds: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = [
        "| scenario | subject | median | every round | ÷ reference, per round "
        "| server CPU (median) |",
        "|---|---|---|---|---|---|",
    ]
    for row in spread_rows(rounds):
        scenario = row["scenario"]
        show = (lambda v: ms(v)) if scenario == "fanout-spread" else fmt_num
        ref = f"÷ {row['reference']}: {times(row['ratios'])}" if row["ratios"] else "–"
        if row.get("baseline_ratios"):
            ref = f"{ref}; ÷ {BASELINE}: {times(row['baseline_ratios'])}"
        cpu = row["cpu_us"]
        cpu_cell = "–" if cpu is None else f"{cpu:,.0f} {CPU_UNITS[scenario]}"
        lines.append(
            f"| {scenario} ({UNITS[scenario]}) | {row['subject']} | {show(row['median'])} | "
            + ", ".join(show(v) for v in row["values"])
            + f" | {ref} | {cpu_cell} |"
        )
    return "\n".join(lines)


# -- report -----------------------------------------------------------------------


def times(ratios: list[float]) -> str:
    """Ratios as the tables show them, with two decimals and a times sign."""
    return ", ".join(f"{r:.2f}×" for r in ratios)


def ms(v: float | None) -> str:
    return "–" if v is None else (f"{v * 1000:.2f}" if v < 0.1 else f"{v * 1000:.0f}")


def fmt_num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "KiB":
        return f"{v / 1024:.1f}"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def metrics(
    results: dict[str, Any], clients: list[int]
) -> list[tuple[str, str, str, dict[str, float | None]]]:
    """Rows of the table: (label, unit, better, {subject: value in base units})."""
    rows: list[tuple[str, str, str, dict[str, float | None]]] = []
    subjects = list(results)

    def get(subject: str, *path: Any) -> Any:
        node: Any = results[subject]
        for key in path:
            if node is None or key not in node:
                return None
            node = node[key]
        return node

    for c in clients:
        for key, label in (("first", "first client"), ("median", "median client"),
                           ("p99", "p99 client"), ("last", "last client")):  # fmt: skip
            values = {s: get(s, "fanout", str(c), "summary", key) for s in subjects}
            rows.append((f"{c:,} clients: {label}", "ms", "lower", values))
    top = str(max(clients))
    rows.append((f"memory per idle connection ({int(top):,})", "KiB", "lower",
                 {s: get(s, "fanout", top, "mem_per_conn") for s in subjects}))  # fmt: skip
    rows.append((f"connections accepted per second ({int(top):,})", "/s", "higher",
                 {s: get(s, "fanout", top, "connect_rate") for s in subjects}))  # fmt: skip
    rows.append((f"page GET median, {int(top):,} connected, events flowing", "ms", "lower",
                 {s: get(s, "fanout", top, "page", "median") for s in subjects}))  # fmt: skip
    rows.append((f"page GET p99, {int(top):,} connected", "ms", "lower",
                 {s: get(s, "fanout", top, "page", "p99") for s in subjects}))  # fmt: skip
    rows.append(("burst: deliveries per second", "/s", "higher",
                 {s: get(s, "burst", "burst", "per_second") for s in subjects}))  # fmt: skip
    rows.append(("slow readers: last reader's latency", "ms", "lower",
                 {s: get(s, "slow", "summary", "last") for s in subjects}))  # fmt: skip
    rows.append(("slow readers: server memory growth", "KiB", "lower",
                 {s: get(s, "slow", "rss_growth") for s in subjects}))  # fmt: skip
    rows.append(("slow readers: non-readers dropped", "", "n/a",
                 {s: get(s, "slow", "slow", "dropped") for s in subjects}))  # fmt: skip
    return rows


def table(results: dict[str, Any], clients: list[int]) -> str:
    subjects = list(results)
    others = [s for s in subjects if s != "wsgi-sse"]
    head = ["", *subjects] + [f"wsgi-sse ÷ {s}" for s in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, unit, _better, values in metrics(results, clients):
        cells = [f"{label} ({unit})" if unit else label]
        for s in subjects:
            v = values.get(s)
            cells.append(ms(v) if unit == "ms" else fmt_num(v, unit))
        mine = values.get("wsgi-sse")
        for s in others:
            v = values.get(s)
            if mine is None or v is None or v == 0 or unit == "":
                cells.append("–")
            else:
                cells.append(f"{mine / v:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict[str, Any], clients: list[int]) -> list[tuple[str, bool | None, str]]:
    top = str(max(clients))
    w = results.get("wsgi-sse", {})

    def g(subject: str, *path: str) -> Any:
        node: Any = results.get(subject)
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    out: list[tuple[str, bool | None, str]] = []
    last = g("wsgi-sse", "fanout", top, "summary", "last")
    seed_last = g("seed", "fanout", top, "summary", "last")
    floor_last = g("floor", "fanout", top, "summary", "last")
    if last is not None and seed_last:
        out.append(("last client ≤ 0.5× seed", last <= 0.5 * seed_last, f"{last / seed_last:.2f}×"))
    if last is not None and floor_last:
        out.append(("last client ≤ 2× floor", last <= 2 * floor_last, f"{last / floor_last:.2f}×"))
    first = g("wsgi-sse", "fanout", top, "summary", "first")
    if first is not None:
        out.append(("first client ≤ 5 ms after the POST", first <= 0.005, f"{first * 1000:.2f} ms"))
    mem = g("wsgi-sse", "fanout", top, "mem_per_conn")
    if mem is not None:
        out.append(("≤ 7 KiB per idle connection", mem <= 7 * 1024, f"{mem / 1024:.1f} KiB"))
    rate = g("wsgi-sse", "fanout", top, "connect_rate")
    if rate is not None:
        out.append(("≥ 5,000 connections/s", rate >= 5000, f"{rate:,.0f}/s"))
    page = g("wsgi-sse", "fanout", top, "page", "median")
    if page is not None:
        out.append(("page GET median ≤ 5 ms", page <= 0.005, f"{page * 1000:.2f} ms"))
    b = g("wsgi-sse", "burst", "burst", "per_second")
    sb = g("seed", "burst", "burst", "per_second")
    if b and sb:
        out.append(("burst ≥ 2× seed", b >= 2 * sb, f"{b / sb:.2f}×"))
    del w
    return out


def plot(results: dict[str, Any], clients: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    colors = {"wsgi-sse": "#1f77b4", "seed": "#d62728", "starlette": "#ff7f0e", "floor": "#2ca02c"}
    for s, r in results.items():
        fan = r.get("fanout", {})
        xs = [c for c in clients if str(c) in fan]
        for key, style, ax in (("last", "-o", axes[0]), ("first", "-o", axes[1])):
            ys = [fan[str(c)]["summary"][key] * 1000 for c in xs]
            ax.plot(xs, ys, style, label=s, color=colors.get(s))
    axes[0].set_title("fan-out: last client (median of events)")
    axes[1].set_title("fan-out: first client (median of events)")
    for ax in axes[:2]:
        ax.set_xlabel("idle clients")
        ax.set_ylabel("ms after the POST")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    subjects = list(results)
    values = [results[s].get("burst", {}).get("burst", {}).get("per_second", 0) for s in subjects]
    axes[2].bar(subjects, values, color=[colors.get(s) for s in subjects])
    axes[2].set_title("burst: deliveries per second")
    axes[2].grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import twisted

    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, Twisted {twisted.__version__}"
    )


def load_note(load: Any) -> str:
    """The load-average remark of the doc's header line (the machine's other work)."""
    if not load:
        return ""
    return f"; load average {min(load):.1f}–{max(load):.1f} while it ran (2.0 = both cores busy)"


def figure_options(args: list[str]) -> list[str]:
    """C{args} without the options that change where figures go, not what they are."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--no-docs" or arg.startswith("--output="):
            pass
        elif arg == "--output":
            skip = True
        else:
            kept.append(arg)
    return kept


def write_doc(
    results: dict[str, Any], clients: list[int], command: str, when: str, load: Any = None
) -> str:
    lines = [
        START,
        f"Run {when} on {machine()} with `{command}`{load_note(load)}.",
        "",
        "Latencies are medians over the events, in ms from the moment the load generator "
        "opened the `POST /knock` connection; ratios are wsgi-sse's figure divided by the peer's "
        "(below 1× is better for times and memory, above 1× for rates).",
        "",
        table(results, clients),
        "",
        "Performance goals, checked at the largest client count:",
        "",
    ]
    for name, ok, value in targets(results, clients):
        mark = "met" if ok else "**not met**"
        lines.append(f"- {name}: {value} — {mark}")
    cpu = {
        s: r.get("fanout", {}).get(str(max(clients)), {}).get("loadgen_cpu_share")
        for s, r in results.items()
    }
    lines += [
        "",
        "Load generator CPU share during the largest fan-out run (1.0 = one core busy): "
        + ", ".join(f"{s} {v:.2f}" for s, v in cpu.items() if v is not None)
        + ".",
        "",
        "![Fan-out latency and burst throughput](benchmarks.png)",
        END,
    ]
    block = "\n".join(lines)
    if DOC.exists():
        text = DOC.read_text()
        if START in text and END in text:
            before, rest = text.split(START, 1)
            after = rest.split(END, 1)[1]
            DOC.write_text(before + block + after)
            return block
    return block


SPREAD_START, SPREAD_END = "<!-- spread:start -->", "<!-- spread:end -->"


def write_spread_doc(rounds: dict[str, Any], command: str, when: str, load: Any = None) -> None:
    """Put the repeated scenarios' table between the C{spread} markers of the doc."""
    block = "\n".join(
        [
            SPREAD_START,
            f"Run {when} on {machine()} with `{command}`{load_note(load)}.",
            "",
            spread_table(rounds),
            SPREAD_END,
        ]
    )
    if DOC.exists():
        text = DOC.read_text()
        if SPREAD_START in text and SPREAD_END in text:
            before, rest = text.split(SPREAD_START, 1)
            DOC.write_text(before + block + rest.split(SPREAD_END, 1)[1])


# -- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument("--clients", default=None, help="comma-separated idle client counts")
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument(
        "--scenarios", default="fanout,burst,slow,accept,burst-spread,fanout-spread,pages"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the repeated scenarios")
    parser.add_argument(
        "--round-subjects",
        default=None,
        help="comma-separated: only these subjects in the repeated scenarios (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="accept and burst-spread: turns per subject in each round (default 5)",
    )
    parser.add_argument("--events", type=int, default=None, help="lockstep events per count")
    parser.add_argument(
        "--burst-clients",
        type=int,
        default=None,
        metavar="N",
        help="burst and burst-spread: streams that receive every knock (default 200; 1 leaves "
        "little but the cost of each knock's own request)",
    )
    parser.add_argument(
        "--burst-events",
        type=int,
        default=None,
        metavar="N",
        help="burst and burst-spread: knocks per burst (default 300)",
    )
    parser.add_argument(
        "--burst-posters",
        type=int,
        default=4,
        metavar="K",
        help="burst and burst-spread: knocks in flight at once, each POST on a connection of its "
        "own (default 4; 1 posts them one after another, each waiting for the last one's answer)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/ (raw JSON only)")
    parser.add_argument(
        "--pin-loadgen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fan-out, burst and accept scenarios: run the load generator on the last CPU and "
        "the server on the others, so that they never share a core, as when the clients are other "
        "machines (default; --no-pin-loadgen lets Linux place them, which puts them together on "
        "some rounds and not others: see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REF",
        help="the repeated scenarios also run the example on another version of wsgi-sse "
        f"(subject {BASELINE}), a commit of this repository (HEAD~1, a tag) or a directory "
        "holding a checkout, and report wsgi-sse's figure divided by it, round by round",
    )
    parser.add_argument("--output", default=None, help="raw JSON path")
    parser.add_argument(
        "--report",
        default=None,
        help="write the docs from this raw JSON instead of running (with --no-docs: print the "
        "tables only)",
    )
    cfg = parser.parse_args(argv)
    if cfg.report:
        raw = json.loads(Path(cfg.report).read_text())
        if raw.get("rounds"):
            print(spread_table(raw["rounds"]))
        if cfg.no_docs:
            return 0
        # (Runs recorded with --no-docs or --output: the same figures.)
        command = " ".join(figure_options(raw["command"].split()))
        if raw.get("rounds"):
            write_spread_doc(raw["rounds"], command, raw["when"], raw.get("load_average"))
        if any("fanout" in r for r in raw["results"].values()):
            write_doc(raw["results"], raw["clients"], command, raw["when"], raw.get("load_average"))
            plot(raw["results"], raw["clients"])
        return 0
    quick = cfg.quick
    clients = [
        int(c) for c in (cfg.clients or ("50,200" if quick else "1000,5000,10000")).split(",")
    ]
    cfg.events = cfg.events or (3 if quick else 12)
    cfg.page_gets = 5 if quick else 40
    default_clients, default_events = (20, 20) if quick else (200, 300)
    if cfg.burst_clients is None:
        cfg.burst_clients = default_clients
    if cfg.burst_events is None:
        cfg.burst_events = default_events
    for option, value in (
        ("--burst-clients", cfg.burst_clients),
        ("--burst-events", cfg.burst_events),
        ("--burst-posters", cfg.burst_posters),
    ):
        if value < 1:
            parser.error(f"{option} must be at least 1")
    cfg.accept_clients = 200 if quick else max(clients)
    cfg.spread_clients = max(clients)
    cfg.page_seconds, cfg.page_connections = (1, 50) if quick else (5, 50)
    cfg.rounds = cfg.rounds or (1 if quick else 5)
    cfg.repeats = cfg.repeats or (2 if quick else 5)
    # Enough bytes per non-reader to overflow the kernel's socket buffers and
    # wsgi-sse's default 1 MiB cap: 200 events of 32 kB.
    cfg.slow_clients, cfg.slow_events = (20, 5) if quick else (200, 200)
    cfg.slow_payload = 1024 if quick else 32768
    cfg.timeout = 60.0 if quick else 300.0
    subjects = [s for s in cfg.subjects.split(",") if s]
    scenarios = set(cfg.scenarios.split(","))
    unknown = scenarios - {"fanout", "burst", "slow", *ROUNDS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if "pages" in scenarios and shutil.which("wrk") is None:
        parser.error("the pages scenario needs wrk (apt-get install wrk)")
    for s in subjects:
        if s not in SUBJECTS:
            parser.error(f"unknown subject {s!r}")
    limit = raise_fd_limit()
    if max(clients) + 200 > limit:
        parser.error(f"{max(clients)} clients need more open files than the limit {limit}")
    baseline = None
    if cfg.baseline:
        try:
            described = use_baseline(cfg.baseline)
        except ValueError as e:
            parser.error(str(e))
        baseline = {"ref": cfg.baseline, "version": described}
    bins = build()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    cfg.log_dir = RESULTS / f"logs-{stamp}"
    cfg.log_dir.mkdir(parents=True, exist_ok=True)

    # The machine's other work: sampled between scenarios, reported with the figures.
    load = [os.getloadavg()[0]]
    results: dict[str, Any] = {}
    for s in subjects:
        r: dict[str, Any] = {}
        results[s] = r
        if "fanout" in scenarios:
            r["fanout"] = {}
            for c in clients:
                print(f"[{s}] fan-out to {c} clients ...", flush=True)
                f = fanout(s, bins, c, cfg)
                r["fanout"][str(c)] = f
                print(
                    f"  first {ms(f['summary']['first'])} ms, last {ms(f['summary']['last'])} ms, "
                    f"{f['mem_per_conn'] / 1024:.1f} KiB/conn, {f['connect_rate']:,.0f} conn/s, "
                    f"page {ms(f['page']['median'])} ms, loadgen cpu {f['loadgen_cpu_share']:.2f}",
                    flush=True,
                )
        if "burst" in scenarios:
            print(f"[{s}] burst ...", flush=True)
            r["burst"] = burst(s, bins, cfg)
            print(f"  {r['burst']['burst']['per_second']:,.0f} deliveries/s", flush=True)
        if "slow" in scenarios:
            print(f"[{s}] slow readers ...", flush=True)
            r["slow"] = slow(s, bins, cfg)
            load.append(os.getloadavg()[0])
            print(
                f"  last reader {ms(r['slow']['summary']['last'])} ms, "
                f"growth {r['slow']['rss_growth'] / 1024:,.0f} KiB, "
                f"dropped {r['slow']['slow']['dropped']}",
                flush=True,
            )

    rounds: dict[str, Any] = {}
    for scenario in ROUNDS:
        if scenario in scenarios:
            rounds[scenario] = run_rounds(scenario, bins, cfg)
            load.append(os.getloadavg()[0])

    command = "python benchmarks/run.py" + (
        " " + " ".join(figure_options(sys.argv[1:])) if argv is None and sys.argv[1:] else ""
    )
    raw = {
        "when": when,
        "machine": machine(),
        "command": command,
        "clients": clients,
        "results": results,
        "rounds": rounds,
        "spread": spread_rows(rounds),
        "load_average": load,
        "baseline": baseline,
    }
    out = Path(cfg.output) if cfg.output else RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(raw, indent=1))
    (RESULTS / "latest.json").write_text(json.dumps(raw, indent=1))
    if "fanout" in scenarios and len(subjects) > 1:
        print()
        print(table(results, clients))
        print()
        for name, ok, value in targets(results, clients):
            print(f"{'ok ' if ok else 'NO '} {name}: {value}")
    if rounds:
        print()
        print(spread_table(rounds))
    if not cfg.no_docs and "fanout" in scenarios:
        write_doc(results, clients, command, when, load)
        plot(results, clients)
    if not cfg.no_docs and rounds:
        write_spread_doc(rounds, command, when, load)
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
