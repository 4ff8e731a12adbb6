"""The checker on one large table: a task queue of 10^4 tasks drained by 8 workers
(~2·10^4 operations of one table-wide partition, as the queue workers' test records) is
judged within seconds, and one wrong operation in it is found and named: a read of a
value never written, a second claim of a claimed task, a claim whose write is missing.

The history is generated in-process from the real engine (``bench.checker``'s
``queue_history``); the search takes the recorded writes in ``seq`` order, which is
what keeps it linear (it gave no verdict in 300 s before)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from bench.checker import queue_history
from stateengine.testing.checker import CheckResult, check
from stateengine.testing.history import Operation

TASKS = 10_000
#: Seconds: the check takes ~2 s alone on this machine; the bound leaves room for a busy
#: machine and is still far below what the search took without the seq order (> 300 s).
BOUND = 20.0


@pytest.fixture(scope="module")
def history() -> list[Operation]:
    return queue_history(TASKS, random.Random(1))


def judged(ops: list[Operation]) -> CheckResult:
    return check(ops, time_limit=60, shrink_time=2)


def test_a_ten_thousand_task_queue_is_accepted_within_the_bound(
    history: list[Operation],
) -> None:
    assert len(history) > 2 * TASKS
    assert sum(1 for o in history if not o.known) == 3  # two unknown, one lost
    assert any(o.error == "VersionConflict" for o in history)
    result = judged(history)
    assert result.ok, result.report()
    assert result.seconds < BOUND, result.report()
    # Linear: about one state per operation. Without the seq order the search tries
    # other writes' orders too (~1.8·10^5 states on this history, 9 times the operations).
    assert result.explored < 1.05 * len(history), result.explored


def _middle(history: list[Operation], command: str) -> list[int]:
    """Indices of the acknowledged *command*s with a result from the middle on."""
    start = len(history) // 2
    return [
        i
        for i in range(start, len(history))
        if history[i].command == command and history[i].ok and history[i].result
    ]


def _rejected(ops: list[Operation], culprit: Operation) -> str:
    """The report, which must show *culprit* as the one operation no state explains."""
    result = judged(ops)
    assert not result.ok and not result.timed_out, result.report()
    assert result.seconds < BOUND, result.report()
    (failure,) = result.failures
    assert failure.sub_history == [culprit], result.report()
    report = result.report()
    assert f"{culprit.process}#{culprit.op} {culprit.command}: observed" in report, report
    return report


def test_control_a_corrupt_read_is_rejected_and_named(history: list[Operation]) -> None:
    i = _middle(history, "GET_RECORD")[0]
    bad = dataclasses.replace(history[i], result={**history[i].result, "attempts": 7})
    report = _rejected([*history[:i], bad, *history[i + 1 :]], bad)
    assert "the model allows only" in report


def test_control_a_task_claimed_twice_is_rejected_and_named(history: list[Operation]) -> None:
    first, second = _middle(history, "CLAIM_RECORD")[:6:5]
    taken = history[first].result["id"]
    twice = history[second]
    bad = dataclasses.replace(twice, result={**twice.result, "id": taken})
    _rejected([*history[:second], bad, *history[second + 1 :]], bad)


def test_control_a_dropped_claim_is_rejected_at_the_next_claim(
    history: list[Operation],
) -> None:
    claims = _middle(history, "CLAIM_RECORD")
    dropped = claims[10]
    dropped_seq = history[dropped].seq
    assert dropped_seq is not None
    # the claim that committed next finds, in the model, the task the dropped one took
    after = min((history[i] for i in claims[11:]), key=lambda o: o.seq or 0)
    assert after.seq is not None and after.seq > dropped_seq
    _rejected([*history[:dropped], *history[dropped + 1 :]], after)
