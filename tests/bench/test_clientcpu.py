"""``python -m bench.clientcpu`` on a few calls, so that the client figures quoted in
docs/benchmarks.md can be taken again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_clientcpu_reports_every_row_it_is_asked_for() -> None:
    rows = "patch,claim,many,raw,raw100,fake_patch,fake_claim,fake_many"
    out = subprocess.run(
        [sys.executable, "-m", "bench.clientcpu", "--calls", "200", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    for row in rows.split(","):
        assert f"{row:7s} CPU/call median" in out.stdout, out.stdout
