"""``python -m bench.restartcpu`` on a tiny snapshot, so that the restart figures quoted
in issue 17's commits, docs/benchmarks.md and shm/DESIGN.md can be taken again."""

from __future__ import annotations

import pytest

from bench import restartcpu


def test_restartcpu_reports_each_part_of_a_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert restartcpu.main(["--records", "3000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for part in ("recover", "rebuild_deadlines", "publish_state", "_load_blocks", "_place"):
        assert f"\n{part} " in out or f"\n  {part} " in out
    assert "publish_state (page faults)" in out and "recover (system)" in out


def test_restartcpu_times_a_real_server_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert restartcpu.main(["--records", "3000", "--repeats", "1", "--server"]) == 0
    out = capsys.readouterr().out
    for part in ("server, all threads", "server, main thread", "server main thread / recover"):
        assert f"\n{part} " in out
