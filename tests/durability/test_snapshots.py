"""Snapshots: log trimming, recovery equivalence, a forked dump while writes go on,
and the crash points inside the store (real processes killed with SIGKILL)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from durable_workload import describe_difference, digest, run_workload

from stateengine.server.engine import TableEngine
from stateengine.server.persist_log import SNAPSHOT_NAME, LogStore, list_segments
from stateengine.server.persistence import open_store


def _store(data: Path, **options: object) -> LogStore:
    store = open_store(data, "log", **options)  # type: ignore[arg-type]
    assert isinstance(store, LogStore)
    return store


@pytest.mark.parametrize("mode", ["inline", "fork"])
def test_snapshots_trim_the_log_and_recover_the_same_state(tmp_path: Path, mode: str) -> None:
    _engine, change_sets, digests = run_workload(8, 400)
    shadow = TableEngine()
    store = _store(tmp_path, snapshot_bytes=4096, snapshot_mode=mode)
    store.recover(shadow)
    started = 0
    for cs in change_sets:
        store.write(cs)
        shadow.apply_change_set(cs)
        started += store.maybe_snapshot(shadow)
    store.close()  # waits for a running dump
    assert started >= 2 and store.stats["snapshots"] >= 1
    bases = [base for base, _ in list_segments(tmp_path)]
    assert 1 <= len(bases) <= 2, bases  # older segments were trimmed
    assert sum(p.stat().st_size for _, p in list_segments(tmp_path)) < store.stats["bytes"]
    recovered = TableEngine()
    report = _store(tmp_path).recover(recovered)
    assert report.snapshot_seq is not None and report.snapshot_seq <= report.seq
    assert digest(recovered) == digests[-1], describe_difference(digest(recovered), digests[-1])
    # A snapshot restores record order exactly (it is the engine's own dict order).
    assert digest(recovered, ordered=True) == digest(shadow, ordered=True)


def test_a_forked_snapshot_while_writes_continue(tmp_path: Path) -> None:
    big = TableEngine()
    big.execute({"command": "CREATE_STATE", "state": "bulk"})
    records = [{"id": i, "v": "x" * 50, "n": i} for i in range(60_000)]
    big.execute({"command": "SET_STATE", "state": "bulk", "records": records})
    store = _store(tmp_path, snapshot_mode="fork")
    store.recover(TableEngine())
    store.write(big.full_change_set())
    store.snapshot(big, wait=False)  # the child dumps 60k records meanwhile
    seq_at_snapshot = big.seq
    writes_during = overlapped = 0
    while store._child is not None or writes_during < 50:
        overlapped += store._child is not None
        big.execute(
            {
                "command": "PATCH_RECORD",
                "state": "bulk",
                "id": writes_during % 100,
                "fields": {"n": -writes_during},
            }
        )
        store.write(big.change_set(big.changes, big.table_changes))
        writes_during += 1
        store.tick()
    store.close()
    assert writes_during >= 50
    assert overlapped > 0, "the dump finished before the first write: nothing overlapped"
    recovered = TableEngine()
    report = _store(tmp_path).recover(recovered)
    assert report.snapshot_seq == seq_at_snapshot
    assert report.log_entries == writes_during
    assert digest(recovered, ordered=True) == digest(big, ordered=True)


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from durable_workload import run_workload
    from stateengine.server.engine import TableEngine
    from stateengine.server.persistence import open_store

    engine, change_sets, digests = run_workload(3, 300)
    shadow = TableEngine()
    store = open_store({data!r}, "log", snapshot_bytes=2048, snapshot_mode={mode!r})
    store.recover(shadow)
    for i, cs in enumerate(change_sets):
        store.write(cs)
        shadow.apply_change_set(cs)
        print(i + 1, flush=True)  # acknowledged
        store.maybe_snapshot(shadow)
    store.close()
    """
)


@pytest.mark.parametrize(
    ("point", "mode"),
    [
        ("log-appended:40", "fork"),
        ("mid-snapshot:2", "fork"),
        ("snapshot-renamed:2", "fork"),
        ("mid-snapshot:3", "inline"),
        ("snapshot-renamed:1", "inline"),
    ],
)
def test_killed_at_a_crash_point_recovers_every_acknowledged_write(
    tmp_path: Path, point: str, mode: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    script = _CHILD.format(tests=str(Path(__file__).parent), data=str(data), mode=mode)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "STATEENGINE_CRASH_AT": point},
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr
    acked = int(proc.stdout.split()[-1]) if proc.stdout.split() else 0
    _, _, digests = run_workload(3, 300)
    recovered = TableEngine()
    report = _store(data).recover(recovered)
    # A process kill keeps the page cache: the write in flight (appended, not yet
    # acknowledged) is there too.
    assert digest(recovered) in digests[acked : acked + 2], describe_difference(
        digest(recovered), digests[acked]
    )
    assert report.torn_bytes == 0
    assert not (data / (SNAPSHOT_NAME + ".tmp")).exists()
