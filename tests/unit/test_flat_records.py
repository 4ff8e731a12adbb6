"""The engine's flat-record paths give what its general checks give (issue 17).

``SET_STATE`` judges a load of flat records (scalar values, keys in schema order, the id
first) in C loops over all of them (``TableEngine._flat_set_state``), and a single record
is judged by its key list and value types (``_flat_record``); anything else, and every
error, goes through the general field-by-field checks. Neither path may change a stored
record, a table's schema or counter, a result, or an error's type and message: each case
here runs twice, once with the flat paths switched off (the reference) and once with
them, and the two outcomes must be equal.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from stateengine.limits import MAX_RECORD_BYTES
from stateengine.protocol import INT_MAX, INT_MIN
from stateengine.server import engine as engine_module
from stateengine.server.engine import TableEngine

#: Values a field may be given: every one a flat path may take, and its near misses.
VALUES: list[Any] = [
    None,
    True,
    0,
    -7,
    INT_MAX,
    INT_MIN,
    INT_MAX + 1,
    INT_MIN - 1,
    2.5,
    "ascii",
    "héllo",
    "bad \ud800",
    b"\x00",
    bytearray(b"x"),
    [1],
    {"k": 1},
    (1,),
]
#: Ids: ints at and past the signed 64-bit range, text at and past its length limit.
IDS: list[Any] = [1, 2**63 - 1, 2**63, -(2**63) - 1, "a", "é", "x" * 256, "x" * 1025, 1.0, True]

SCHEMAS: list[dict[str, str] | None] = [
    None,
    {"a": "any", "b": "any"},
    {"a": "string", "b": "integer?"},
    {"a": "float", "b": "boolean"},
    {"a": "bytes?", "b": "any"},
    {"id": "string", "a": "any", "b": "any"},
    {"id": "integer", "a": "any", "b": "any"},
]


def _run(
    requests: list[dict[str, Any]],
    flat: bool,
    monkeypatch: pytest.MonkeyPatch,
    owns: bool = False,
) -> Any:
    """The replies and the final tables of *requests*, with or without the flat paths;
    *owns*: the engine keeps and stamps the request maps as the server's does (each
    request a fresh copy then, as the server decodes each from its body)."""
    with monkeypatch.context() as m:
        if not flat:
            m.setattr(TableEngine, "_flat_set_state", lambda *a, **k: None)
            m.setattr(TableEngine, "_flat_record", lambda *a, **k: None)
            m.setattr(TableEngine, "_flat_patch", lambda *a, **k: None)
            m.setattr(TableEngine, "_flat_patches", lambda *a, **k: None)
            m.setattr(TableEngine, "_flat_merge", staticmethod(lambda *a, **k: None))
        eng = TableEngine(clock=lambda: 1000.0)
        eng.owns_requests = owns
        replies, changes = [], []
        for request in requests:
            replies.append(eng.execute(copy.deepcopy(request) if owns else request))
            # what the server publishes and stores from (a BATCH of patches once noted
            # its changes under a field's name instead of the table's)
            changes.append(
                (
                    sorted(map(repr, eng.changes)),
                    sorted(map(repr, eng.table_changes)),
                    sorted(map(repr, eng.removed)),
                )
            )
            eng.changes, eng.table_changes, eng.removed = {}, set(), set()
        tables = {
            name: (
                [(rid, list(rec.items())) for rid, rec in t.records.items()],
                [(type(v), v) for rec in t.records.values() for v in rec.values()],
                t.info(),
                {rid: (lease.expires, lease.prior) for rid, lease in t.leases.items()},
            )
            for name, t in eng.tables.items()
        }
        # the deadlines queued (a patched record with a TTL: the flat paths queue it too)
        deadlines = sorted((d[0], d[2], repr(d[3]), d[4] is None) for d in eng.deadlines)
    return replies, tables, changes, deadlines


def _same(requests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _run(requests, False, monkeypatch)
    assert _run(requests, True, monkeypatch) == reference
    assert _run(requests, True, monkeypatch, owns=True) == reference


def _setup(schema: dict[str, str] | None) -> list[dict[str, Any]]:
    if schema is None:
        return []
    return [{"command": "CREATE_STATE", "state": "t", "schema": schema}]


def _loads() -> Iterator[tuple[dict[str, str] | None, list[dict[Any, Any]]]]:
    for schema, value in itertools.product(SCHEMAS, VALUES):
        good = [{"id": i, "a": "x", "b": i} for i in (1, 2, 3)]
        yield schema, [*good, {"id": 4, "a": value, "b": 1}]
        yield schema, [{"id": 4, "a": 1.5, "b": value}, *good]
    for schema, rid in itertools.product(SCHEMAS, IDS):
        yield schema, [{"id": 1, "a": 1, "b": 2}, {"id": rid, "a": 1, "b": 2}]
        yield schema, [{"id": rid, "a": 1, "b": 2}]
    for schema in SCHEMAS:
        yield schema, [{"id": 1, "a": 1, "b": 2}, {"id": 1, "a": 1, "b": 3}]  # duplicate
        yield schema, [{"id": 1, "a": 1, "b": 2}, {"id": "1", "a": 1, "b": 3}]  # mixed ids
        yield schema, [{"id": 1, "a": 1, "b": 2}, {"b": 1, "a": 1, "id": 2}]  # key order
        yield schema, [{"a": 1, "b": 2, "id": 3}]  # id last
        yield schema, [{"id": 1, "a": 1}]  # missing field
        yield schema, [{"id": 1, "a": 1, "b": 2, "c": 3}]  # extra field
        yield schema, [{"id": 1, "a": 1, "b": 2, "_version": 3}]  # reserved
        yield schema, [{"a": 1, "b": 2}, {"a": 1, "b": 3}]  # auto ids
        yield schema, [{"id": 9, "a": 1, "b": 2}, {"a": 1, "b": 3}]  # auto after explicit
        yield schema, [{"id": 1, "a": 1, "b": 2}, [1, 2]]  # not a map
        yield schema, [{"id": n, "a": n, "b": n} for n in range(50, 0, -1)]


@pytest.mark.parametrize(("schema", "records"), list(_loads()), ids=repr)
def test_set_state_is_the_same_with_and_without_the_flat_path(
    schema: dict[str, str] | None, records: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records, ids, counters and errors as the general checks make them: a fresh table,
    one with the schema the load proposes, a declared one, and one capped in length."""
    load = {"command": "SET_STATE", "state": "t", "records": records}
    _same([*_setup(schema), load], monkeypatch)
    _same([*_setup(schema), load, {**load, "records": records[::-1]}], monkeypatch)
    capped = [{"command": "CREATE_STATE", "state": "t", "schema": schema, "max_length": 2}]
    _same([*capped, load], monkeypatch)


@pytest.mark.parametrize(("schema", "records"), list(_loads()), ids=repr)
def test_record_writes_are_the_same_with_and_without_the_flat_path(
    schema: dict[str, str] | None, records: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CREATE_RECORD and SET_RECORD of each record, alone and in a BATCH (rolled back
    whole at its first error)."""
    creates = [{"command": "CREATE_RECORD", "state": "t", "record": r} for r in records]
    first = {"id": 1, "a": 1, "b": 2}
    sets = [
        {"command": "SET_RECORD", "state": "t", "id": 1, "record": r}
        for r in records
        if isinstance(r, dict)
    ]
    seed = {"command": "SET_STATE", "state": "t", "records": [first]}
    _same([*_setup(schema), seed, *creates, *sets], monkeypatch)
    _same([*_setup(schema), seed, {"command": "BATCH", "commands": creates}], monkeypatch)
    # ids the seed does not hold: the BATCH of creates that can take its flat path
    other = {"command": "SET_STATE", "state": "t", "records": [{"id": 99, "a": 1, "b": 2}]}
    batch = {"command": "BATCH", "commands": creates}
    _same([*_setup(schema), other, batch, batch], monkeypatch)
    # into a table with no records (without a schema unless declared: the first proposes it)
    empty = {"command": "SET_STATE", "state": "t", "records": []}
    _same([*_setup(schema), empty, batch, batch], monkeypatch)


def _patches() -> Iterator[tuple[dict[str, str] | None, list[dict[str, Any]]]]:
    """Patches of record 1 (and of a claimed record 2), each after a seed of two records."""
    for schema, value in itertools.product(SCHEMAS, VALUES):
        yield schema, [{"a": value}, {"b": value, "a": "x"}, {"a": 1, "b": value}]
    big = "x" * (MAX_RECORD_BYTES - 40)
    for schema in SCHEMAS:
        yield schema, [{}, {"id": 1}, {"id": 2}, {"id": "1"}, {"c": 1}, {"_version": 1}]
        yield schema, [{"_expires": 1.0}, {"a": 1.0, "c": 2}, {"a": big}, {"a": big + "xx"}]
        yield schema, [{1: "x"}, {"a": 1, "id": 1}, {"b": True, "a": b"y"}]


@pytest.mark.parametrize(("schema", "patches"), list(_patches()), ids=lambda v: f"{v!r:.50}")
def test_patches_are_the_same_with_and_without_the_flat_path(
    schema: dict[str, str] | None, patches: list[dict[Any, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATCH_RECORD of each patch: plain (the flat path's case), on a record under a
    lease (a claimed field patched completes it), with a precondition or a lease renewal
    (the general path), and inside a BATCH; CLAIM_RECORD of the same fields, with and
    without a lease and an increment (its patch is judged by the same checks)."""
    seed = {
        "command": "SET_STATE",
        "state": "t",
        "records": [{"id": 1, "a": 1, "b": 2}, {"id": 2, "a": 3, "b": 4}],
    }
    claim = {
        "command": "CLAIM_RECORD",
        "state": "t",
        "where": {"a": 3},
        "fields": {"b": 5},
        "lease_seconds": 30,
    }
    requests: list[dict[str, Any]] = [*_setup(schema), seed, claim]
    for fields in patches:
        for rid in (1, 2, 3):
            requests.append({"command": "PATCH_RECORD", "state": "t", "id": rid, "fields": fields})
        requests.append(
            {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": fields, "req_id": 7}
        )
        requests.append(
            {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": fields, "if_version": 1}
        )
        requests.append(
            {"command": "PATCH_RECORD", "state": "t", "id": 2, "fields": fields, "ttl": 5}
        )
        for extra in ({}, {"lease_seconds": 30}, {"b": {"$inc": 1}}):
            claim_fields = {**fields, **{k: v for k, v in extra.items() if k == "b"}}
            lease = {k: v for k, v in extra.items() if k == "lease_seconds"}
            requests.append(
                {"command": "CLAIM_RECORD", "state": "t", "where": {}, "fields": claim_fields}
                | lease
            )
        requests.append(
            {
                "command": "BATCH",
                "commands": [
                    {"command": "PATCH_RECORD", "state": "t", "id": 2, "fields": fields},
                    {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": fields},
                ],
            }
        )
    _same(requests, monkeypatch)
    _same(
        [*_setup(schema), {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {}}],
        monkeypatch,
    )


def _patch(rid: Any, fields: Any, state: str = "t") -> dict[str, Any]:
    return {"command": "PATCH_RECORD", "state": state, "id": rid, "fields": fields}


@pytest.mark.parametrize("leased", [True, False])  # the loop with leases, or flat_apply
@pytest.mark.parametrize(("schema", "patches"), list(_patches()), ids=lambda v: f"{v!r:.50}")
def test_batches_of_patches_are_the_same_with_and_without_the_flat_path(
    schema: dict[str, str] | None,
    patches: list[dict[Any, Any]],
    leased: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A BATCH of plain patches (``TableEngine._flat_patches``): each patch after a good
    one of the same record, of a record under a lease (rule 4) and of one with a TTL,
    one id patched twice (the second sees the first), an id missing or of another type,
    a sub-command with one more argument or of another table; all rolled back at the
    first error. Without the lease, the table has none: its loop is one C call."""
    seed = {
        "command": "SET_STATE",
        "state": "t",
        "records": [
            {"id": 1, "a": 1, "b": 2},
            {"id": 2, "a": 3, "b": 4},
            {"id": 3, "a": 5, "b": 6},
        ],
    }
    claim = {
        "command": "CLAIM_RECORD",
        "state": "t",
        "where": {"a": 3},
        "fields": {"b": 5},
        "lease_seconds": 30,
    }
    ttl = {"command": "EXPIRE_RECORD", "state": "t", "id": 3, "ttl": 50}
    other = {"command": "SET_STATE", "state": "u", "records": [{"id": 1, "a": 1, "b": 2}]}
    requests: list[dict[str, Any]] = [*_setup(schema), seed, *[claim][:leased], ttl, other]
    good = {"a": 7}
    for fields in patches:
        for commands in (
            [_patch(1, good), _patch(1, fields)],
            [_patch(2, fields), _patch(1, {"b": 8}), _patch(2, {"a": 9})],
            [_patch(3, fields), _patch(3, {"b": 1}), _patch(1, fields)],
            [_patch(1, fields), _patch(4, good)],
            [_patch(1, fields), _patch("1", good)],
            [_patch(1, fields), _patch(2, good) | {"if_version": 1}],
            [_patch(1, fields), _patch(1, good, "u")],
            [_patch(1, fields), _patch(2, [1])],
        ):
            requests.append({"command": "BATCH", "commands": commands})
            requests.append({"command": "LIST_RECORDS", "state": "t"})
    _same(requests, monkeypatch)


def test_the_flat_paths_take_the_bench_records() -> None:
    """The comparisons above mean something only if the flat paths run: they take the
    bench's record shape, in a load and one at a time."""
    eng = TableEngine()
    rows = [{"id": i, "name": f"u{i}", "score": i * 0.5, "ok": True, "b": None} for i in (1, 2)]
    assert eng.execute({"command": "SET_STATE", "state": "t", "records": rows})["ok"]
    table_schema = eng.tables["t"].schema()
    assert table_schema is not None
    assert eng._flat_set_state(rows, table_schema, "any", 7) is not None
    assert eng._flat_record({**rows[0], "id": 3}, table_schema) is not None
    assert eng._flat_record({"name": "x", "score": 1.0, "ok": False, "b": None}, table_schema)
    creates = [
        {"command": "CREATE_RECORD", "state": "t", "record": {**rows[0], "id": i}} for i in (5, 6)
    ]
    table = eng.tables["t"]
    assert eng._flat_patch(table, {"name": "x", "ok": False}, 1, table.records[1]) is not None
    eng._journal = []
    assert eng._flat_creates(creates) is not None
    patches = [_patch(i, {"name": "y", "ok": True}) for i in (1, 2, 1)]
    eng._journal = []
    assert eng._flat_patches(patches) is not None


def test_a_flat_path_without_its_encode_check_fails_the_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: a flat path that trusted its type checks alone (no encode of the
    values) would store an int past 64 bits and a lone surrogate that the general checks
    refuse, and the comparison says so."""
    monkeypatch.setattr(engine_module, "_packb", lambda value: b"")
    for value in (INT_MAX + 1, "bad \ud800"):
        bad = {"id": 2, "a": value, "b": 1}
        seed = {"command": "SET_STATE", "state": "t", "records": [{"id": 1, "a": 1, "b": 1}]}
        for requests in (
            [{**seed, "records": [*seed["records"], bad]}],
            [seed, {"command": "CREATE_RECORD", "state": "t", "record": bad}],
            [seed, {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"a": value}}],
            [
                seed,
                {"command": "BATCH", "commands": [_patch(1, {"b": 2}), _patch(1, {"a": value})]},
            ],
            [seed, {"command": "CLAIM_RECORD", "state": "t", "where": {}, "fields": {"a": value}}],
        ):
            reference = _run(requests, False, monkeypatch)
            assert reference[0][-1]["ok"] is False
            assert _run(requests, True, monkeypatch) != reference


def test_a_refused_flat_load_leaves_the_request_untouched() -> None:
    """With ``owns_requests`` (the server's engine) a flat load is stamped in place, so a
    load the flat path refuses after its checks (an id already taken, for a BATCH of
    creates) must reach the general checks as it came: no ``_version`` in its records.
    The ones it takes are stored as they came, stamped."""
    eng = TableEngine()
    eng.owns_requests = True
    rows = [{"id": i, "a": i} for i in (1, 2)]
    assert eng.execute({"command": "SET_STATE", "state": "t", "records": rows})["ok"]
    table = eng.tables["t"]
    assert all(table.records[r["id"]] is r and r["_version"] == 1 for r in rows)
    schema = table.schema()
    assert schema is not None
    again = [{"id": 3, "a": 3}, {"id": 2, "a": 2}]
    assert eng._flat_set_state(again, schema, "any", 9, table.records.keys()) is None
    assert again == [{"id": 3, "a": 3}, {"id": 2, "a": 2}]
    creates = [{"command": "CREATE_RECORD", "state": "t", "record": r} for r in again]
    reply = eng.execute({"command": "BATCH", "commands": creates})
    assert reply["error"]["type"] == "DuplicateId", reply


def test_a_flat_batch_of_patches_that_drops_a_deadline_fails_the_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control of the deadlines compared above: a BATCH of patches whose C loop
    (``blocks.flat_apply``) lost the TTL of a patched record would leave its expiry
    unqueued, and the comparison says so."""
    apply = engine_module.flat_apply
    monkeypatch.setattr(engine_module, "flat_apply", lambda *a: apply(*a) and [])
    seed = {"command": "SET_STATE", "state": "t", "records": [{"id": 1, "a": 1, "b": 1}]}
    ttl = {"command": "EXPIRE_RECORD", "state": "t", "id": 1, "ttl": 50}
    batch = {"command": "BATCH", "commands": [_patch(1, {"b": 2}), _patch(1, {"a": 3})]}
    with pytest.raises(AssertionError):
        _same([seed, ttl, batch], monkeypatch)
    monkeypatch.setattr(engine_module, "flat_apply", apply)
    _same([seed, ttl, batch], monkeypatch)
