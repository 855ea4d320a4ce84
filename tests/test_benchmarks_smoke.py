"""The benchmark harness runs end to end with tiny numbers (figures are not checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, subprocess_env


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the benchmark compiles its C parts")
def test_quick_run_measures_every_subject(tmp_path: Path) -> None:
    """--quick starts each subject, delivers every event to every client and writes raw JSON."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-docs",
         "--subjects", "wsgi-sse,seed,floor", "--output", str(out)],
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
