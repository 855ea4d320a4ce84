"""
Where a server's CPU goes, per knock or per accepted stream: the kernel,
the Python interpreter, the C library and the rest, sampled with ``perf``.

    python benchmarks/cpusplit.py                          # per knock: wsgi-sse and the floor
    python benchmarks/cpusplit.py --clients 200 --knocks 1000
    python benchmarks/cpusplit.py --per stream --clients 5000  # opening streams
    python benchmarks/cpusplit.py --baseline main          # a change, next to the version before it

Each subject is started as in ``benchmarks/run.py`` (the example under
``twistd -ny server.py``, the C floor).  Per knock (the default),
``--clients`` streams are opened and ``--knocks`` knocks are posted one
after another, each on a connection of its own, as in ``syscalls.py``;
``perf record`` samples the server's CPU (``cpu-clock``, every thread)
from the moment the streams are open.  Per stream, ``--clients`` streams
are opened as fast as the server takes them, under ``perf`` from the
start.  The table gives microseconds of server CPU per knock (or stream):
the samples' total split by where they fell, and the server's CPU time
from ``/proc`` over the same span, which the samples should match; then
that CPU time split between the process's main thread (a Twisted
server's reactor) and its other threads (the WSGI thread pool), and the
wall-clock time per knock (or stream).  A main thread whose CPU nearly
fills the wall-clock time is what bounds the rate: the interpreter runs
one thread's Python at a time, so work moved to another thread frees
the reactor only for the time it spends in system calls.

Times move with the machine's speed: compare the subjects of one run, not
runs with each other.  Where a figure is larger than the floor's, the
split says whether the difference is work the kernel does (system calls,
the loopback network) or the server's own code.

Needs ``perf`` (Debian's ``linux-perf``) and the right to sample the server
(root, or ``kernel.perf_event_paranoid`` at most 1).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # benchmarks/run.py, beside this file
import syscalls  # benchmarks/syscalls.py: the subjects and the knocks

PARTS = ("kernel", "Python interpreter", "C library", "the rest")
"""Where a sample can fall, in the table's order."""

_EVENTS = re.compile(r"^# Event count \(approx\.\): (\d+)", re.M)
_ROW = re.compile(r"^\s+([\d.]+)%\s+(\S.*?)\s*$", re.M)


def part_of(dso: str) -> str:
    """
    The part of L{PARTS} that code in C{dso} (a name in ``perf report
    --sort dso``) belongs to.

    >>> [part_of(d) for d in ("[kernel.kallsyms]", "libpython3.11.so.1.0", "python3.11",
    ...                       "libc.so.6", "_socket.cpython-311-x86_64-linux-gnu.so", "floor")]
    ['kernel', 'Python interpreter', 'Python interpreter', 'C library', 'the rest', 'the rest']
    """
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith(("libpython", "python")):
        return "Python interpreter"
    if dso.startswith(("libc.so", "libc-", "libpthread")):
        return "C library"
    return "the rest"


def parse_report(text: str) -> dict[str, float]:
    """
    The nanoseconds of CPU in each part of L{PARTS}, from the output of
    ``perf report --stdio --sort dso`` over a ``cpu-clock`` recording
    (whose event count is in nanoseconds).

    >>> parts = parse_report('''# Samples: 16K of event 'cpu-clock'
    ... # Event count (approx.): 4000000000
    ... #
    ...     60.00%  [kernel.kallsyms]
    ...     30.00%  libpython3.11.so.1.0
    ...      7.50%  libc.so.6
    ...      2.50%  _socket.cpython-311-x86_64-linux-gnu.so
    ... ''')
    >>> {name: round(ns / 1e6) for name, ns in parts.items()}  # ms
    {'kernel': 2400, 'Python interpreter': 1200, 'C library': 300, 'the rest': 100}
    """
    found = _EVENTS.search(text)
    if found is None:
        raise ValueError("no event count in perf's report")
    total = int(found.group(1))
    parts = dict.fromkeys(PARTS, 0.0)
    for share, dso in _ROW.findall(text):
        parts[part_of(dso)] += total * float(share) / 100
    return parts


class Recorder:
    """
    ``perf record`` sampling every thread of one process into C{data}.

    The recorder starts with its events off and turns them on through its
    control FIFO (``--control``); the constructor returns once perf has
    acknowledged that, so every sample of what follows is taken, and a
    stop never reaches a perf still setting up (which leaves no readable
    C{data}).
    """

    def __init__(self, tmp: Path, data: Path, frequency: int, pid: int) -> None:
        ctl, ack = tmp / "perf-ctl", tmp / "perf-ack"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        # Both ends read-write: opening never blocks, even if perf dies first.
        self._ctl = os.open(ctl, os.O_RDWR)
        self._ack = os.open(ack, os.O_RDWR)
        self._proc = subprocess.Popen(
            ["perf", "record", "-D", "-1", f"--control=fifo:{ctl},{ack}",
             "-e", "cpu-clock", "-F", str(frequency), "-o", str(data), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        os.write(self._ctl, b"enable\n")
        deadline = time.monotonic() + 30
        while not select.select([self._ack], [], [], 0.1)[0]:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._close()
                raise RuntimeError(f"perf could not attach: {self._failure()}")
        os.read(self._ack, 64)

    def stop(self) -> None:
        """Stop sampling and wait until perf has written C{data}."""
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(30)
        finally:
            self._close()
        if self._proc.returncode not in (0, -signal.SIGINT, 128 + signal.SIGINT):
            raise RuntimeError(f"perf record failed: {self._failure()}")

    def _failure(self) -> str:
        if self._proc.poll() is None:
            self._proc.kill()
        _, err = self._proc.communicate()
        return f"exit {self._proc.returncode}: {err.strip()}"

    def _close(self) -> None:
        for fd in (self._ctl, self._ack):
            os.close(fd)


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU time of each thread of process C{pid}, by thread id (C{/proc/PID/task})."""
    seconds = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def thread_split(
    pid: int, before: dict[int, float], after: dict[int, float]
) -> tuple[float, float]:
    """
    The CPU seconds between C{before} and C{after} (L{thread_seconds}) of
    the process's main thread (a Twisted server's reactor) and of all its
    other threads together.

    >>> thread_split(7, {7: 1.0, 8: 0.5}, {7: 3.0, 8: 1.5, 9: 0.25})
    (2.0, 1.25)
    """
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    main = spent.pop(pid, 0.0)
    return main, sum(spent.values())


def sample(
    subject: str,
    bins: dict[str, Path],
    log_dir: Path,
    cfg: argparse.Namespace,
) -> dict[str, float]:
    """
    Measure C{subject} under perf: microseconds per knock (or stream) in
    each part of L{PARTS}, their sum as C{sampled} and the CPU time from
    C{/proc} as C{measured}.
    """
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        cpu: list[float] = []
        threads: list[tuple[float, float]] = []
        wall: list[float] = []

        def attach(pid: int) -> Callable[[], None]:
            recorder = Recorder(Path(tmp), data, cfg.frequency, pid)
            cpu.append(run.cpu_seconds(pid))
            before = thread_seconds(pid)
            wall.append(time.monotonic())

            def stop() -> None:
                wall.append(time.monotonic())
                cpu.append(run.cpu_seconds(pid))
                threads.append(thread_split(pid, before, thread_seconds(pid)))
                recorder.stop()

            return stop

        if cfg.per == "knock":
            units = cfg.knocks
            syscalls.knock(subject, bins, log_dir, cfg.clients, cfg.knocks, attach)
        else:
            units = cfg.clients
            with run.Server(subject, bins, log_dir) as server:
                stop = attach(server.pid)
                try:
                    result = run.loadgen(
                        bins, server, ["--clients", str(cfg.clients)], timeout=600, cpus=None
                    )
                finally:
                    stop()
            if result["connected"] != cfg.clients:
                raise RuntimeError(f"{subject}: {result['connected']} of {cfg.clients} streams")
        report = subprocess.run(
            ["perf", "report", "--stdio", "--sort", "dso", "-g", "none", "-i", str(data)],
            capture_output=True,
            text=True,
        )
        if report.returncode != 0:
            raise RuntimeError(f"perf report failed: {report.stderr.strip()}")
    parts = {name: ns / 1000 / units for name, ns in parse_report(report.stdout).items()}
    parts["sampled"] = sum(parts.values())
    parts["measured"] = (cpu[1] - cpu[0]) * 1e6 / units
    parts["main thread"], parts["other threads"] = (t * 1e6 / units for t in threads[0])
    parts["wall"] = (wall[1] - wall[0]) * 1e6 / units
    return parts


def table(per_unit: dict[str, dict[str, float]], unit: str) -> str:
    """A Markdown table: one row per part, one column per subject."""
    subjects = list(per_unit)
    rows = [(name, name) for name in PARTS]
    rows += [("**sampled**", "sampled"), ("CPU time (`/proc`)", "measured")]
    rows += [
        ("of which the main thread (the reactor)", "main thread"),
        ("of which the other threads", "other threads"),
        (f"wall-clock time per {unit}", "wall"),
    ]
    lines = [
        f"| µs of server CPU per {unit} | " + " | ".join(subjects) + " |",
        "|---|" + "---|" * len(subjects),
    ]
    for label, key in rows:
        cells = " | ".join(f"{per_unit[s][key]:,.0f}" for s in subjects)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    syscalls.add_arguments(parser)
    parser.add_argument(
        "--per",
        choices=("knock", "stream"),
        default="knock",
        help="knock: post --knocks knocks to --clients streams (default); "
        "stream: open --clients streams",
    )
    parser.add_argument(
        "--frequency", type=int, default=4000, help="samples per second of CPU (default 4000)"
    )
    cfg = parser.parse_args(argv)
    if cfg.frequency < 1:
        parser.error("--frequency must be at least 1")
    subjects = syscalls.chosen_subjects(parser, cfg)
    if shutil.which("perf") is None:
        parser.exit(1, "cpusplit.py: perf is not installed (apt-get install linux-perf)\n")
    bins, log_dir = syscalls.prepare()
    per_unit = {}
    for subject in subjects:
        what = (
            f"{cfg.knocks} knocks to {cfg.clients} stream(s)"
            if cfg.per == "knock"
            else f"{cfg.clients} streams opened"
        )
        print(f"[{subject}] {what} ...", flush=True)
        per_unit[subject] = sample(subject, bins, log_dir, cfg)
    print()
    print(table(per_unit, cfg.per))
    return 0


if __name__ == "__main__":
    sys.exit(main())
