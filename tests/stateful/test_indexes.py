"""An indexed table answers exactly as a scan does (README "Indexes").

Two engines receive the same requests: one whose table declares indexes, one without.
Every reply must be equal (the info's ``indexes`` aside), across claims and expiring
leases, failed ``BATCH``es (rolled back), ``SET_STATE`` and a restart from a change set;
after every step the index entries also equal a fresh build from the records.
``STALE_INDEX`` (a fault switch) makes updates skip the index: the machine must catch it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from stateengine.server import indexes as indexes_module
from stateengine.server.engine import TableEngine
from stateengine.server.indexes import TableIndexes

SCHEMA = {"a": "integer", "b": "string?", "c": "any"}
INDEXES: list[Any] = ["a", ["b", "a"], "c", ["a", "b"], ["b", "c", "a"]]
IDS = st.integers(1, 12)
A = st.integers(-2, 4)
B = st.none() | st.sampled_from(["", "p", "q", "r"])
C = st.none() | st.booleans() | st.integers(0, 3) | st.sampled_from([1.0, 2.5, "p", b"p"])
C = C | st.just(math.nan)
VALUES = {"a": A, "b": B, "c": C}
RANGED = {"a": A, "b": st.sampled_from(["", "p", "q", "r"]), "c": st.integers(0, 3)}


@st.composite
def conditions(draw: st.DrawFn, name: str) -> Any:
    kind = draw(st.sampled_from(["value", "eq", "ne", "in", "nin", "range", "range2"]))
    if kind == "value":
        return draw(VALUES[name])
    if kind in ("eq", "ne"):
        return {f"${kind}": draw(VALUES[name])}
    if kind in ("in", "nin"):
        return {f"${kind}": draw(st.lists(VALUES[name], max_size=3))}
    ops = draw(st.lists(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), min_size=1, max_size=2))
    return {op: draw(RANGED[name]) for op in ops}


@st.composite
def wheres(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
    return {n: draw(conditions(n)) for n in names}


ORDER = st.none() | st.lists(
    st.sampled_from(["a", "-a", "b", "-b", "c", "-c", "id", "-id"]), min_size=1, max_size=3
).map(lambda keys: keys if len(keys) > 1 else keys[0])


def record() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"a": A, "b": B, "c": C})


def same(x: Any, y: Any) -> bool:
    """Equal replies, NaN equal to itself (a stored NaN reads back as NaN)."""
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(map(same, x, y))
    return type(x) is type(y) and x == y


class IndexedVersusScan(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.indexed = TableEngine(clock=lambda: self.now)
        self.plain = TableEngine(clock=lambda: self.now)
        self.send({"command": "CREATE_STATE", "state": "t", "schema": SCHEMA}, INDEXES)

    def send(self, request: dict[str, Any], indexes: Any = None) -> None:
        with_ix = dict(request, indexes=indexes) if indexes is not None else request
        got = self.indexed.execute(with_ix)
        want = self.plain.execute(request)
        for reply in (got, want):
            if reply.get("ok") and isinstance(reply.get("result"), dict):
                reply["result"].pop("indexes", None)
        assert same(got, want), (request, got, want)

    @rule(rid=IDS, rec=record())
    def create(self, rid: int, rec: dict[str, Any]) -> None:
        self.send({"command": "CREATE_RECORD", "state": "t", "record": {"id": rid, **rec}})

    @rule(rid=IDS, rec=record())
    def replace(self, rid: int, rec: dict[str, Any]) -> None:
        self.send({"command": "SET_RECORD", "state": "t", "id": rid, "record": rec})

    @rule(rid=IDS, name=st.sampled_from(["a", "b", "c"]), data=st.data())
    def patch(self, rid: int, name: str, data: st.DataObject) -> None:
        fields = {name: data.draw(VALUES[name])}
        self.send({"command": "PATCH_RECORD", "state": "t", "id": rid, "fields": fields})

    @rule(rid=IDS)
    def delete(self, rid: int) -> None:
        self.send({"command": "DELETE_RECORD", "state": "t", "id": rid})

    @rule(rid=IDS)
    def increment(self, rid: int) -> None:
        self.send({"command": "INCREMENT", "state": "t", "id": rid, "field": "a"})

    @rule(where=wheres(), order_by=ORDER, offset=st.none() | st.integers(0, 3),
          limit=st.none() | st.integers(0, 4))  # fmt: skip
    def list_records(self, where: Any, order_by: Any, offset: Any, limit: Any) -> None:
        request = {"command": "LIST_RECORDS", "state": "t", "where": where}
        for key, value in (("order_by", order_by), ("offset", offset), ("limit", limit)):
            if value is not None:
                request[key] = value
        self.send(request)

    @rule(where=wheres(), order_by=ORDER, b=B, lease=st.none() | st.sampled_from([1, 5, 30]))
    def claim(self, where: Any, order_by: Any, b: Any, lease: Any) -> None:
        request = {"command": "CLAIM_RECORD", "state": "t", "where": where, "fields": {"b": b}}
        if order_by is not None:
            request["order_by"] = order_by
        if lease is not None:
            request["lease_seconds"] = lease
        self.send(request)

    @rule(order_by=st.sampled_from([None, "a", "-a", ["a", "id"]]), lease=st.sampled_from([1, 5]))
    def claim_pending(self, order_by: Any, lease: int) -> None:
        """The task-queue claim: pending → running under a lease (expired ones are put back
        by the expiry commit of :meth:`wait`)."""
        request = {
            "command": "CLAIM_RECORD",
            "state": "t",
            "where": {"b": "p"},
            "fields": {"b": "q"},
            "lease_seconds": lease,
        }
        if order_by is not None:
            request["order_by"] = order_by
        self.send(request)

    @rule(seconds=st.sampled_from([0.5, 2, 10, 60]))
    def wait(self, seconds: float) -> None:
        """Time passes: both engines commit the same expiries (leases put back through
        the index, TTL'd records deleted from it)."""
        self.now += seconds
        assert self.indexed.expire_due(self.now) == self.plain.expire_due(self.now)
        assert self.indexed.expired == self.plain.expired
        assert self.indexed.seq == self.plain.seq

    @rule(rid=IDS, ttl=st.none() | st.sampled_from([1, 5, 30]))
    def expire(self, rid: int, ttl: Any) -> None:
        self.send({"command": "EXPIRE_RECORD", "state": "t", "id": rid, "ttl": ttl})

    @rule(rids=st.lists(IDS, max_size=3), recs=st.lists(record(), min_size=3, max_size=3),
          fail=st.booleans())  # fmt: skip
    def batch(self, rids: list[int], recs: list[dict[str, Any]], fail: bool) -> None:
        commands: list[dict[str, Any]] = []
        for rid, rec in zip(rids, recs, strict=False):
            commands.append({"command": "DELETE_RECORD", "state": "t", "id": rid})
            commands.append({"command": "CREATE_RECORD", "state": "t", "record": rec})
            commands.append({"command": "PATCH_RECORD", "state": "t", "id": rid, "fields": rec})
        if fail:
            commands.append({"command": "GET_RECORD", "state": "t", "id": 999})
        self.send({"command": "BATCH", "commands": commands})

    @rule(recs=st.lists(record(), max_size=6))
    def set_state(self, recs: list[dict[str, Any]]) -> None:
        self.send({"command": "SET_STATE", "state": "t", "records": recs})

    @rule()
    def restart(self) -> None:
        """Rebuild the indexed engine from its own change set, as recovery does."""
        fresh = TableEngine(clock=lambda: self.now)
        fresh.apply_change_set(self.indexed.full_change_set())
        self.indexed = fresh

    @invariant()
    def index_equals_a_fresh_build(self) -> None:
        table = self.indexed.tables["t"]
        if table.ix is None:
            return
        fresh = TableIndexes(table.index_defs, table.records)
        for fields, entries in table.ix.lists.items():
            kept = [(*e[:-2], e[-1]) for e in entries]
            built = [(*e[:-2], e[-1]) for e in fresh.lists[fields]]
            assert same(kept, built), fields
        positions = table.ix.positions
        assert sorted(positions, key=positions.__getitem__) == list(table.records)


IndexedVersusScan.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_indexed_queries_equal_scans = IndexedVersusScan.TestCase


@pytest.mark.slow
def test_indexed_queries_equal_scans_long(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = IndexedVersusScan.TestCase
    long = settings(machine.settings, max_examples=2000, stateful_step_count=60)
    monkeypatch.setattr(machine, "settings", long)
    machine("runTest").runTest()


def test_a_stale_index_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: updates that forget the index must fail the machine above."""

    def stale_put(self: TableIndexes, rid: Any, old: Any, new: Any) -> None:
        if old is None:
            original_put(self, rid, old, new)

    original_put = indexes_module.TableIndexes.put
    monkeypatch.setattr(indexes_module.TableIndexes, "put", stale_put)
    control = IndexedVersusScan.TestCase
    monkeypatch.setattr(
        control,
        "settings",
        settings(control.settings, phases=[Phase.generate], max_examples=200, database=None),
    )
    with pytest.raises(AssertionError):
        control("runTest").runTest()


def test_an_equal_value_of_another_type_is_written_to_the_index() -> None:
    """1 and 1.0 share a sort key, but the entry holds the record as it stands (what the
    machine's fresh-build invariant compares, types included); a patch of other fields
    leaves the entries alone."""
    eng = TableEngine()
    eng.execute({"command": "CREATE_STATE", "state": "t", "schema": SCHEMA, "indexes": INDEXES})
    eng.execute({"command": "CREATE_RECORD", "state": "t", "record": {"a": 1, "b": "p", "c": 1}})
    assert eng.execute({"command": "LIST_RECORDS", "state": "t", "where": {"c": 1}})["ok"]
    ix = eng.tables["t"].ix
    assert ix is not None
    kept = {fields: list(entries) for fields, entries in ix.lists.items()}
    eng.execute({"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"b": "q"}})
    assert list(ix.lists[("c",)]) == kept[("c",)] and list(ix.lists[("a",)]) == kept[("a",)]
    eng.execute({"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"c": 1.0}})
    (entry,) = ix.lists[("c",)]
    assert type(entry[0][-1]) is float, entry
