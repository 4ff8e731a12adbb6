"""The kit's state machine base against a real server with three worker processes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from stateengine.client.engine import Engine
from stateengine.testing.machine import MODEL_NOW, WorkerStateMachine, explain

LEASE = 1000.5
CLAIM = {"command": "CLAIM_RECORD", "state": "tasks", "where": {"status": "pending"}}


class GenericMachine(WorkerStateMachine):
    """Only the base's generic rules, on one declared table."""

    workers = 3
    tables: ClassVar[dict[str, dict[str, str]]] = {
        "t": {"n": "integer", "tag": "string?", "flag": "boolean"}
    }


class QueueMachine(WorkerStateMachine):
    """A task queue: the base's rules plus claims racing on every worker."""

    workers = 3
    tables: ClassVar[dict[str, dict[str, str]]] = {
        "tasks": {"status": "string", "owner": "integer?", "tries": "integer"}
    }

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


SETTINGS = settings(max_examples=8, stateful_step_count=10, deadline=None)


def test_generic_rules_match_the_model(tmp_path: Path) -> None:
    GenericMachine.run(tmp_path, settings=SETTINGS)


def test_queue_machine_with_three_workers(tmp_path: Path) -> None:
    QueueMachine.run(tmp_path, settings=SETTINGS)


def test_run_outside_running_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"QueueMachine\.run"):
        QueueMachine()


def test_explain_rejects_replies_no_order_gives() -> None:
    """The concurrent check can fail: two claims that both got the one pending task."""
    model = Engine(clock=lambda: MODEL_NOW)
    model.create_record("tasks", {"status": "pending", "owner": None})
    claims = [{**CLAIM, "fields": {"status": "running", "owner": w}} for w in range(2)]
    # What a correct server may answer: either order.
    first = copy.deepcopy(model)
    second_reply = first.execute(claims[1])
    replies = [first.execute(claims[0]), second_reply]
    assert explain(model, claims, replies) is not None
    # Both claims returning the task (a read-then-write race): no order explains it.
    both = copy.deepcopy(model)
    doubled = [both.execute(dict(claims[0])), dict(replies[1])]
    doubled[1]["result"] = {**doubled[0]["result"], "owner": 1}
    assert explain(model, claims, doubled) is None


def test_a_recorded_machine_run_is_linearizable(tmp_path: Path) -> None:
    """Every client of a run (the workers' and the checking one) records; the checker
    accepts the whole run, examples and their resets included."""
    from stateengine.testing.checker import check
    from stateengine.testing.history import read_history

    history = tmp_path / "history"
    QueueMachine.run(tmp_path, settings=settings(SETTINGS, max_examples=3), history=history)
    operations = read_history(*history.glob("*.msgpack"))
    assert len({op.process for op in operations}) == QueueMachine.workers + 1
    result = check(operations, time_limit=60)
    assert result.ok, result.report()
