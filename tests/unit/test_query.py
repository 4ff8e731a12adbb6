"""``where`` semantics (stateengine.query) against a model read straight off its rules."""

from __future__ import annotations

import math
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateengine.errors import BadRequest
from stateengine.protocol import values_equal
from stateengine.query import OPERATORS, compile_where, is_operator_map, matches

FIELDS = ["a", "b", "c"]
_COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _kind(value: Any) -> str | None:
    if type(value) is int or (type(value) is float and not math.isnan(value)):
        return "number"
    return {str: "string", bytes: "bytes"}.get(type(value))


def model(record: dict[str, Any], where: dict[str, Any]) -> bool:
    """Each operator on its own, as the docs word it; no merging of bounds."""
    for name, cond in where.items():
        ops = list(cond.items()) if is_operator_map(cond) else [("$eq", cond)]
        present, value = name in record, record.get(name)
        for op, arg in ops:
            equal = present and values_equal(value, arg)
            if op == "$eq" and not equal:
                return False
            if op == "$ne" and equal:
                return False
            if op in ("$in", "$nin"):
                hit = present and any(values_equal(value, x) for x in arg)
                if hit != (op == "$in"):
                    return False
            if op in _COMPARE:
                if not present or _kind(value) is None or _kind(value) != _kind(arg):
                    return False
                if not _COMPARE[op](value, arg):
                    return False
    return True


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sampled_from(["", "a", "b", "ab", "z"]),
    st.sampled_from([b"", b"a", b"b"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.sampled_from(["x", "$gt", "$eq"]), scalars, max_size=2),
)
bounds = st.one_of(
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["", "a", "b", "z"]),
    st.sampled_from([b"", b"a", b"b"]),
)
operator_maps = st.dictionaries(
    st.sampled_from(sorted(OPERATORS)),
    values,
    min_size=1,
    max_size=3,
).map(
    lambda ops: {
        op: (
            [arg]
            if op in ("$in", "$nin") and type(arg) is not list
            else (arg if _kind(arg) is not None or op not in _COMPARE else 1)
        )
        for op, arg in ops.items()
    }
)
conditions = st.one_of(values, operator_maps, st.fixed_dictionaries({"$gte": bounds}))
records = st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)
wheres = st.dictionaries(st.sampled_from(FIELDS), conditions, max_size=3)


@settings(max_examples=3000, deadline=None)
@given(records, wheres)
def test_compiled_where_agrees_with_the_model(
    record: dict[str, Any], where: dict[str, Any]
) -> None:
    if not valid(where):
        with pytest.raises(BadRequest):
            compile_where(where)
        return
    assert compile_where(where)[1](record) == model(record, where)


def valid(where: dict[str, Any]) -> bool:
    """Range bounds are numbers (not NaN), strings or bytes; $in and $nin take lists."""
    for cond in where.values():
        for op, arg in cond.items() if is_operator_map(cond) else []:
            if op in _COMPARE and _kind(arg) is None:
                return False
            if op in ("$in", "$nin") and type(arg) is not list:
                return False
    return True


@settings(max_examples=500, deadline=None)
@given(records, st.dictionaries(st.sampled_from(FIELDS), values, max_size=3))
def test_plain_values_mean_equality(record: dict[str, Any], where: dict[str, Any]) -> None:
    expected = all(
        name in record and values_equal(record[name], value)
        for name, value in where.items()
        if not is_operator_map(value)
    )
    if not any(is_operator_map(v) for v in where.values()):
        assert matches(record, where) == expected


def test_ranges_compare_within_one_type() -> None:
    assert matches({"n": 3}, {"n": {"$gt": 2.5}})
    assert not matches({"n": "3"}, {"n": {"$gt": 2}})
    assert not matches({"n": True}, {"n": {"$gte": 0}})
    assert not matches({"n": None}, {"n": {"$lt": 9}})
    assert not matches({"n": math.nan}, {"n": {"$lt": 9}})
    assert matches({"s": "b"}, {"s": {"$gt": "a", "$lte": "b"}})
    assert matches({"s": b"b"}, {"s": {"$gt": b"a"}})
    assert not matches({"s": b"b"}, {"s": {"$gt": "a"}})
    assert not matches({"n": 3}, {"n": {"$gt": 1, "$lt": "z"}})  # no value is both


def test_maps_that_are_not_operator_maps_match_literally() -> None:
    stored = {"$gt": 1, "x": 2}
    assert matches({"m": stored}, {"m": {"$gt": 1, "x": 2}})
    assert matches({"m": {"$gt": 1}}, {"m": {"$eq": {"$gt": 1}}})
    assert not matches({"m": 5}, {"m": {"$eq": {"$gt": 1}}})
    assert matches({"m": {}}, {"m": {}})
    assert not matches({"m": 5}, {"m": {}})


def test_negations_hold_for_a_missing_field() -> None:
    assert matches({}, {"a": {"$ne": 1}})
    assert matches({}, {"a": {"$nin": [1, 2]}})
    assert not matches({}, {"a": {"$in": [None]}})
    assert matches({"a": 1.0}, {"a": {"$in": [1]}})
    assert not matches({"a": True}, {"a": {"$in": [1]}})


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"a": {"$in": 3}}, "where.a.$in takes a list of values, not a int"),
        ({"a": {"$nin": "ab"}}, "where.a.$nin takes a list"),
        ({"a": {"$gt": None}}, "where.a.$gt: a range compares a number, a string or bytes"),
        ({"a": {"$lte": math.nan}}, "not NaN"),
        ({"a": {"$lt": [1]}}, "not a list"),
        ({"a": {"$gte": True}}, "not a bool"),
        ([("a", 1)], "where must be a map"),
        ({1: 2}, "field names are strings"),
    ],
)
def test_invalid_operators_are_named(where: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("$", r"\$").replace(".", r"\.")):
        compile_where(where)


@given(st.dictionaries(st.sampled_from(FIELDS), st.integers(-3, 3), max_size=2), st.integers())
def test_contradictory_bounds_match_nothing(record: dict[str, int], n: int) -> None:
    assert not matches(record, {"a": {"$gt": n, "$lt": n}})
    assert not matches(record, {"a": {"$gte": n + 1, "$lte": n}})


def test_a_claim_needs_a_where_map() -> None:
    """``where`` is required on CLAIM_RECORD: null is a BadRequest, not "any record"
    (found by the server model test when where parsing moved to stateengine.query)."""
    from stateengine.server.engine import TableEngine

    engine = TableEngine()
    engine.execute({"command": "CREATE_RECORD", "state": "t", "record": {"a": 1}})
    reply = engine.execute({"command": "CLAIM_RECORD", "state": "t", "where": None, "fields": {}})
    assert not reply["ok"] and reply["error"]["type"] == "BadRequest"
    reply = engine.execute({"command": "CLAIM_RECORD", "state": "t", "where": {}, "fields": {}})
    assert reply["ok"] and reply["result"]["id"] == 1


def test_a_malformed_record_is_refused_before_a_precondition() -> None:
    """Found by the engine model test: CREATE_RECORD with a non-map record and a wrong
    expected_version answered VersionConflict; a malformed request is a BadRequest first."""
    from stateengine.server.engine import TableEngine

    reply = TableEngine().execute(
        {"command": "CREATE_RECORD", "state": "t", "record": [1], "expected_version": 1}
    )
    assert not reply["ok"] and reply["error"]["type"] == "BadRequest"


def test_a_malformed_argument_is_refused_before_its_preconditions() -> None:
    """Found by the engine model test: SET_RECORD with a non-map record and an if_match on
    an unknown field answered SchemaError; a malformed request is a BadRequest first."""
    from stateengine.server.engine import TableEngine

    engine = TableEngine()
    engine.execute({"command": "CREATE_RECORD", "state": "t", "record": {"a": 1}})
    reply = engine.execute(
        {"command": "SET_RECORD", "state": "t", "id": 1, "record": None, "if_match": {"zz": 1}}
    )
    assert not reply["ok"] and reply["error"]["type"] == "BadRequest"


def test_passed_deadlines_are_dropped() -> None:
    """One heap of lease deadlines; a completed lease's entry goes when it comes up, so
    a long-running queue does not grow the heap by one entry per leased claim."""
    from stateengine.server.engine import TableEngine

    now = [0.0]
    engine = TableEngine(clock=lambda: now[0])
    engine.apply({"command": "CREATE_STATE", "state": "q", "schema": {"s": "string"}})
    for i in range(1000):
        engine.apply({"command": "CREATE_RECORD", "state": "q", "record": {"s": "p"}})
        engine.apply({"command": "CLAIM_RECORD", "state": "q", "where": {"s": "p"},
                      "fields": {"s": "r"}, "lease_seconds": 1 + i / 1000})  # fmt: skip
        engine.apply({"command": "PATCH_RECORD", "state": "q", "id": i + 1,
                      "fields": {"s": "done"}})  # fmt: skip
    assert len(engine.deadlines) == 1000
    assert engine.next_deadline() is None  # every lease completed: all entries stale
    assert engine.deadlines == []
    assert engine.expire_due(10.0) is False
