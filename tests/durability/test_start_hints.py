"""What the log store's recovery tells the start, so the start can skip work.

``RecoveryReport.ttl_tables``: the only tables whose records may hold a TTL (those of the
snapshot with one, every table the log touched), so ``rebuild_deadlines`` scans only
them. The deadlines it builds must be those of a scan of every record, whatever the
snapshot and the log hold (Hypothesis). The control passes an empty hint: the
comparison must then see the TTLs it leaves out.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.server.engine import TableEngine
from stateengine.server.persist_log import SNAPSHOT_NAME, LogStore
from stateengine.server.persistence import open_store
from stateengine.shm import layout as shm_layout

TABLES = ["a", "b", "c"]
# one write: (table, with a TTL?, before the snapshot?)
writes = st.lists(st.tuples(st.sampled_from(TABLES), st.booleans(), st.booleans()), max_size=30)


def deadlines(engine: TableEngine) -> list[tuple[Any, ...]]:
    """The deadline heap's entries without their tie-break counter, sorted."""
    return sorted((e[0], e[2], e[3], e[4] is None) for e in engine.deadlines)


def fill(data: Path, plan: list[tuple[str, bool, bool]]) -> None:
    """The writes before the snapshot go into it, the others into the log after it."""
    store = open_store(data, "log", "always", snapshot_mode="inline")
    assert isinstance(store, LogStore)
    engine = TableEngine()
    store.recover(engine)
    for table in TABLES:  # every table exists in the snapshot, most without TTLs
        engine.execute({"command": "CREATE_RECORD", "state": table, "record": {"v": 0}})
        store.write(engine.change_set(engine.changes, engine.table_changes, engine.removed))
    for stage in (True, False):
        for table, ttl, before in plan:
            if before is not stage:
                continue
            request: dict[str, Any] = {"command": "CREATE_RECORD", "state": table}
            request["record"] = {"v": 1}
            if ttl:
                request["ttl"] = 3600
            assert engine.execute(request)["ok"]
            store.write(engine.change_set(engine.changes, engine.table_changes, engine.removed))
        if stage:
            store.snapshot(engine)
    store.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=writes)
def test_the_ttl_hint_builds_the_deadlines_of_a_full_scan(tmp_path_factory: Any, plan: Any) -> None:
    data = tmp_path_factory.mktemp("data")
    fill(data, plan)
    engine = TableEngine()
    store = open_store(data, "log")
    report = store.recover(engine)
    store.close()
    assert report.ttl_tables is not None
    engine.rebuild_deadlines()
    full = deadlines(engine)
    engine.rebuild_deadlines(report.ttl_tables)
    assert deadlines(engine) == full
    assert len(full) == sum(ttl for _, ttl, _ in plan)
    # only the tables that can hold a TTL are named: those of the snapshot with one
    in_snapshot = {t for t, ttl, before in plan if ttl and before}
    in_log = {t for t, _, before in plan if not before}
    assert in_snapshot <= report.ttl_tables <= in_snapshot | in_log
    # control: a hint that leaves the tables out misses every TTL
    engine.rebuild_deadlines(set())
    assert (deadlines(engine) == full) == (not full)


def test_a_start_whose_recovery_fails_leaves_no_arena_file(tmp_path: Path) -> None:
    """A damaged snapshot of 12 MB: the server reserves the arena's generation for it (the
    log line is the control that it did), the recovery refuses the snapshot, the start
    fails and the server exits 1, its reserve thread joined and every file unlinked."""
    shm_dir = shm_layout.default_dir()
    if shm_dir is None:
        pytest.skip("no /dev/shm: the arena is off")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / SNAPSHOT_NAME).write_bytes(os.urandom(12 << 20))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(data), "-vv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1, out
    assert "made beside the recovery" in out and "damaged" in out, out
    assert glob.glob(os.path.join(shm_dir, f"stateengine-{proc.pid}-*")) == []
