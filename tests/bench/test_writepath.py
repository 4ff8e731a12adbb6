"""``python -m bench.writepath`` on tiny inputs, so that the write-path figures quoted in
issue 17's commits and code comments can be taken again (it cannot rot)."""

from __future__ import annotations

import pytest

from bench import writepath


def test_writepath_reports_cpu_per_write_and_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    assert writepath.main(["--writes", "200", "--bulk", "200", "--repeats", "1", "--server"]) == 0
    out = capsys.readouterr().out
    assert "one PATCH_RECORD:" in out and "µs CPU" in out
    assert "SET_STATE of 200:" in out and "k records/s" in out
    assert "server process CPU a PATCH_RECORD:" in out
    assert "a record of a SET_STATE of 200" in out


def test_writepath_figures_are_positive() -> None:
    one = writepath.one_write(writes=100, repeats=1, records=50)
    assert one["write_us"] > 0 and one["rest_us"] > 0
    assert writepath.bulk(records=100, repeats=1)["bulk_records_per_s"] > 0
