"""The checker and a BATCH that wrote nothing: claims that all found nothing commit
nothing, and the reply carries the seq of an earlier commit. (Found by the state machine
under a nemesis: such a batch was taken as the write of that seq, placed before the
CREATE_STATE that made it, and the history rejected.)"""

from __future__ import annotations

from typing import Any

from stateengine.testing.checker import check
from stateengine.testing.history import Operation

CLAIM_ANY = {"command": "CLAIM_RECORD", "state": "t", "where": {}, "fields": {"n": 2}}


def _op(
    process: str, op: int, command: str, args: dict[str, Any], t: int, result: Any, seq: int
) -> Operation:
    return Operation(process, op, command, args, t, t + 5, True, result, None, seq)


def history(batch_result: list[Any]) -> list[Operation]:
    """An old table with one record, dropped and created empty, then a batch of claims."""
    return [
        _op("a", 0, "CREATE_STATE", {"state": "t"}, 0, {}, 1),
        _op(
            "a",
            1,
            "CREATE_RECORD",
            {"state": "t", "record": {"id": 1, "n": 1}},
            10,
            {"id": 1, "n": 1, "_version": 2},
            2,
        ),
        _op("a", 2, "DELETE_STATE", {"state": "t"}, 20, None, 3),
        _op("a", 3, "CREATE_STATE", {"state": "t"}, 30, {}, 4),
        _op("b", 0, "BATCH", {"commands": [CLAIM_ANY, CLAIM_ANY]}, 40, batch_result, 4),
    ]


def test_a_batch_of_claims_that_found_nothing_is_no_write() -> None:
    result = check(history([None, None]))
    assert result.ok, result.report()


def test_control_a_batch_that_claimed_from_the_dropped_table_is_rejected() -> None:
    """The same batch answering the dropped table's record (stale) must be rejected."""
    stale = [{"id": 1, "n": 2, "_version": 5}, None]
    assert not check(history(stale)).ok
