"""
System calls per knock: what each server asks of the kernel to take one
``POST /knock`` and send its event, counted with ``strace -c``.

    python benchmarks/syscalls.py                        # wsgi-sse and the floor
    python benchmarks/syscalls.py --clients 200 --knocks 500
    python benchmarks/syscalls.py --baseline main        # a change, next to the version before it

Each subject is started as in ``benchmarks/run.py`` (the example under
``twistd -ny server.py``, the C floor), ``--clients`` streams are opened, and
``--knocks`` knocks are posted one after another, each on a connection of its
own (the load generator's ``--burst K --posters 1``), while ``strace -f -c``
follows every thread of the server from the moment the streams are open.
The table gives the calls per knock, system call by system call.  Counts,
unlike times, do not move with the machine's speed, so a change of a few
calls per knock shows at once; strace itself slows the server down many
times over, so read no rate from this run.

Needs ``strace`` (``apt-get install strace``) and the right to trace the
server (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
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


def parse_summary(text: str) -> dict[str, int]:
    """
    The calls of each system call in an ``strace -c`` summary (its
    ``calls`` column, failed calls included).

    >>> parse_summary('''% time     seconds  usecs/call     calls    errors syscall
    ... ------ ----------- ----------- --------- --------- ----------------
    ...  69.57    1.859347         129     14342      2860 futex
    ...   4.93    0.131713          13     10001           write
    ... ------ ----------- ----------- --------- --------- ----------------
    ... 100.00    2.672598          39     67372      3861 total''')
    {'futex': 14342, 'write': 10001}
    """
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0].replace(".", "").isdigit():
            continue
        name = fields[-1]
        if name == "total":
            continue
        # With errors the row has six fields, without five: calls is the 4th.
        counts[name] = int(fields[3])
    return counts


def traced_by(pid: int, tracer: int) -> bool:
    """
    Whether every thread of process C{pid} is traced by C{tracer} (its
    C{TracerPid} in C{/proc}): strace has attached, and a stop signal can
    no longer reach it before it has.
    """
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue  # the thread ended
        for line in status.splitlines():
            if line.startswith("TracerPid:") and int(line.split()[1]) != tracer:
                return False
    return True


def knock(
    subject: str,
    bins: dict[str, Path],
    log_dir: Path,
    clients: int,
    knocks: int,
    attach: Callable[[int], Callable[[], None]],
) -> None:
    """
    Start C{subject}, open C{clients} streams, then post C{knocks} knocks
    one after another, each on a connection of its own, while a tracer
    follows the server: C{attach(pid)} starts it once the streams are open
    and returns what stops it.

    @raise RuntimeError: if an event was not delivered to every stream.
    """
    with run.Server(subject, bins, log_dir) as server:
        stop: list[Callable[[], None]] = []
        try:
            result = run.loadgen(
                bins,
                server,
                ["--clients", str(clients), "--burst", str(knocks), "--posters", "1",
                 "--event-timeout", "10"],
                timeout=600,
                on_ready=lambda: stop.append(attach(server.pid)),
                cpus=None,
            )  # fmt: skip
        finally:
            for done in stop:
                done()
    burst = result["burst"]
    if burst["deliveries"] != burst["expected"]:
        raise RuntimeError(f"{subject}: {burst['deliveries']} of {burst['expected']} delivered")


def count(
    subject: str, bins: dict[str, Path], log_dir: Path, clients: int, knocks: int
) -> dict[str, float]:
    """
    Start C{subject} and post C{knocks} knocks to C{clients} streams under
    strace: each system call's calls per knock.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "strace.txt"

        def attach(pid: int) -> Callable[[], None]:
            tracer = subprocess.Popen(
                ["strace", "-f", "-c", "-o", str(out), "-p", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 30
            while not traced_by(pid, tracer.pid):
                if tracer.poll() is not None or time.monotonic() > deadline:
                    tracer.kill()
                    _, err = tracer.communicate()
                    raise RuntimeError(f"strace could not attach: {err.strip()}")
                time.sleep(0.05)

            def stop() -> None:
                tracer.send_signal(signal.SIGINT)
                tracer.wait(30)

            return stop

        knock(subject, bins, log_dir, clients, knocks, attach)
        calls = parse_summary(out.read_text())
    return {name: n / knocks for name, n in calls.items()}


def table(per_knock: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per system call, one column per subject, and the total."""
    subjects = list(per_knock)
    names = sorted(
        {n for calls in per_knock.values() for n in calls},
        key=lambda n: (-max(per_knock[s].get(n, 0.0) for s in subjects), n),
    )
    lines = [
        "| system call | " + " | ".join(subjects) + " |",
        "|---|" + "---|" * len(subjects),
    ]
    for name in names:
        cells = [f"{per_knock[s].get(name, 0.0):.2f}" for s in subjects]
        if all(float(c) < 0.005 for c in cells):
            continue  # once per run (startup, shutdown), not per knock
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    totals = [f"{sum(per_knock[s].values()):.1f}" for s in subjects]
    lines.append("| **all** | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this script shares with cpusplit.py: the subjects and the knocks."""
    parser.add_argument("--subjects", default="wsgi-sse,floor")
    parser.add_argument("--clients", type=int, default=1, help="open streams (default 1)")
    parser.add_argument("--knocks", type=int, default=2000, help="knocks posted (default 2000)")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REF",
        help=f"also measure {run.BASELINE}: another version of wsgi-sse, a commit or a checkout",
    )


def chosen_subjects(parser: argparse.ArgumentParser, cfg: argparse.Namespace) -> list[str]:
    """
    The subjects to measure, in order (the baseline, set up here, second);
    a bad count, subject or C{--baseline} ends the run with a usage error.
    """
    if cfg.clients < 1 or cfg.knocks < 1:
        parser.error("--clients and --knocks must be at least 1")
    subjects = [s for s in cfg.subjects.split(",") if s]
    knocked = {s for names, _ in run.ROUNDS.values() for s in names} - set(run.PAGE_ONLY)
    for subject in subjects:
        if subject not in knocked | set(run.SUBJECTS) or subject == run.BASELINE:
            parser.error(f"unknown subject {subject!r} (the baseline comes with --baseline)")
    if cfg.baseline:
        try:
            run.use_baseline(cfg.baseline)
        except ValueError as e:
            parser.error(str(e))
        subjects.insert(1, run.BASELINE)
    return subjects


def prepare() -> tuple[dict[str, Path], Path]:
    """Build the C parts; return them and the directory for the servers' logs."""
    run.raise_fd_limit()
    bins = run.build()
    log_dir = run.RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    return bins, log_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    cfg = parser.parse_args(argv)
    if shutil.which("strace") is None:
        parser.exit(1, "syscalls.py: strace is not installed (apt-get install strace)\n")
    subjects = chosen_subjects(parser, cfg)
    bins, log_dir = prepare()
    per_knock = {}
    for subject in subjects:
        print(f"[{subject}] {cfg.knocks} knocks to {cfg.clients} stream(s) ...", flush=True)
        per_knock[subject] = count(subject, bins, log_dir, cfg.clients, cfg.knocks)
    print()
    print(table(per_knock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
