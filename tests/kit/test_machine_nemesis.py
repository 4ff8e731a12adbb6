"""``WorkerStateMachine`` with a nemesis: the server killed and restarted, paused, workers
paused and killed (and respawned) while the rules run; steps compared with the model
until a fault makes an outcome unknown, the whole recorded run accepted by the checker."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from stateengine.testing.checker import check
from stateengine.testing.history import read_history
from stateengine.testing.machine import WorkerStateMachine
from stateengine.testing.nemesis import Schedule, Step, faults_of

LEASE = 1000.5
SETTINGS = settings(max_examples=2, stateful_step_count=10, deadline=None)
CLAIM = {"command": "CLAIM_RECORD", "state": "tasks", "where": {"status": "pending"}}


class FaultyQueue(WorkerStateMachine):
    """A task queue (claims racing on every worker) under every fault kind."""

    workers = 3
    tables: ClassVar[dict[str, dict[str, str]]] = {
        "tasks": {"status": "string", "owner": "integer?", "tries": "integer"}
    }
    # Every kind once, early: the run outlasts the schedule.
    nemesis = Schedule(
        [
            Step(0.3, "pause-worker", 0.3),
            Step(0.9, "kill-worker", 0.2),
            Step(1.4, "pause-server", 0.3),
            Step(2.0, "kill-server", 0.3),
        ]
    )

    @rule(n=st.integers(1, 3))
    def add_tasks(self, n: int) -> None:
        for _ in range(n):
            record = {"status": "pending", "owner": None, "tries": 0}
            self.execute({"command": "CREATE_RECORD", "state": "tasks", "record": record})

    @rule(lease=st.booleans())
    def claims_race(self, lease: bool) -> None:
        extra: dict[str, Any] = {"lease_seconds": LEASE} if lease else {}
        replies = self.execute_concurrently(
            [
                {**CLAIM, "fields": {"status": "running", "owner": w}, **extra}
                for w in range(self.workers)
            ]
        )
        claimed = [r["result"]["id"] for r in replies if r.get("ok") and r["result"]]
        assert len(claimed) == len(set(claimed)), "a task was claimed twice"


def test_the_state_machine_runs_under_a_nemesis(tmp_path: Path) -> None:
    history = tmp_path / "history"
    with FaultyQueue.running(tmp_path, history):
        faults = FaultyQueue.faults
        assert faults is not None
        for _ in range(20):  # bounded: examples until the whole schedule ran beside them
            run_state_machine_as_test(FaultyQueue, settings=SETTINGS)
            if faults.wait(0):
                break
    counts = faults.counts()
    print(f"faults {counts}, steps {FaultyQueue.stats}")
    assert counts == dict.fromkeys(
        ["pause-worker", "kill-worker", "pause-server", "kill-server"], 1
    )
    assert FaultyQueue.stats["compared"] > 0  # faults do not turn the model off for good
    operations = read_history(*history.glob("*.msgpack"))
    assert len(faults_of(operations)) == sum(counts.values())
    result = check(operations, time_limit=60)
    assert result.ok, result.report()
