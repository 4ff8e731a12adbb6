"""Examples of the engine's contract (README "Data model" and "Wire protocol").

The exhaustive check is the state machine in tests/stateful; these pin down the cases
a reader of the README would ask about first.
"""

from __future__ import annotations

import pytest

from stateengine import Engine
from stateengine.errors import (
    BadRequest,
    CapacityError,
    DuplicateId,
    ImmutableId,
    RecordNotFound,
    SchemaError,
    StateExists,
    StateNotFound,
    VersionConflict,
)


@pytest.fixture
def eng() -> Engine:
    return Engine()


def test_first_record_sets_the_schema_and_later_ones_must_match(eng: Engine) -> None:
    eng.create_record("t", {"name": "a", "status": "new", "priority": 1})
    assert eng.get_schema("t") == ["id", "name", "status", "priority"]
    with pytest.raises(SchemaError, match="missing field 'priority'"):
        eng.create_record("t", {"name": "b", "status": "new"})
    with pytest.raises(SchemaError, match="unknown field 'colour'"):
        eng.create_record("t", {"name": "b", "status": "new", "priority": 1, "colour": 1})
    with pytest.raises(SchemaError, match="unknown field 'colour'"):
        eng.patch_record("t", 1, {"colour": "red"})


def test_declared_schema_checks_types_and_casts_int_to_float(eng: Engine) -> None:
    eng.create_state("m", schema={"x": "float", "note": "string?"})
    rec = eng.create_record("m", {"x": 1, "note": None})
    assert rec["x"] == 1.0 and type(rec["x"]) is float
    with pytest.raises(SchemaError, match=r"record\.note: expected string\?"):
        eng.create_record("m", {"x": 1.5, "note": 3})
    with pytest.raises(SchemaError, match="unknown type"):
        eng.create_state("bad", schema={"x": "int"})


def test_versions_seq_and_record_version(eng: Engine) -> None:
    reply = eng.execute({"command": "CREATE_STATE", "state": "t"})
    assert (reply["version"], reply["seq"]) == (0, 1)
    a = eng.create_record("t", {"v": 1})
    assert a["_version"] == 2
    reply = eng.execute(
        {
            "command": "BATCH",
            "commands": [
                {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"v": 2}},
                {"command": "CREATE_RECORD", "state": "t", "record": {"v": 3}},
                {"command": "GET_RECORD", "state": "t", "id": 1},
            ],
        }
    )
    assert reply["ok"] and reply["seq"] == 3 and reply["version"] is None
    assert [r["_version"] for r in eng.list_records("t")] == [3, 3]
    assert eng.get_state_info("t")["version"] == 3  # 1 create + 2 writes in the batch
    failed = eng.execute({"command": "GET_RECORD", "state": "t", "id": 42})
    assert not failed["ok"] and eng.seq == 3


def test_ids_auto_explicit_immutable_and_never_reused(eng: Engine) -> None:
    assert eng.create_record("t", {"v": 0})["id"] == 1
    assert eng.create_record("t", {"id": 10, "v": 0})["id"] == 10
    assert eng.create_record("t", {"v": 0})["id"] == 11
    assert eng.create_record("t", {"id": "k", "v": 0})["id"] == "k"
    eng.delete_record("t", 11)
    assert eng.create_record("t", {"v": 0})["id"] == 12
    with pytest.raises(DuplicateId):
        eng.create_record("t", {"id": 10, "v": 1})
    with pytest.raises(ImmutableId):
        eng.set_record("t", 10, {"id": 9, "v": 1})
    with pytest.raises(ImmutableId):
        eng.patch_record("t", 10, {"id": "10"})
    with pytest.raises(BadRequest, match="integer or a string"):
        eng.get_record("t", True)  # type: ignore[arg-type]


def test_version_field_is_reserved(eng: Engine) -> None:
    rec = eng.create_record("t", {"v": 0})
    with pytest.raises(SchemaError, match="_version"):
        eng.set_record("t", rec["id"], rec)


def test_max_length(eng: Engine) -> None:
    eng.create_state("q", max_length=2)
    assert eng.set_state("q", [{"v": i} for i in range(5)]) == 2
    assert [r["v"] for r in eng.list_records("q")] == [0, 1]
    with pytest.raises(CapacityError, match="max_length 2"):
        eng.create_record("q", {"v": 9})


def test_preconditions(eng: Engine) -> None:
    rec = eng.create_record("t", {"v": 0, "owner": None})
    with pytest.raises(VersionConflict, match="expected 0"):
        eng.patch_record("t", 1, {"v": 1}, expected_version=0)
    with pytest.raises(VersionConflict):
        eng.patch_record("t", 1, {"v": 1}, if_version=rec["_version"] + 1)
    with pytest.raises(VersionConflict, match="if_match"):
        eng.patch_record("t", 1, {"v": 1}, if_match={"owner": "me"})
    eng.patch_record("t", 1, {"v": 1}, if_version=rec["_version"], if_match={"owner": None})
    assert eng.get_record("t", 1)["v"] == 1


def test_failed_batch_undoes_everything_including_deletes_and_order(eng: Engine) -> None:
    eng.set_state("t", [{"v": i} for i in range(5)])
    eng.create_state("other")
    before = (eng.list_records("t"), eng.get_state_info("t"), eng.list_states(), eng.seq)
    reply = eng.execute(
        {
            "command": "BATCH",
            "commands": [
                {"command": "DELETE_RECORD", "state": "t", "id": 2},
                {"command": "PATCH_RECORD", "state": "t", "id": 4, "fields": {"v": 40}},
                {"command": "CREATE_RECORD", "state": "t", "record": {"v": 9}},
                {"command": "DELETE_STATE", "state": "other"},
                {"command": "ALTER_STATE", "state": "t", "add": {"w": {"default": 0}}},
                {"command": "CREATE_STATE", "state": "new"},
                {"command": "SET_STATE", "state": "t", "records": []},
                {"command": "INCREMENT", "state": "t", "id": 3, "field": "w"},
            ],
        }
    )
    assert reply["error"]["type"] == "RecordNotFound"
    assert reply["error"]["message"].startswith("commands[7]: ")
    after = (eng.list_records("t"), eng.get_state_info("t"), eng.list_states(), eng.seq)
    assert after == before


def test_list_records_filters_orders_and_pages(eng: Engine) -> None:
    eng.set_state("t", [{"g": i % 2, "n": i} for i in range(6)])
    rows = eng.list_records("t", where={"g": 1}, order_by="-n", offset=1, limit=1)
    assert [r["n"] for r in rows] == [3]
    rows = eng.list_records("t", order_by=["g", "-n"])
    assert [r["n"] for r in rows] == [4, 2, 0, 5, 3, 1]
    with pytest.raises(SchemaError, match="order_by"):
        eng.list_records("t", order_by="nope")


def test_alter_state_adds_with_default_and_drops(eng: Engine) -> None:
    eng.set_state("t", [{"a": 1}, {"a": 2}])
    info = eng.alter_state("t", add={"b": {"type": "integer", "default": 7}}, drop=["a"])
    assert info["schema"] == ["id", "b"] and info["types"]["b"] == "integer"
    assert [r["b"] for r in eng.list_records("t")] == [7, 7]
    with pytest.raises(SchemaError):
        eng.alter_state("t", add={"c": {"type": "integer", "default": "x"}})
    with pytest.raises(SchemaError, match="'id' cannot be dropped"):
        eng.alter_state("t", drop=["id"])


def test_increment(eng: Engine) -> None:
    eng.create_state("c", schema={"n": "integer", "x": "float", "s": "string"})
    eng.create_record("c", {"id": "rows", "n": 0, "x": 0.5, "s": ""})
    assert eng.increment("c", "rows", "n", 5) == 5
    assert eng.increment("c", "rows", "x", by=1) == 1.5
    with pytest.raises(SchemaError):
        eng.increment("c", "rows", "n", by=0.5)
    with pytest.raises(SchemaError, match="not a number"):
        eng.increment("c", "rows", "s")


def test_table_management_errors(eng: Engine) -> None:
    eng.create_state("t")
    with pytest.raises(StateExists):
        eng.create_state("t")
    with pytest.raises(StateNotFound):
        eng.get_record("missing", 1)
    with pytest.raises(RecordNotFound):
        eng.get_record("t", 1)
    eng.delete_state("t")
    assert eng.list_states() == []


def test_results_do_not_alias_the_store(eng: Engine) -> None:
    record = {"tags": ["a"]}
    stored = eng.create_record("t", record)
    record["tags"].append("b")
    stored["tags"].append("c")
    assert eng.get_record("t", 1)["tags"] == ["a"]


def test_unknown_argument_is_named(eng: Engine) -> None:
    reply = eng.execute({"command": "LIST_STATES", "state": "x"})
    assert reply["error"] == {
        "type": "BadRequest",
        "message": "LIST_STATES takes no argument 'state'; it takes no arguments",
    }
    reply = eng.execute({"command": "LIST_STATES", "req_id": 7})
    assert reply["req_id"] == 7 and reply["ok"]
