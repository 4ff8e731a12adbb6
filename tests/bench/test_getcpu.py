"""``python -m bench.getcpu`` on a small table, so that the get figures quoted in issue
17's commits and docs/benchmarks.md can be taken again."""

from __future__ import annotations

import pytest

from bench import getcpu


def test_getcpu_reports_every_get_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert getcpu.main(["--records", "2000", "--ops", "2000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("floor: bytes copy", "raw ArenaReader.get", "client.get_record via the arena"):
        assert f"\n  {row}" in out
    assert "x floor" in out
