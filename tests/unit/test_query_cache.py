"""A table's cache of compiled queries (``TableEngine._query``) never changes an answer.

``LIST_RECORDS`` and ``CLAIM_RECORD`` keep the compiled ``where``, the ``order_by`` keys
and the index plan per table, keyed by the ``where`` values and their types; an entry
holds only while the table has the schema and the indexes it was made for. A new or
dropped index, an added or dropped field, a rolled-back ``ALTER_STATE`` and a dropped
and re-created table must each make the next query compile afresh. The fault switch
``stale_queries`` (``STATEENGINE_QUERY_FAULTS``) keeps stale entries: every test here has
a control that shows it then fails.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from stateengine.server import engine as engine_module
from stateengine.server.engine import QUERY_CACHE_SIZE, TableEngine


def ok(engine: TableEngine, request: dict[str, Any]) -> Any:
    reply = engine.execute(request)
    assert reply["ok"], reply
    return reply["result"]


def error(engine: TableEngine, request: dict[str, Any]) -> str:
    reply = engine.execute(request)
    assert not reply["ok"], reply
    return str(reply["error"]["type"])


def stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "FAULTS", frozenset({"stale_queries"}))


def tasks(indexes: list[Any] | None = None) -> TableEngine:
    eng = TableEngine()
    request: dict[str, Any] = {
        "command": "CREATE_STATE",
        "state": "t",
        "schema": {"status": "string", "tag": "any", "n": "integer"},
    }
    if indexes is not None:
        request["indexes"] = indexes
    ok(eng, request)
    for i in range(6):
        record = {"status": "pending", "tag": i % 2, "n": i}
        ok(eng, {"command": "CREATE_RECORD", "state": "t", "record": record})
    return eng


def claim(where: dict[str, Any], **extra: Any) -> dict[str, Any]:
    fields = {"status": "running"}
    return {"command": "CLAIM_RECORD", "state": "t", "where": where, "fields": fields, **extra}


def plan_of(eng: TableEngine, where: dict[str, Any]) -> Any:
    table = eng.tables["t"]
    return eng._query(table, {"command": "LIST_RECORDS", "state": "t", "where": where})[3]


# --- the invalidations, one by one -------------------------------------------------------


def new_index_is_used(eng: TableEngine) -> None:
    where = {"status": "pending"}
    assert plan_of(eng, where) is None  # no index yet: a scan (and now cached)
    ok(eng, {"command": "ALTER_STATE", "state": "t", "add_indexes": ["status"]})
    plan = plan_of(eng, where)
    assert plan is not None and plan.fields == ("status",), plan
    assert ok(eng, claim(where))["id"] == 1


def test_a_new_index_replans() -> None:
    new_index_is_used(tasks())


def test_a_new_index_replans_control(monkeypatch: pytest.MonkeyPatch) -> None:
    stale(monkeypatch)
    with pytest.raises(AssertionError):
        new_index_is_used(tasks())


def dropped_index_is_not_used(eng: TableEngine) -> None:
    where = {"status": "pending"}
    assert ok(eng, claim(where))["id"] == 1  # through the index, cached
    ok(eng, {"command": "ALTER_STATE", "state": "t", "drop_indexes": ["status"]})
    assert ok(eng, claim(where))["id"] == 2
    assert plan_of(eng, where) is None


def test_a_dropped_index_replans() -> None:
    dropped_index_is_not_used(tasks(["status"]))


def test_a_dropped_index_replans_control(monkeypatch: pytest.MonkeyPatch) -> None:
    stale(monkeypatch)
    with pytest.raises(AssertionError):
        dropped_index_is_not_used(tasks(["status"]))


def dropped_field_is_unknown(eng: TableEngine) -> None:
    where = {"tag": 1}
    assert ok(eng, claim(where))["id"] == 2
    drop: dict[str, Any] = {"command": "ALTER_STATE", "state": "t", "drop": ["tag"]}
    if eng.tables["t"].index_defs:
        drop["drop_indexes"] = [list(f) for f in eng.tables["t"].index_defs]
    ok(eng, drop)
    assert error(eng, claim(where)) == "SchemaError"
    assert error(eng, {"command": "LIST_RECORDS", "state": "t", "where": where}) == "SchemaError"


def test_a_schema_change_rechecks_the_fields() -> None:
    dropped_field_is_unknown(tasks())
    dropped_field_is_unknown(tasks(["tag"]))


def test_a_schema_change_rechecks_the_fields_control(monkeypatch: pytest.MonkeyPatch) -> None:
    stale(monkeypatch)
    with pytest.raises(AssertionError):
        dropped_field_is_unknown(tasks())


def rolled_back_field_is_unknown(eng: TableEngine) -> None:
    """A query cached inside a BATCH that added a field, then failed: the field is gone."""
    where = {"extra": 0}
    add = {"command": "ALTER_STATE", "state": "t", "add": {"extra": {"default": 0}}}
    missing = {"command": "GET_RECORD", "state": "t", "id": 999}
    reply = eng.execute({"command": "BATCH", "commands": [add, claim(where), missing]})
    assert reply["error"]["type"] == "RecordNotFound", reply
    assert error(eng, claim(where)) == "SchemaError"


def test_a_rolled_back_schema_change_rechecks_the_fields() -> None:
    rolled_back_field_is_unknown(tasks())


def test_a_rolled_back_schema_change_control(monkeypatch: pytest.MonkeyPatch) -> None:
    stale(monkeypatch)
    with pytest.raises(AssertionError):
        rolled_back_field_is_unknown(tasks())


def recreated_table_is_rechecked(eng: TableEngine, carry: bool) -> None:
    """*carry*: hand the dropped table's cache to the new one (what a cache kept by table
    name would do); the schema check must still refuse the stale entries."""
    where = {"tag": 1}
    assert ok(eng, claim(where))["id"] == 2
    old = eng.tables["t"].queries
    ok(eng, {"command": "DELETE_STATE", "state": "t"})
    ok(eng, {"command": "CREATE_STATE", "state": "t", "schema": {"status": "string"}})
    if carry:
        eng.tables["t"].queries = old
    ok(eng, {"command": "CREATE_RECORD", "state": "t", "record": {"status": "pending"}})
    assert error(eng, claim(where)) == "SchemaError"


def test_a_recreated_table_starts_afresh() -> None:
    recreated_table_is_rechecked(tasks(), carry=False)
    recreated_table_is_rechecked(tasks(), carry=True)


def test_a_recreated_table_control(monkeypatch: pytest.MonkeyPatch) -> None:
    stale(monkeypatch)
    with pytest.raises(AssertionError):
        recreated_table_is_rechecked(tasks(), carry=True)


def later_change_is_ignored(eng: TableEngine) -> None:
    """The cache outlives the request: a caller that reuses or changes the maps it sent
    must not change what the cached query matches."""
    ok(
        eng,
        {
            "command": "CREATE_RECORD",
            "state": "t",
            "record": {"status": "x", "tag": {"k": 1}, "n": 9},
        },
    )
    stored = {"tag": {"k": 1}}
    request = {"command": "LIST_RECORDS", "state": "t", "where": stored}
    assert [r["id"] for r in ok(eng, request)] == [7]
    stored["tag"]["k"] = 2  # the caller's own map, after the request
    again = {"command": "LIST_RECORDS", "state": "t", "where": {"tag": {"k": 1}}}
    assert [r["id"] for r in ok(eng, again)] == [7]


def test_a_request_changed_afterwards_changes_nothing() -> None:
    later_change_is_ignored(tasks())


def test_a_request_changed_afterwards_control(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: compiled from the request's own objects (no checked copies), it fails."""
    monkeypatch.setattr(engine_module, "check_value", lambda value, where, depth=0: value)
    with pytest.raises(AssertionError):
        later_change_is_ignored(tasks())


# --- the key -------------------------------------------------------------------------------


def test_equal_values_of_other_types_are_other_queries() -> None:
    """``1``, ``1.0`` and ``True`` are three keys: ``True`` does not match ``1``."""
    eng = TableEngine()
    ok(eng, {"command": "CREATE_STATE", "state": "t", "schema": {"v": "any"}, "indexes": ["v"]})
    for v in (1, True, 1.0, "1"):
        ok(eng, {"command": "CREATE_RECORD", "state": "t", "record": {"v": v}})
    listed = {"command": "LIST_RECORDS", "state": "t"}
    for v, ids in ((1, [1, 3]), (True, [2]), (1.0, [1, 3]), ("1", [4]), (1, [1, 3])):
        got = ok(eng, {**listed, "where": {"v": v}})
        assert [r["id"] for r in got] == ids, v
        got = ok(eng, {**listed, "where": {"v": {"$in": [v]}}})  # a list: never cached
        assert [r["id"] for r in got] == ids, v
        got = ok(eng, {**listed, "where": {"v": {"$eq": v}}})
        assert [r["id"] for r in got] == ids, v
    assert len(eng.tables["t"].queries) == 8  # 4 values, plain and $eq; $in uncached


def test_the_cache_is_bounded() -> None:
    eng = tasks()
    for i in range(3 * QUERY_CACHE_SIZE):
        ok(eng, {"command": "LIST_RECORDS", "state": "t", "where": {"n": i}})
        assert len(eng.tables["t"].queries) <= QUERY_CACHE_SIZE


def test_a_refused_query_is_not_cached() -> None:
    eng = tasks()
    for _ in range(2):
        assert error(eng, claim({"nope": 1})) == "SchemaError"
        assert error(eng, claim({"n": {"$gt": None}})) == "BadRequest"
        assert error(eng, claim({"n": 1}, order_by="nope")) == "SchemaError"
    assert not eng.tables["t"].queries


# --- against a cache-less engine -----------------------------------------------------------

VALUE = st.sampled_from([0, 1, 1.0, True, False, None, "1", "p", 2.5])
NAME = st.sampled_from(["a", "b", "x"])
OP = st.sampled_from(["$eq", "$ne", "$gt", "$lte"])
# A map, matched literally (1, 1.0 and True inside it: maps equal as where compares them).
STORED = VALUE | st.fixed_dictionaries({"k": st.sampled_from([1, 1.0, True])})
COND = STORED | st.dictionaries(OP, VALUE, min_size=1, max_size=2) | st.lists(VALUE, max_size=2)
WHERE = st.dictionaries(NAME, COND, max_size=2)
ORDER = st.none() | st.sampled_from(["a", "-b", "x", ["a", "b"], ["b", "-a"]])
INDEX = st.sampled_from([["a"], ["b"], ["a", "b"], ["x"], ["b", "x"]])


def scribble(value: Any) -> None:
    """Change every map and list inside a sent request, as a caller reusing them may."""
    if isinstance(value, dict):
        for item in list(value.values()):
            scribble(item)
        value["__scribbled__"] = True
    elif isinstance(value, list):
        for item in value:
            scribble(item)
        value.append("__scribbled__")


class CachedVersusFresh(RuleBasedStateMachine):
    """Two engines get the same requests; one forgets every compiled query after each.
    Every request is scribbled on once both have answered it."""

    def __init__(self) -> None:
        super().__init__()
        self.cached = TableEngine()
        self.fresh = TableEngine()
        self.last_query: dict[str, Any] | None = None
        self.send({"command": "CREATE_STATE", "state": "t", "schema": {"a": "any", "b": "any"}})

    def send(self, request: dict[str, Any]) -> None:
        got = self.cached.execute(request)
        want = self.fresh.execute(request)
        for table in self.fresh.tables.values():
            table.queries = {}
        assert repr(got) == repr(want), (request, got, want)  # repr: True is not 1
        scribble(request)  # the caller's objects are its own again

    @rule(a=STORED, b=STORED)
    def create(self, a: Any, b: Any) -> None:
        self.send({"command": "CREATE_RECORD", "state": "t", "record": {"a": a, "b": b}})

    @rule(where=WHERE, order_by=ORDER)
    def list_records(self, where: dict[str, Any], order_by: Any) -> None:
        request = {"command": "LIST_RECORDS", "state": "t", "where": where, "order_by": order_by}
        self.last_query = copy.deepcopy(request)
        self.send(request)

    @rule()
    def list_again(self) -> None:
        """The last list once more (a cache hit), from fresh objects of the same values."""
        if self.last_query is not None:
            self.send(copy.deepcopy(self.last_query))

    @rule(where=WHERE, order_by=ORDER, b=VALUE)
    def claim(self, where: dict[str, Any], order_by: Any, b: Any) -> None:
        request = {"command": "CLAIM_RECORD", "state": "t", "where": where, "fields": {"b": b}}
        self.send({**request, "order_by": order_by})

    @rule(index=INDEX)
    def add_index(self, index: list[str]) -> None:
        self.send({"command": "ALTER_STATE", "state": "t", "add_indexes": [index]})

    @rule(index=INDEX)
    def drop_index(self, index: list[str]) -> None:
        self.send({"command": "ALTER_STATE", "state": "t", "drop_indexes": [index]})

    @rule(default=VALUE)
    def add_field(self, default: Any) -> None:
        add = {"x": {"default": default}}
        self.send({"command": "ALTER_STATE", "state": "t", "add": add})

    @rule(with_index=st.booleans())
    def drop_field(self, with_index: bool) -> None:
        request: dict[str, Any] = {"command": "ALTER_STATE", "state": "t", "drop": ["x"]}
        if with_index:
            request["drop_indexes"] = [["x"]]
        self.send(request)

    @rule(where=WHERE, default=VALUE)
    def failed_batch(self, where: dict[str, Any], default: Any) -> None:
        """Alter, query (cached under the new schema), then fail: all rolled back."""
        add = {"command": "ALTER_STATE", "state": "t", "add": {"y": {"default": default}}}
        query = {"command": "LIST_RECORDS", "state": "t", "where": {**where, "y": default}}
        missing = {"command": "GET_RECORD", "state": "t", "id": 10**6}
        self.send({"command": "BATCH", "commands": [add, query, missing]})
        self.send({"command": "LIST_RECORDS", "state": "t", "where": {"y": default}})

    @rule(with_x=st.booleans())
    def recreate(self, with_x: bool) -> None:
        schema = {"a": "any", "b": "any", **({"x": "any"} if with_x else {})}
        self.send({"command": "DELETE_STATE", "state": "t"})
        self.send({"command": "CREATE_STATE", "state": "t", "schema": schema})


CachedVersusFresh.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cached_queries_answer_as_fresh_ones = CachedVersusFresh.TestCase


@pytest.mark.slow
def test_cached_queries_answer_as_fresh_ones_long(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = CachedVersusFresh.TestCase
    long = settings(machine.settings, max_examples=1500, stateful_step_count=50)
    monkeypatch.setattr(machine, "settings", long)
    machine("runTest").runTest()


def test_cached_versus_fresh_control(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: with stale entries kept, the machine above finds a difference."""
    stale(monkeypatch)
    control = CachedVersusFresh.TestCase
    monkeypatch.setattr(
        control,
        "settings",
        settings(  # derandomized: the same examples every run, so the control cannot miss by luck
            control.settings,
            phases=[Phase.generate],
            max_examples=300,
            database=None,
            derandomize=True,
        ),
    )
    with pytest.raises(AssertionError):
        control("runTest").runTest()
