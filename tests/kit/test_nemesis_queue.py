"""The worked example of docs/testing.md "Faults: the nemesis": a worker paused past its
lease doubles a task's side effect, and the invariant "each task's effect once" says so
with the pause on the timeline; the fixed worker passes the same seeded schedule."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stateengine.client.client import Client
from stateengine.errors import DuplicateId, VersionConflict
from stateengine.testing import ServerProcess
from stateengine.testing.history import Operation, read_history, record_server_commits
from stateengine.testing.invariants import at_most_once, verify
from stateengine.testing.nemesis import Nemesis, Schedule

LEASE = 0.4  # seconds: short on purpose, the pauses outlast it
WAIT = 0.8  # a claim that finds nothing waits this long for a lease to run out
WORK = 0.1  # the time a task takes, between its claim and its side effect
TASKS = 45
SCHEDULE = Schedule.random(
    seed=7, kinds=["pause-worker"], faults=3, start=0.2, gap=(0.1, 0.2), seconds=(0.6, 0.8)
)


def claim(db: Client, worker: int) -> dict[str, Any] | None:
    """Claim a pending task under a lease; wait for one whose lease runs out."""
    return db.claim_record(
        "tasks",
        where={"status": "pending"},
        fields={"status": "running", "worker": worker},
        lease_seconds=LEASE,
        wait=WAIT,
    )


def buggy_worker(db: Client, worker: int) -> None:
    """WRONG: writes its side effect and completes whether or not it still holds the task."""
    while (task := claim(db, worker)) is not None:
        time.sleep(WORK)  # the work
        db.create_record("effects", {"task": task["id"], "worker": worker})  # the side effect
        db.patch_record("tasks", task["id"], {"status": "done"})


def fixed_worker(db: Client, worker: int) -> None:
    """Renews its lease before the effect, makes the effect idempotent (one record per task,
    its id the task's), and completes with ``if_version``."""
    while (task := claim(db, worker)) is not None:
        time.sleep(WORK)  # the work
        try:
            # Still ours? Renewing under if_version fails if someone re-claimed the task.
            task = db.patch_record(
                "tasks", task["id"], {}, lease_seconds=LEASE, if_version=task["_version"]
            )
            try:
                db.create_record(
                    "effects", {"id": task["id"], "task": task["id"], "worker": worker}
                )
            except DuplicateId:
                pass  # the effect happened already (a worker that lost the task did it)
            db.patch_record("tasks", task["id"], {"status": "done"}, if_version=task["_version"])
        except VersionConflict:
            continue  # we lost the lease: the task is someone else's now


def effect_of(op: Operation) -> Any:
    """The task whose side effect *op* wrote (None: not an effect)."""
    if op.command == "CREATE_RECORD" and op.args.get("state") == "effects":
        return op.args["record"]["task"]
    return None


def task_of(op: Operation) -> Any:
    """The task a claim got or a write to ``tasks`` named (shown beside a violation)."""
    if op.command == "CLAIM_RECORD" and op.ok and op.result:
        return op.result["id"]
    if op.command == "PATCH_RECORD" and op.args.get("state") == "tasks":
        return op.args.get("id")
    return None


EFFECT_ONCE = at_most_once("each task's effect once", effect_of, related=task_of, what="task")


def worker_process(
    server: ServerProcess, history: Path, worker: int, fixed: bool, ready: Any
) -> None:
    with Client(server.endpoint, server.data_dir, timeout=10, history=history) as db:
        ready.wait(60)  # all started: the schedule's offsets count from the workload's start
        (fixed_worker if fixed else buggy_worker)(db, worker)


def run_with_nemesis(
    server: ServerProcess,
    history: Path,
    nemesis: Callable[..., Nemesis],
    fixed: bool,
) -> list[Operation]:
    """Fill the queue, start three workers, then the nemesis on them; the whole history
    (with the server's expiry commits: the leases the pauses let run out)."""
    with record_server_commits(server.endpoint, history / "server.msgpack"):
        with server.connect(history=history) as db:
            db.set_state("tasks", [{"status": "pending", "worker": None} for _ in range(TASKS)])
        spawn = mp.get_context("spawn")
        ready = spawn.Barrier(4)
        workers = [
            spawn.Process(target=worker_process, args=(server, history, w, fixed, ready))
            for w in range(3)
        ]
        for p in workers:
            p.start()
        ready.wait(60)
        faults = nemesis(SCHEDULE, server=server, workers=workers, history=history)
        for p in workers:
            p.join(60)  # bounded: a stuck worker is killed and fails the test
            if p.is_alive():
                p.kill()
                p.join(10)
        faults.stop()
    assert [p.exitcode for p in workers] == [0, 0, 0]
    return read_history(*history.glob("*.msgpack"))


def test_a_pause_past_the_lease_doubles_the_buggy_workers_effect(
    stateengine_server: ServerProcess,
    stateengine_history: Path,
    stateengine_nemesis: Callable[..., Nemesis],
) -> None:
    history = run_with_nemesis(
        stateengine_server, stateengine_history, stateengine_nemesis, fixed=False
    )
    verdict = verify(history, [EFFECT_ONCE])
    print(verdict.report())
    assert verdict.linearizability.ok  # the server kept its promises; the worker did not
    assert not verdict.ok and verdict.violations
    for violation in verdict.violations:  # each double effect comes with the pause behind it
        assert violation.message.startswith("task ")
        pauses = [f for f in verdict.faults_during(violation) if f.args["kind"] == "pause-worker"]
        effects = {o.process.split("-")[0] for o in violation.operations if effect_of(o)}
        assert any(str(f.result["pid"]) in effects for f in pauses), verdict.report()
    assert "VIOLATED" in verdict.report() and "pause-worker of worker" in verdict.report()


def test_the_fixed_worker_passes_the_same_schedule(
    stateengine_server: ServerProcess,
    stateengine_history: Path,
    stateengine_nemesis: Callable[..., Nemesis],
) -> None:
    history = run_with_nemesis(
        stateengine_server, stateengine_history, stateengine_nemesis, fixed=True
    )
    verdict = verify(history, [EFFECT_ONCE])
    assert verdict.ok, verdict.report()
    with stateengine_server.connect() as db:
        assert db.list_records("tasks", where={"status": {"$ne": "done"}}) == []
        assert sorted(r["task"] for r in db.list_records("effects")) == list(range(1, TASKS + 1))
