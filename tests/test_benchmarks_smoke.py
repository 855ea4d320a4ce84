"""The benchmark harness runs end to end with tiny numbers (figures are not checked)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, subprocess_env


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
def test_quick_run_measures_every_subject(tmp_path: Path) -> None:
    """--quick starts each subject, delivers every event to every client and writes raw JSON."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-docs",
         "--subjects", "wsgi-sse,seed,floor", "--scenarios", "fanout,burst,slow",
         "--output", str(out)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    raw = json.loads(out.read_text())
    assert raw["clients"] == [50, 200]
    for subject in ("wsgi-sse", "seed", "floor"):
        result = raw["results"][subject]
        for count in ("50", "200"):
            fan = result["fanout"][count]
            assert fan["connected"] == int(count) and fan["failed"] == 0
            assert fan["lockstep_incomplete"] == 0
            assert [e["received"] for e in fan["events"]] == [int(count)] * 3
            assert fan["page"]["n"] == 5 and fan["page"]["failed"] == 0
        burst = result["burst"]["burst"]
        assert burst["deliveries"] == burst["expected"] == 20 * 20
        slow = result["slow"]
        assert [e["received"] for e in slow["events"]] == [18] * 5


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
def test_burst_options_set_the_streams_knocks_and_knocks_in_flight(tmp_path: Path) -> None:
    """
    --burst-clients, --burst-events and --burst-posters 1 (knocks one after
    another): every knock still reaches every stream.
    """
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-docs",
         "--subjects", "wsgi-sse,floor", "--scenarios", "burst", "--burst-posters", "1",
         "--burst-clients", "3", "--burst-events", "7", "--output", str(out)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    for subject in ("wsgi-sse", "floor"):
        burst = results[subject]["burst"]["burst"]
        assert (burst["posters"], burst["events"]) == (1, 7)
        assert burst["deliveries"] == burst["expected"] == 3 * 7
    for option in ("--burst-posters", "--burst-clients", "--burst-events"):
        refused = subprocess.run(
            [sys.executable, "benchmarks/run.py", "--quick", "--no-docs", option, "0"],
            cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert refused.returncode == 2
        assert f"{option} must be at least 1" in refused.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
def test_syscalls_counts_each_servers_calls_per_knock() -> None:
    """
    benchmarks/syscalls.py: per knock, each server reads the request once;
    the floor sends the answer and the event; wsgi-sse writes the reactor's
    waker twice (the broadcast, then the answer) and the access log once.
    """
    proc = subprocess.run(
        [sys.executable, "benchmarks/syscalls.py", "--knocks", "60"],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (float(cells[1]), float(cells[2]))
    wsgi_sse, floor = zip(*rows.values(), strict=True)
    assert rows["recvfrom"] == pytest.approx((1.0, 1.0), abs=0.05)
    assert rows["sendto"][1] == pytest.approx(2.0, abs=0.05)
    assert rows["write"][0] == pytest.approx(3.0, abs=0.05)
    assert sum(floor) == pytest.approx(11.0, abs=0.5)
    assert sum(wsgi_sse) > sum(floor)
    for args, error in (
        (["--baseline", "no-such-ref"], "--baseline no-such-ref: neither a directory nor a commit"),
        (["--subjects", "wsgi-sse,nope"], "unknown subject 'nope'"),
    ):
        refused = subprocess.run(
            [sys.executable, "benchmarks/syscalls.py", *args],
            cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert refused.returncode == 2 and error in refused.stderr, refused.stderr


def _split_table(stdout: str) -> dict[str, tuple[float, float]]:
    """cpusplit.py's table: each row's figures for wsgi-sse and the floor."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[1][:1].isdigit():
            rows[cells[0].strip("*")] = (
                float(cells[1].replace(",", "")),
                float(cells[2].replace(",", "")),
            )
    return rows


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
@pytest.mark.parametrize("per", ["knock", "stream"])
def test_cpusplit_samples_where_each_servers_cpu_goes(per: str) -> None:
    """
    benchmarks/cpusplit.py: the floor's CPU is the kernel's and its own C,
    never Python's; wsgi-sse's samples fall in the interpreter too, and
    add up to about the CPU time /proc gives for the same span (every
    thread was sampled).
    """
    args = ["--knocks", "300"] if per == "knock" else ["--per", "stream", "--clients", "600"]
    proc = subprocess.run(
        [sys.executable, "benchmarks/cpusplit.py", *args],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"| µs of server CPU per {per} | wsgi-sse | floor |" in proc.stdout
    rows = _split_table(proc.stdout)
    parts = ("kernel", "Python interpreter", "C library", "the rest")
    threads = ("of which the main thread (the reactor)", "of which the other threads")
    wall = f"wall-clock time per {per}"
    assert set(rows) == {*parts, "sampled", "CPU time (`/proc`)", *threads, wall}
    for column in (0, 1):
        together = sum(rows[p][column] for p in parts)
        assert together == pytest.approx(rows["sampled"][column], abs=len(parts))
    assert rows["Python interpreter"][0] > 0 and rows["kernel"][0] > 0
    assert rows["Python interpreter"][1] == 0 and rows["kernel"][1] > 0
    sampled, measured = rows["sampled"][0], rows["CPU time (`/proc`)"][0]
    assert measured / 2 < sampled < measured * 2
    # The threads' CPU makes up the process's (clock ticks apart); the
    # floor has only its main thread, wsgi-sse a pool beside its reactor.
    for column in (0, 1):
        by_thread = rows[threads[0]][column] + rows[threads[1]][column]
        assert by_thread == pytest.approx(rows["CPU time (`/proc`)"][column], rel=0.2, abs=50)
        assert rows[wall][column] > 0
    assert rows[threads[1]][1] == 0 and rows[threads[0]][1] > 0
    assert rows[threads[0]][0] > 0


def test_cpusplit_refuses_bad_options() -> None:
    """A bad option ends cpusplit.py with a usage error, before any server starts."""
    for args, error in (
        (["--frequency", "0"], "--frequency must be at least 1"),
        (["--per", "page"], "invalid choice: 'page'"),
        (["--knocks", "0"], "--clients and --knocks must be at least 1"),
        (["--subjects", "wsgi-sse,nope"], "unknown subject 'nope'"),
    ):
        refused = subprocess.run(
            [sys.executable, "benchmarks/cpusplit.py", *args],
            cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert refused.returncode == 2 and error in refused.stderr, refused.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
@pytest.mark.skipif(shutil.which("wrk") is None, reason="requestcost.py posts with wrk")
def test_requestcost_measures_every_rung() -> None:
    """
    benchmarks/requestcost.py: every rung answers the knocks with a 2xx
    (wrk's non-2xx answers end the run) and gets a row with its CPU per
    request in each round and its ratio to the floor; an unknown rung is
    a usage error.
    """
    proc = subprocess.run(
        [sys.executable, "benchmarks/requestcost.py", "--rounds", "2", "--seconds", "1"],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[1][:1].isdigit():
            rows[cells[0]] = cells
    rungs = [
        "floor", "twisted-protocol", "twisted-web-resource", "twisted-web-wsgi",
        "wsgi-sse-minimal", "wsgi-sse-no-access-log", "wsgi-sse",
    ]  # fmt: skip
    assert list(rows) == rungs
    assert rows["floor"][3] == "1.0\u00d7"
    for cells in rows.values():
        rounds = [float(v.replace(",", "")) for v in cells[2].split(", ")]
        assert len(rounds) == 2 and all(v > 0 for v in rounds)
        assert float(cells[4].replace(",", "")) > 0
    refused = subprocess.run(
        [sys.executable, "benchmarks/requestcost.py", "--subjects", "floor,seed"],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode == 2 and "unknown rung 'seed'" in refused.stderr, refused.stderr


@pytest.mark.parametrize("script", ["syscalls", "cpusplit"])
def test_measuring_scripts_parse_their_tools_output_as_documented(script: str) -> None:
    """The examples in the parsers' docstrings (strace's and perf's summaries) hold."""
    import doctest

    spec = importlib.util.spec_from_file_location(script, ROOT / "benchmarks" / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
@pytest.mark.skipif(shutil.which("wrk") is None, reason="the pages scenario runs wrk")
def test_quick_rounds_measure_accept_burst_spread_and_pages(tmp_path: Path) -> None:
    """The repeated scenarios run every subject asked for and record a value per round."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-docs",
         "--scenarios", "accept,burst-spread,fanout-spread,pages",
         "--round-subjects",
         "wsgi-sse,wsgi-sse-no-sched-batch,seed-quiet,twisted-web-stream,twisted-stream,floor,"
         "twisted-web",
         "--output", str(out)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rounds = json.loads(out.read_text())["rounds"]
    assert sorted(rounds["accept"]) == [
        "floor", "seed-quiet", "twisted-stream", "twisted-web-stream", "wsgi-sse",
    ]  # fmt: skip
    # Accept and burst: every subject takes its --repeats turns (2 when quick).
    for run in rounds["accept"].values():
        assert [(t["connected"], t["failed"]) for t in run[0]["turns"]] == [(200, 0)] * 2
        assert all(t["probe_ms"] > 0 for t in run[0]["turns"])
    assert sorted(rounds["burst-spread"]) == ["floor", "wsgi-sse", "wsgi-sse-no-sched-batch"]
    for run in rounds["burst-spread"].values():
        assert [t["burst"]["deliveries"] for t in run[0]["turns"]] == [20 * 20] * 2
        assert all(t["server_switches"] > 0 and t["probe_ms"] > 0 for t in run[0]["turns"])
        assert run[0]["burst"]["deliveries"] == run[0]["burst"]["expected"] == 2 * 20 * 20
    # Fan-out: the subjects hold their clients at once and take turns event by event.
    assert sorted(rounds["fanout-spread"]) == ["floor", "wsgi-sse"]
    for run in rounds["fanout-spread"].values():
        assert [e["received"] for e in run[0]["events"]] == [200] * 3
        assert run[0]["value"] == sorted(run[0]["lasts"])[1]
    assert sorted(rounds["pages"]) == ["twisted-web", "wsgi-sse", "wsgi-sse-no-sched-batch"]
    for run in rounds["pages"].values():
        assert run[0]["requests"] > 0 and run[0]["non_2xx"] == 0
        assert run[0]["server_switches"] > 0
    spread = json.loads(out.read_text())["spread"]
    ratio = [r for r in spread if r["scenario"] == "pages" and r["subject"] == "wsgi-sse"]
    assert ratio[0]["reference"] == "twisted-web" and len(ratio[0]["ratios"]) == 1


def _run_module() -> Any:
    """benchmarks/run.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("git") is None, reason="a baseline commit is read with git")
def test_baseline_commit_is_extracted_from_the_repository(tmp_path: Path) -> None:
    """--baseline REF: the commit's wsgi_sse package and examples, byte for byte."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    run = _run_module()
    root, version = run.baseline_tree("HEAD", tmp_path / "tree")
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert version == head.stdout.strip()
    for name in ("wsgi_sse/__init__.py", "wsgi_sse/_hub.py", "examples/bottle_app/server.py"):
        committed = subprocess.run([*git, "show", f"HEAD:{name}"], capture_output=True, check=True)
        assert (root / name).read_bytes() == committed.stdout
    with pytest.raises(ValueError, match="neither a directory nor a commit"):
        run.baseline_tree("no-such-ref-anywhere", tmp_path / "other")
    with pytest.raises(ValueError, match=r"no wsgi_sse/__init__\.py"):
        run.baseline_tree(str(tmp_path / "tree" / "examples"), tmp_path / "other")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
def test_baseline_directory_runs_beside_the_working_tree(tmp_path: Path) -> None:
    """
    --baseline DIR: the repeated scenarios also start the example on the
    wsgi-sse in DIR (its own code, not the working tree's) and report
    wsgi-sse's figure divided by it, round by round.
    """
    baseline = tmp_path / "baseline"
    shutil.copytree(ROOT / "wsgi_sse", baseline / "wsgi_sse")
    shutil.copytree(ROOT / "examples", baseline / "examples")
    marker = baseline / "wsgi_sse" / "imported-here"
    with open(baseline / "wsgi_sse" / "__init__.py", "a") as init:
        init.write("\n__import__('pathlib').Path(__file__).with_name('imported-here').touch()\n")
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-docs", "--scenarios", "accept",
         "--round-subjects", "wsgi-sse,floor", "--baseline", str(baseline), "--output", str(out)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert marker.exists()
    raw = json.loads(out.read_text())
    assert raw["baseline"] == {"ref": str(baseline), "version": str(baseline.resolve())}
    accept = raw["rounds"]["accept"]
    assert list(accept) == ["wsgi-sse", "wsgi-sse-baseline", "floor"]
    for run in accept.values():
        assert [(t["connected"], t["failed"]) for t in run[0]["turns"]] == [(200, 0)] * 2
    rows = {row["subject"]: row for row in raw["spread"]}
    expected = accept["wsgi-sse"][0]["value"] / accept["wsgi-sse-baseline"][0]["value"]
    assert rows["wsgi-sse"]["baseline_ratios"] == [pytest.approx(expected)]
    assert rows["floor"]["baseline_ratios"] == []
    assert "÷ wsgi-sse-baseline" in proc.stdout


def test_rounds_reverse_the_subjects_order_every_other_round(monkeypatch: Any) -> None:
    """
    The repeated scenarios hand their subjects to each round in an order
    reversed from one round to the next (the first server started costs
    more), and keep each subject's results in round order.
    """
    run = _run_module()
    seen: list[tuple[str, ...]] = []

    def round_runner(subjects: tuple[str, ...], bins: Any, cfg: Any) -> dict[str, Any]:
        seen.append(subjects)
        return {s: {"value": len(seen) * 10 + i} for i, s in enumerate(subjects)}

    monkeypatch.setitem(run.ROUND_RUNNERS, "fanout-spread", round_runner)
    monkeypatch.setattr(run.Server, "baseline_root", Path("/nonexistent"))
    cfg = argparse.Namespace(rounds=3, round_subjects=None)
    out = run.run_rounds("fanout-spread", {}, cfg)
    forward = ("wsgi-sse", "wsgi-sse-baseline", "floor")
    assert seen == [forward, forward[::-1], forward]
    assert out["wsgi-sse"] == [{"value": 10}, {"value": 22}, {"value": 30}]
    assert out["floor"] == [{"value": 12}, {"value": 20}, {"value": 32}]
