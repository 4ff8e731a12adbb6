"""A soak run: four recording workers on hot records while the nemesis runs a random
schedule over every fault kind (server killed and restarted, server paused, workers
paused, workers killed and replaced); the checker must accept the whole history.

Not in CI: a long run, behind the ``slow`` marker *and* an environment variable::

    STATEENGINE_SOAK_SECONDS=180 python -m pytest -m slow -s tests/kit/test_nemesis_soak.py

(``STATEENGINE_SOAK_SEED`` picks the schedule; it prints the operation and fault counts.)

Reads come from the arena (``STATEENGINE_SOAK_ARENA=0``: over the socket). Its first
runs found stale reads right after a restart: a client still attached to the dead
server's arena read its last version; the restarted server now marks that arena
superseded (``arena.last``; test_nemesis.py has the regression test and its control).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from stateengine.client.client import Client
from stateengine.errors import StateEngineError
from stateengine.testing import ServerProcess
from stateengine.testing.checker import check
from stateengine.testing.history import read_history
from stateengine.testing.nemesis import FAULT_KINDS, Nemesis, Schedule, Targets, Worker

SECONDS = float(os.environ.get("STATEENGINE_SOAK_SECONDS", "0"))
SEED = os.environ.get("STATEENGINE_SOAK_SEED", "soak")
WORKERS = 4
KEYS = 24  # many records: small partitions for the checker
PACE = 0.004  # seconds between a worker's operations: a history the checker can finish
ARENA = os.environ.get("STATEENGINE_SOAK_ARENA", "1") != "0"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SECONDS, reason="a long run: set STATEENGINE_SOAK_SECONDS (e.g. 180) to run it"
    ),
]
SPAWN = mp.get_context("spawn")


def soak_worker(server: ServerProcess, history: str, seed: int, until: float) -> None:
    """Reads from the arena, compare-and-set patches, increments, until *until*."""
    rng = random.Random(seed)
    with Client(server.endpoint, server.data_dir, timeout=1.0, arena=ARENA, history=history) as db:
        while time.monotonic() < until:
            key = rng.randrange(KEYS)
            try:
                roll = rng.random()
                if roll < 0.4:
                    db.get_record("soak", key)
                elif roll < 0.7:
                    rec = db.get_record("soak", key)
                    db.patch_record(
                        "soak", key, {"v": rng.randrange(100)}, if_version=rec["_version"]
                    )
                else:
                    db.increment("soak", key, "n")
            except StateEngineError:
                pass  # VersionConflict, or ServerUnavailable under a fault: recorded
            time.sleep(PACE)


def test_soak_every_fault_kind(tmp_path: Path) -> None:
    history = tmp_path / "history"
    until = time.monotonic() + SECONDS
    kinds = ["kill-server", "pause-server", "pause-worker", "kill-worker"]
    assert set(kinds) <= set(FAULT_KINDS)
    schedule = Schedule.random(
        SEED, kinds, faults=int(SECONDS), start=1.0, gap=(0.5, 2.0), seconds=(0.2, 1.5)
    )
    seeds = iter(range(1_000_000))
    with ServerProcess(tmp_path / "data", "--fsync", "no") as server:
        with server.connect(history=history) as db:
            db.set_state("soak", [{"id": k, "n": 0, "v": 0} for k in range(KEYS)])
        procs: list[BaseProcess] = []

        def start_worker() -> int:
            proc = SPAWN.Process(
                target=soak_worker, args=(server, str(history), next(seeds), until)
            )
            proc.start()
            procs.append(proc)
            assert proc.pid is not None
            return proc.pid

        targets = [
            Worker(f"worker {i}", start_worker(), restart=start_worker) for i in range(WORKERS)
        ]
        started = time.monotonic()
        with Nemesis(schedule, Targets(server, targets), history=history) as nemesis:
            while time.monotonic() < until and not nemesis.wait(1.0):
                pass
        for p in procs:  # the nemesis stopped: no worker is added now
            p.join(max(0.0, until - time.monotonic()) + 30)
            if p.is_alive():
                p.kill()
                p.join(10)
        run_seconds = time.monotonic() - started
    operations = read_history(*history.glob("*.msgpack"))
    result = check(operations, time_limit=max(600.0, SECONDS * 3))
    counts: dict[str, Any] = nemesis.counts()
    print(
        f"\nsoak: {run_seconds:.0f} s, {result.operations} operations "
        f"({result.unknown_outcome} of unknown outcome) from {len(procs)} worker processes, "
        f"{sum(counts.values())} faults {counts}; arena reads {ARENA}; "
        f"checked in {result.seconds:.1f} s"
    )
    assert set(counts) == set(kinds), counts
    assert result.ok, result.report()
