"""Change sets carry every observable effect, record order included.

Regressions of three gaps found while building the stores: an empty SET_STATE that bumped
versions with no change set, SET_STATE reordering ids, and a delete + re-create of one
id in one commit. Replaying change sets through ``apply_change_set`` alone shows them.
"""

from __future__ import annotations

from durable_workload import digest

from stateengine.server.engine import TableEngine


def _replayed(commands: list[dict[str, object]]) -> tuple[TableEngine, TableEngine]:
    engine, replay = TableEngine(), TableEngine()
    for command in commands:
        engine.execute(command)
        if engine.changes or engine.table_changes:
            replay.apply_change_set(
                engine.change_set(engine.changes, engine.table_changes, engine.removed)
            )
    return engine, replay


def test_set_state_of_nothing_is_persisted() -> None:
    engine, replay = _replayed(
        [
            {"command": "CREATE_STATE", "state": "t"},
            {"command": "SET_STATE", "state": "t", "records": []},
        ]
    )
    assert digest(replay) == digest(engine)


def test_set_state_order_is_persisted() -> None:
    engine, replay = _replayed(
        [
            {
                "command": "SET_STATE",
                "state": "t",
                "records": [{"id": 1, "v": 0}, {"id": 2, "v": 0}],
            },
            {
                "command": "SET_STATE",
                "state": "t",
                "records": [{"id": 2, "v": 1}, {"id": 1, "v": 1}],
            },
        ]
    )
    assert digest(replay, ordered=True) == digest(engine, ordered=True)


def test_recreated_record_order_is_persisted() -> None:
    engine, replay = _replayed(
        [
            {
                "command": "SET_STATE",
                "state": "t",
                "records": [{"id": 1, "v": 0}, {"id": 2, "v": 0}],
            },
            {
                "command": "BATCH",
                "commands": [
                    {"command": "DELETE_RECORD", "state": "t", "id": 1},
                    {"command": "CREATE_RECORD", "state": "t", "record": {"id": 1, "v": 2}},
                ],
            },
        ]
    )
    assert digest(replay, ordered=True) == digest(engine, ordered=True)
