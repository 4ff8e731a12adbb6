"""The benchmark suite in its smallest mode, so that it cannot rot (issue 7).

``python -m bench --smoke`` runs every workload on tiny inputs against a real server,
Redis and PostgreSQL (required under ``CI=true``; skipped with a line elsewhere), and
py-lmdb when installed (it is not in the ``test`` extra: its rows must skip cleanly).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT = 240  # s; the smoke run takes ~30 s on 2 idle cores

# The cluster workloads' rows: a private redis-server is started (its binary is needed).
CLUSTER_ROWS = {
    "cluster_single_one",
    "cluster_write_one",
    "cluster_single_inflight",
    "cluster_write_inflight",
    "cluster3_inflight",
    "catchup_node",
    "xclaim_nodes",
    "xclaim_single",
    "stream_xadd_one",
    "stream_xadd_pipe",
}
# Rows every smoke run has, whatever else is installed or running.
CORE_ROWS = {
    "floor_dict",
    "floor_copy_unpackb",
    "get_arena",
    "get_arena_raw",
    "get_socket",
    "get_manager",
    "reread_floor_dict",
    "reread_arena_cached",
    "echo_poll_req",
    "echo_poll_dealer100",
    "socketpair",
    "write_one",
    "write_inflight",
    "write_batch",
    "bulk_set_state",
    "bulk_batch",
    "readers_1",
    "readers_2",
    "readers_4",
    "claim_stateengine",
    "claimbig_stateengine",
    "pqueue_stateengine",
    "range_indexed",
    "range_scan",
    "range_client",
    "range_arena",
    "range_byid",
    "range_byid_batch",
    "durable_pool_always",
    "durable_pool_no",
    "durable_pool_always_pure",
    "restart_server",
    "wake_stateengine",
    "wake_stateengine_write",
    "parkedwrite_50",
    "parkedwrite_none",
}
REDIS_ROWS = {
    "redis_get",
    "redis_set",
    "redis_set_pipe",
    "bulk_redis",
    "claim_redis",
    "claimbig_redis",
    "pqueue_redis",
    "wake_redis",
    "wake_redis_write",
}
POSTGRES_ROWS = {"claim_postgres", "claimbig_postgres", "pqueue_postgres"}
# Issue 16's targets that need no Redis or PostgreSQL: measured in every smoke run.
STATEENGINE_TARGETS = {
    "claim rate from the big table ≥ 0.8× from the tasks alone",
    "range list: index ≥ 100× faster than no index",
    "range list with an index ≤ 3× the records by id",
    "blocking-claim wake ≤ 1.5× one acknowledged write",
    "compiled path ≥ 2× pure Python under 8 × 16 writers, fsync always",
}
LMDB_ROWS = {"get_lmdb", "write_one_lmdb_nosync", "bulk_lmdb", "lmdb_sync_put"}


def run_bench(*args: str, timeout: float = SMOKE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow  # ~50 s: the default run stays under 10 minutes; .ci/run runs it after
@pytest.mark.timeout(SMOKE_TIMEOUT + 60)
def test_smoke_run_writes_every_row_and_compares(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    start = time.monotonic()
    proc = run_bench("--smoke", "--json", str(out), "--chart", str(tmp_path / "chart.png"))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    keys = {row["key"] for row in doc["rows"]}
    assert CORE_ROWS <= keys, sorted(CORE_ROWS - keys)
    skipped = " ".join(doc["skipped"])
    if os.environ.get("CI") == "true" or "Redis" not in skipped:
        assert REDIS_ROWS <= keys, sorted(REDIS_ROWS - keys)
    if os.environ.get("CI") == "true" or "PostgreSQL" not in skipped:
        assert POSTGRES_ROWS <= keys, sorted(POSTGRES_ROWS - keys)
    if os.environ.get("CI") == "true" or shutil.which("redis-server") is not None:
        assert CLUSTER_ROWS <= keys, sorted(CLUSTER_ROWS - keys)
    else:
        assert "cluster rows: the redis-server binary is not installed" in skipped
    if importlib.util.find_spec("lmdb") is None:
        assert "LMDB rows: py-lmdb not installed" in skipped
        assert "skipped: LMDB rows" in proc.stdout
    else:
        assert LMDB_ROWS <= keys, sorted(LMDB_ROWS - keys)
    for row in doc["rows"]:
        assert row["repeats"] == doc["config"]["repeats"] and row["median_us"] > 0, row
    statuses = {t["target"]: t["status"] for t in doc["targets"]}
    assert len(statuses) == 26 and set(statuses.values()) <= {"PASS", "MISS", "SKIP"}
    assert all(statuses[t] in ("PASS", "MISS") for t in STATEENGINE_TARGETS), statuses
    # The big tables' fills are measured apart from the rows, and said so.
    assert "setup: claimbig: stateengine table of" in proc.stdout
    assert "setup: range: table range_indexed" in proc.stdout
    assert "Targets:" in proc.stdout and "load average" in proc.stdout
    assert "chart" in proc.stdout  # drawn, or skipped with a line when matplotlib is absent

    compared = run_bench("--compare", str(out), str(out), timeout=60)
    assert compared.returncode == 0, compared.stderr
    assert "1.00×" in compared.stdout and "(new)" not in compared.stdout
    print(f"smoke run: {elapsed:.1f} s")
