"""``python -m bench.getcpu`` on a small table, so that the get figures quoted in issue
17's commits and docs/benchmarks.md can be taken again."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from bench import getcpu
from bench.server import preload
from stateengine.testing import ServerProcess


def test_getcpu_reports_every_get_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert getcpu.main(["--records", "2000", "--ops", "2000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("floor: bytes copy", "raw ArenaReader.get", "client.get_record via the arena"):
        assert f"\n  {row}" in out
    assert "x floor" in out


def test_getcpu_instruction_child_runs_every_row() -> None:
    """The loop ``--instructions`` counts under callgrind, each row, without valgrind."""
    tmp = Path(tempfile.mkdtemp(prefix="se-getinstr-test-"))
    try:
        with ServerProcess(tmp / "data", "--store", "none") as srv:
            with srv.connect(timeout=60) as c:
                preload(c, 50)
            for mode in getcpu.INSTRUCTION_ROWS:
                args = [srv.endpoint, str(srv.data_dir), str(srv.info["arena"]), "50", "10"]
                assert getcpu.main(["--child", mode, *args]) == 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_getcpu_instructions(capsys: pytest.CaptureFixture[str]) -> None:
    got = getcpu.instructions(100, low=200, high=400)
    assert set(got) == set(getcpu.INSTRUCTION_ROWS)
    assert all(v > 1000 for v in got.values()), got
