"""The worked example of docs/testing.md: a task queue on CLAIM_RECORD with leases.

The docs quote this file (tests/kit/test_docs.py checks that every snippet there is
code here): four worker processes drain a queue, every operation is recorded, and the
checker accepts the history; the same kit rejects a deliberately wrong client that claims
with a plain read, then a write.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from pathlib import Path
from typing import Any

from stateengine import Client
from stateengine.errors import VersionConflict
from stateengine.testing import ServerProcess, recorded
from stateengine.testing.checker import check
from stateengine.testing.history import Operation, read_history

LEASE = 600.0  # seconds: far longer than the test, so no lease runs out


def work(db: Client, worker: int) -> int:
    """The queue's worker loop: claim a task under a lease, do it, complete it."""
    done = 0
    while True:
        task = db.claim_record(
            "tasks",
            where={"status": "pending"},
            fields={"status": "running", "worker": worker},
            lease_seconds=LEASE,
        )
        if task is None:
            return done
        try:  # ... the work itself ..., then complete, unless the lease was lost:
            db.patch_record("tasks", task["id"], {"status": "done"}, if_version=task["_version"])
            done += 1
        except VersionConflict:
            pass  # someone else re-claimed the task after our lease ran out


class ReadThenWriteClient(Client):
    """WRONG: a claim made of a read and a separate write. Two workers can both read the
    same pending task before either writes, and both "claim" it."""

    @recorded("CLAIM_RECORD")  # recorded as the one operation it pretends to be
    def claim_record(
        self,
        state: str,
        where: dict[str, Any],
        fields: dict[str, Any],
        *,
        order_by: str | list[str] | None = None,
        lease_seconds: float | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any] | None:
        found = self.list_records(state, where=where, order_by=order_by, limit=1)
        if not found:
            return None
        return self.patch_record(state, found[0]["id"], fields)


def worker_process(server: ServerProcess, history: Path, worker: int, wrong: bool) -> None:
    client_class = ReadThenWriteClient if wrong else Client
    with client_class(server.endpoint, server.data_dir, history=history) as db:
        work(db, worker)


def run_queue(server: ServerProcess, history: Path, tasks: int, wrong: bool = False) -> None:
    """Fill the queue (recorded too: the history starts from an empty server), then let
    four worker processes drain it."""
    with server.connect(history=history) as db:
        db.set_state("tasks", [{"status": "pending", "worker": None} for _ in range(tasks)])
    spawn = mp.get_context("spawn")
    workers = [
        spawn.Process(target=worker_process, args=(server, history, w, wrong)) for w in range(4)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)  # every wait bounded: a stuck worker is killed and fails the test
        if p.is_alive():
            p.kill()
            p.join(10)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]


def test_the_task_queue_is_linearizable(
    stateengine_server: ServerProcess, stateengine_history: Path
) -> None:
    run_queue(stateengine_server, stateengine_history, tasks=500)
    history = read_history(*stateengine_history.glob("*.msgpack"))

    result = check(history)
    assert result.ok, result.report()
    assert claimed_twice(history) == []
    with stateengine_server.connect() as db:
        assert len(db.list_records("tasks", where={"status": "done"})) == 500


def test_the_checker_rejects_a_read_then_write_claim(
    stateengine_server_factory: Any, tmp_path: Path
) -> None:
    for attempt in range(5):  # each run races four workers; one double claim suffices
        history = tmp_path / f"history-{attempt}"
        run_queue(stateengine_server_factory(), history, tasks=40, wrong=True)
        operations = read_history(*history.glob("*.msgpack"))
        if claimed_twice(operations):
            break
    else:
        raise AssertionError("no task claimed twice in 5 runs: the control could not fail")

    result = check(operations)
    assert not result.ok and not result.timed_out
    print(result.report())


def claimed_twice(history: list[Operation]) -> list[Any]:
    """Task ids that two successful CLAIM_RECORD operations returned."""
    claims = Counter(
        op.result["id"] for op in history if op.command == "CLAIM_RECORD" and op.ok and op.result
    )
    return [task for task, n in claims.items() if n > 1]
