"""Each test-only fault switch must make the stress or the snapshot test FAIL.

A reader switch must make readers return wrong data that the checker catches; a
writer switch must make healthy readers report failures (``SnapshotExpired``)
instead of the exact data. A detection is looked for in up to 4 rounds.
"""

from __future__ import annotations

import pytest
from shm_harness import run_stress
from test_shm_snapshot import run_snapshot_rewrite


# skip_checksum takes ~23 s: it runs with the slow tests (.ci/run)
@pytest.mark.parametrize(
    "fault", [pytest.param("skip_checksum", marks=pytest.mark.slow), "skip_recheck"]
)
def test_reader_fault_returns_wrong_data_and_stress_catches_it(fault: str) -> None:
    wrong = 0
    for _round in range(4):
        res = run_stress(groups=16, reads=100_000, seconds=60, reader_faults=(fault, "slow_read"))
        wrong = res.total("wrong")
        if wrong:
            break
    assert wrong > 0, f"{fault}: the stress test did not notice"


@pytest.mark.parametrize("fault", ["publish_early", "reclaim_unsafe"])
def test_writer_fault_fails_stress(fault: str) -> None:
    res = run_stress(groups=16, reads=60_000, seconds=60, writer_faults=(fault,))
    assert res.total("expired") > 0, f"{fault}: the stress test did not notice"
    assert res.total("wrong") == 0  # readers reported, never returned bad bytes


@pytest.mark.parametrize("fault", ["publish_early", "reclaim_unsafe", "skip_recheck"])
def test_fault_fails_snapshot_test(fault: str) -> None:
    problems = run_snapshot_rewrite(fault)
    assert problems, f"{fault}: the snapshot test did not notice"
