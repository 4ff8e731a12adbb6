"""Worker pools claiming tasks through a real server: every task claimed exactly once.

Two mechanisms are checked (CLAIM_RECORD; PATCH_RECORD with if_match), and a control
run without the precondition shows double claims, proving the check can fail. Every
client records its operations (the kit's history option) and the checker must find the
recorded history linearizable, on top of the counts. (The control's history is
linearizable too: each of its reads and writes is atomic; its bug is in how the client
combines them, which tests/kit/test_task_queue.py shows the checker catching.)
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import random
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from stateengine.client.client import Client
from stateengine.errors import VersionConflict
from stateengine.testing import ServerProcess
from stateengine.testing.checker import check
from stateengine.testing.history import read_history

TASKS = 1000
WORKERS = 4
SPAWN = mp.get_context("spawn")


def worker(endpoint: str, mode: str, wid: int, out: str, go: Event, history: str) -> None:
    claimed: list[tuple[int, int]] = []  # (task id, _version of the claim)
    conflicts = empty = 0
    rng = random.Random(wid)
    with Client(endpoint, timeout=20, history=history) as client:
        go.wait(30)
        for _ in range(TASKS * 4):  # bounded: each round claims, conflicts or ends
            if mode == "claim":
                rec = client.claim_record(
                    "tasks", {"status": "pending"}, {"status": "running", "worker": wid}
                )
                if rec is None:
                    empty += 1
                    break
                claimed.append((rec["id"], rec["_version"]))
                continue
            pending = client.list_records("tasks", where={"status": "pending"}, limit=8)
            if not pending:
                empty += 1
                break
            task = rng.choice(pending)
            guard = {"if_match": {"status": "pending"}} if mode == "if_match" else {}
            try:
                rec = client.patch_record(
                    "tasks", task["id"], {"status": "running", "worker": wid}, **guard
                )
            except VersionConflict:
                conflicts += 1
                continue
            claimed.append((rec["id"], rec["_version"]))
    Path(out).write_text(json.dumps({"claimed": claimed, "conflicts": conflicts, "empty": empty}))


def run_pool(tmp_path: Path, mode: str) -> list[dict[str, object]]:
    history = tmp_path / "history"
    with ServerProcess(tmp_path / "data") as server, server.connect(history=history) as client:
        client.set_state("tasks", [{"status": "pending", "worker": None} for _ in range(TASKS)])
        go = SPAWN.Event()
        outs = [str(tmp_path / f"w{i}.json") for i in range(WORKERS)]
        procs = [
            SPAWN.Process(target=worker, args=(server.endpoint, mode, i, outs[i], go, str(history)))
            for i in range(WORKERS)
        ]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(120)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        assert [p.exitcode for p in procs] == [0] * WORKERS
        stats = [json.loads(Path(o).read_text()) for o in outs]
        stats.append({"final": client.list_records("tasks", where={"status": "pending"})})
    result = check(read_history(*history.glob("*.msgpack")), time_limit=120)
    assert result.ok, result.report()
    return stats


def claim_counts(stats: list[dict[str, object]]) -> Counter[int]:
    return Counter(tid for s in stats[:-1] for tid, _ in s["claimed"])  # type: ignore[attr-defined]


def interleavings(stats: list[dict[str, object]]) -> int:
    """How often consecutive claims (in commit order) came from different workers."""
    order = sorted(
        (version, wid)
        for wid, s in enumerate(stats[:-1])
        for _, version in s["claimed"]  # type: ignore[attr-defined]
    )
    return sum(1 for a, b in itertools.pairwise(order) if a[1] != b[1])


def test_claim_record_claims_every_task_exactly_once(tmp_path: Path) -> None:
    stats = run_pool(tmp_path, "claim")
    counts = claim_counts(stats)
    assert sorted(counts) == list(range(1, TASKS + 1))
    assert set(counts.values()) == {1}
    assert stats[-1]["final"] == []
    # Contention really happened: the workers' claims interleave in commit order.
    assert interleavings(stats) > TASKS // 10


def test_patch_with_if_match_claims_every_task_exactly_once(tmp_path: Path) -> None:
    stats = run_pool(tmp_path, "if_match")
    counts = claim_counts(stats)
    assert sorted(counts) == list(range(1, TASKS + 1))
    assert set(counts.values()) == {1}
    assert sum(s["conflicts"] for s in stats[:-1]) > 0  # type: ignore[misc]


def test_control_without_precondition_double_claims(tmp_path: Path) -> None:
    """Without if_match the same read-then-write pool claims some tasks twice."""
    stats = run_pool(tmp_path, "unguarded")
    counts = claim_counts(stats)
    assert max(counts.values()) > 1, "the check above could not fail: no double claim seen"


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
