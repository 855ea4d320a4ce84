"""
What one request costs each rung of the stack wsgi-sse is built on: the
server CPU of a ``POST /knock`` answered on a connection of its own, from a
bare Twisted protocol up to wsgi-sse serving the Bottle example.

    python benchmarks/requestcost.py                    # every rung, 3 rounds
    python benchmarks/requestcost.py --rounds 5 --seconds 3
    python benchmarks/requestcost.py --keep-alive       # requests on kept-alive connections

The rungs (each started fresh in every round, on 127.0.0.1):

  floor                 the C/epoll floor of ``benchmarks/run.py``
  twisted-protocol      a bare Twisted protocol: the reactor and a TCP transport
  twisted-web-resource  twisted.web's channel and request, a leaf resource answering
  twisted-web-wsgi      a minimal WSGI app (read the form, answer ``ok``) under
                        twisted.web's own ``WSGIResource``
  wsgi-sse-minimal      the same app under wsgi-sse, without the access log
  wsgi-sse-no-access-log  the Bottle example's knock view and its ``broadcast()``
                        (to no stream), without the access log
  wsgi-sse              the Bottle example as README starts it: the knock view,
                        its ``broadcast()`` (to no stream) and the access log line

Knocks are posted by ``wrk`` over one connection at a time (``Connection:
close``, as the knocks of the burst scenario with one poster; with
``--keep-alive`` on one connection, which the floor and the bare Twisted
protocol still close after every answer), the server
on every CPU but the last and ``wrk`` on the last.  The table gives the
server's CPU per request (``/proc``, every thread), the median over the
rounds with each round's figure, and its ratio to the floor.  Within a
round the rungs take turns, in reverse order every other round.

This is where the gap between wsgi-sse and the floor with knocks posted
one after another comes from: a request on a fresh connection costs
twisted.web's channel and request, and the WSGI hand-off, before any
view runs.  Times move with the machine's speed: compare the rungs of one
run, not runs with each other.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # benchmarks/run.py, beside this file

RUNGS = (
    "floor",
    "twisted-protocol",
    "twisted-web-resource",
    "twisted-web-wsgi",
    "wsgi-sse-minimal",
    "wsgi-sse-no-access-log",
    "wsgi-sse",
)

SCRIPT = """\
wrk.method = "POST"
wrk.body = "name=Ada"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
{close}
"""


def measure(
    subject: str,
    bins: dict[str, Path],
    log_dir: Path,
    script: Path,
    seconds: int,
    cpus: tuple[set[int] | None, set[int] | None],
) -> dict[str, float]:
    """
    Start C{subject}, post knocks to it with C{wrk} for C{seconds}: the
    requests per second and the server's CPU per request (µs).

    @raise RuntimeError: if a request was not answered with a 2xx.
    """
    server_cpus, wrk_cpus = cpus
    with run.Server(subject, bins, log_dir, cpus=server_cpus) as server:
        cpu0 = run.cpu_seconds(server.pid)
        result = run.wrk(server.port, "/knock", seconds, 1, script=script, cpus=wrk_cpus)
        cpu = run.cpu_seconds(server.pid) - cpu0
    if result["non_2xx"]:
        raise RuntimeError(f"{subject}: {result['non_2xx']} answers were not 2xx or 3xx")
    requests = result.get("requests")
    if not requests:
        raise RuntimeError(f"{subject}: no request answered")
    rate = result["requests_per_second"]
    return {"per_second": rate, "cpu_us": cpu / requests * 1e6}


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """A Markdown table: one row per rung, its CPU per request and rate, with every round's."""
    floor = statistics.median(r["cpu_us"] for r in results["floor"]) if "floor" in results else None
    lines = [
        "| rung | µs of server CPU per request (median) | per round | ÷ floor "
        "| requests/s (median) |",
        "|---|---|---|---|---|",
    ]
    for subject, rounds in results.items():
        cpu = statistics.median(r["cpu_us"] for r in rounds)
        each = ", ".join(f"{r['cpu_us']:,.0f}" for r in rounds)
        ratio = f"{cpu / floor:.1f}×" if floor else "–"
        rate = statistics.median(r["per_second"] for r in rounds)
        lines.append(f"| {subject} | {cpu:,.0f} | {each} | {ratio} | {rate:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subjects", default=",".join(RUNGS), help="the rungs, in order")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="wrk's run per rung (whole seconds)")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="post every knock of a rung on one kept-alive connection instead",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="let the server and wrk share every CPU"
    )
    cfg = parser.parse_args(argv)
    subjects = [s for s in cfg.subjects.split(",") if s]
    for subject in subjects:
        if subject not in RUNGS:
            parser.error(f"unknown rung {subject!r} (one of {', '.join(RUNGS)})")
    if cfg.rounds < 1 or cfg.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds more than 0")
    if shutil.which("wrk") is None:
        parser.exit(1, "requestcost.py: wrk is not installed (apt-get install wrk)\n")
    run.raise_fd_limit()
    bins = run.build()
    log_dir = run.RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cpus = (None, None) if cfg.no_pin else run.split_cpus(argparse.Namespace(pin_loadgen=True))
    results: dict[str, list[dict[str, float]]] = {s: [] for s in subjects}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "knock.lua"
        close = "" if cfg.keep_alive else 'wrk.headers["Connection"] = "close"'
        script.write_text(SCRIPT.format(close=close))
        for n in range(cfg.rounds):
            order = subjects if n % 2 == 0 else subjects[::-1]
            for subject in order:
                result = measure(subject, bins, log_dir, script, cfg.seconds, cpus)
                results[subject].append(result)
                print(
                    f"[round {n + 1}] {subject}: {result['cpu_us']:,.0f} µs per request, "
                    f"{result['per_second']:,.0f}/s",
                    flush=True,
                )
    shape = "kept-alive connections" if cfg.keep_alive else "a connection per request"
    print(f"\n{run.machine()}; {shape}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
