"""``python -m bench.claimcpu`` on a tiny table, so that the claim figures quoted in the
commits and docs/benchmarks.md can be taken again."""

from __future__ import annotations

import pytest

from bench import claimcpu


@pytest.mark.parametrize("order", ["fifo", "priority"])
def test_claimcpu_claims_every_task_once(order: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--tasks", "60", "--table", "100", "--order", order, "--repeats", "2"]
    assert claimcpu.main(args) == 0
    out = capsys.readouterr().out
    assert f"60 tasks in a table of 100 ({order})" in out
    assert "CLAIM_RECORD" in out and "PATCH_RECORD" in out


def test_claimcpu_counts_the_tasks() -> None:
    """A loop that claimed a task twice (or none) must not print a figure."""
    eng = claimcpu.engine(5, 8, "fifo")
    with pytest.raises(RuntimeError, match="5 tasks claimed, expected 6"):
        claimcpu.drain(eng, 6, "fifo")


def test_claimcpu_server_reports_server_and_worker_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert claimcpu.main(["--server", "--tasks", "40", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    for label in ("server CPU per task", "workers' CPU per task", "wall per task"):
        assert f"40 tasks in a table of 40 (fifo), {label}" in out
