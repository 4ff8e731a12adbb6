"""The limits of stateengine.limits, enforced at the engine's front door (issue 14 items 1-3).

Whatever the engine acknowledges, every layer behind it must store: so a table name, an
id or a piece of text that some layer could not carry is refused with ``BadRequest``
(state unchanged), and what is allowed fits every layer with room to spare.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stateengine
from stateengine import limits, protocol
from stateengine.server import server

SURROGATE = "\ud800"


@pytest.fixture
def eng() -> stateengine.Engine:
    e = stateengine.Engine()
    e.create_state("t", schema={"name": "string", "tags": "any"})
    e.create_record("t", {"name": "a", "tags": None})
    return e


def digest(eng: stateengine.Engine) -> Any:
    return [
        (name, eng.get_state_info(name), eng.list_records(name)) for name in eng.list_states()
    ], eng.seq


def refused(eng: stateengine.Engine, request: dict[str, Any], wanted: str = "BadRequest") -> str:
    before = digest(eng)
    reply = eng.execute(request)
    assert reply["ok"] is False, (request, reply)
    assert reply["error"]["type"] == wanted, reply
    assert digest(eng) == before
    # The error itself must be encodable, in both formats (no surrogate echoed raw).
    msgpack.packb(reply, use_bin_type=True)
    json.dumps(reply)
    return str(reply["error"]["message"])


# --- one definition, shared -------------------------------------------------------------


def test_one_request_limit_everywhere() -> None:
    assert limits.MAX_REQUEST_BYTES == 16 * 1024 * 1024
    assert protocol.MAX_REQUEST_BYTES is limits.MAX_REQUEST_BYTES
    assert server.DEFAULT_MAX_REQUEST == limits.MAX_REQUEST_BYTES


def test_ids_follow_the_arena_rule() -> None:
    from stateengine.shm import writer

    assert (limits.ID_MIN, limits.ID_MAX) == (-(2**63), 2**63 - 1)
    assert writer.check_id(limits.ID_MAX) == limits.ID_MAX
    with pytest.raises(ValueError):
        writer.check_id(limits.ID_MAX + 1)


def test_a_name_and_an_id_fit_every_store() -> None:
    """The largest key the engine allows fits PostgreSQL's btree entry (primary key
    ``(tbl, rid)``: text + msgpack of the id, with headers) and the arena's 16-bit key."""
    name = "é" * (limits.MAX_NAME_BYTES // 2)
    rid = "é" * (limits.MAX_ID_BYTES // 2)
    assert limits.check_table_name(name) == name and limits.check_id(rid) == rid
    packed = msgpack.packb([name, rid], use_bin_type=True)
    assert len(packed) + 32 < limits.PG_INDEX_ENTRY_BYTES < limits.ARENA_KEY_BYTES


@pytest.mark.parametrize(
    "name",
    ["", "\x00meta", "a\x00b", "x" * 1025, "é" * 513, SURROGATE, "ok" + SURROGATE, 5, None],
)
def test_check_table_name_refuses(name: Any) -> None:
    with pytest.raises(stateengine.errors.BadRequest):
        limits.check_table_name(name)


@pytest.mark.parametrize("name", ["t", "x" * 1024, "é" * 512, "a/b", "ü-😀", " "])
def test_check_table_name_takes(name: str) -> None:
    assert limits.check_table_name(name) == name


@pytest.mark.parametrize(
    "rid", [2**63, 2**64 - 1, -(2**63) - 1, "x" * 1025, "é" * 513, SURROGATE, True, 1.0]
)
def test_check_id_refuses(rid: Any) -> None:
    with pytest.raises(stateengine.errors.BadRequest):
        limits.check_id(rid)


@pytest.mark.parametrize("rid", [0, 2**63 - 1, -(2**63), "", "x" * 1024, "a\x00b", "é" * 512])
def test_check_id_takes(rid: Any) -> None:
    assert limits.check_id(rid) == rid


# --- item 1: what no layer can store is refused --------------------------------------------


@pytest.mark.parametrize("name", ["\x00meta", "\x00", "a\x00", "n" * 70_000, "é" * 600, "x" * 4000])
def test_table_names_no_layer_can_store(eng: stateengine.Engine, name: str) -> None:
    for request in (
        {"command": "CREATE_STATE", "state": name},
        {"command": "CREATE_RECORD", "state": name, "record": {"a": 1}},
        {"command": "SET_STATE", "state": name, "records": [{"a": 1}]},
        {"command": "BATCH", "commands": [{"command": "CREATE_STATE", "state": name}]},
    ):
        message = refused(eng, request)
        assert "state" in message


@pytest.mark.parametrize("rid", [2**63, 2**64 - 1, "i" * 70_000, "é" * 600])
def test_ids_no_layer_can_store(eng: stateengine.Engine, rid: Any) -> None:
    refused(
        eng,
        {"command": "CREATE_RECORD", "state": "t", "record": {"id": rid, "name": "b", "tags": 1}},
    )
    refused(
        eng,
        {"command": "SET_STATE", "state": "t", "records": [{"id": rid, "name": "b", "tags": 1}]},
    )
    refused(eng, {"command": "GET_RECORD", "state": "t", "id": rid})


def test_the_largest_allowed_keys_are_taken(eng: stateengine.Engine) -> None:
    name = "n" * limits.MAX_NAME_BYTES
    eng.create_state(name)
    for rid in (limits.ID_MAX, limits.ID_MIN, "i" * limits.MAX_ID_BYTES, "nul\x00inside"):
        eng.create_record(name, {"id": rid, "v": 1})
    assert eng.get_record(name, limits.ID_MAX)["v"] == 1


def test_no_auto_id_past_the_id_range(eng: stateengine.Engine) -> None:
    eng.create_record("t", {"id": limits.ID_MAX, "name": "last", "tags": None})
    refused(
        eng,
        {"command": "CREATE_RECORD", "state": "t", "record": {"name": "n", "tags": 1}},
        "CapacityError",
    )
    refused(
        eng,
        {
            "command": "SET_STATE",
            "state": "t",
            "records": [{"id": limits.ID_MAX, "name": "x", "tags": 1}, {"name": "y", "tags": 2}],
        },
        "CapacityError",
    )


# --- item 2: lone surrogates are BadRequest, wherever they are ----------------------------


@pytest.mark.parametrize(
    "request_",
    [
        {"command": "CREATE_STATE", "state": SURROGATE},
        {"command": "CREATE_STATE", "state": "s", "schema": {SURROGATE: "string"}},
        {"command": "CREATE_RECORD", "state": "t", "record": {"name": SURROGATE, "tags": 1}},
        {
            "command": "CREATE_RECORD",
            "state": "t",
            "record": {"name": "x", "tags": [{"k": "a\udfff"}]},
        },
        {"command": "CREATE_RECORD", "state": "t", "record": {"name": "x", "tags": {SURROGATE: 1}}},
        {"command": "CREATE_RECORD", "state": "new", "record": {SURROGATE: 1}},
        {
            "command": "CREATE_RECORD",
            "state": "t",
            "record": {"id": SURROGATE, "name": "x", "tags": 1},
        },
        {"command": "CREATE_RECORD", "state": SURROGATE, "record": {"a": 1}},
        {"command": "SET_STATE", "state": "t", "records": [{"name": SURROGATE, "tags": 1}]},
        {"command": "SET_RECORD", "state": "t", "id": 1, "record": {"name": SURROGATE, "tags": 1}},
        {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"tags": SURROGATE}},
        {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {SURROGATE: 1}},
        {"command": "ALTER_STATE", "state": "t", "add": {SURROGATE: {"type": "any"}}},
        {"command": "ALTER_STATE", "state": "t", "add": {"z": {"default": SURROGATE}}},
        {"command": "CLAIM_RECORD", "state": "t", "where": {}, "fields": {"name": SURROGATE}},
        {"command": "LIST_RECORDS", "state": "t", "where": {"name": SURROGATE}},
        {"command": "BATCH", "commands": [{"command": "CREATE_STATE", "state": SURROGATE}]},
    ],
)
def test_lone_surrogates_are_bad_requests(
    eng: stateengine.Engine, request_: dict[str, Any]
) -> None:
    message = refused(eng, request_)
    assert "surrogate" in message or "state" in message


def test_a_json_body_with_a_surrogate_escape_is_refused(eng: stateengine.Engine) -> None:
    """The JSON text ``"\\ud800"`` decodes to a lone surrogate (json.loads allows it)."""
    for body in (
        b'{"command": "CREATE_RECORD", "state": "t", "record": {"name": "\\ud800", "tags": 1}}',
        b'{"command": "CREATE_STATE", "state": "\\ud800x"}',
        b'{"command": "CREATE_RECORD", "state": "t", "record": {"name": "x", "\\udc00": 1}}',
    ):
        request, as_json = protocol.decode_request(body)
        assert as_json
        refused(eng, request)


def test_valid_non_ascii_text_is_taken(eng: stateengine.Engine) -> None:
    eng.create_state("ü-😀")
    rec = eng.create_record("ü-😀", {"id": "ключ", "naïve": "日本語 😀", "m": {"ß": ["é"]}})
    assert eng.get_record("ü-😀", "ключ") == rec


# --- item 3: order_by is bounded and sorts once --------------------------------------------


def reference_order(records: list[Any], keys: list[tuple[str, bool]]) -> list[Any]:
    """The order before issue 14: one stable pass per key, last key first."""
    out = list(records)
    for name, descending in reversed(keys):
        out.sort(key=lambda r: protocol.sort_key(r.get(name)), reverse=descending)
    return out


sortable = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([1.0, -0.0, 0.0, 2.5, float("nan"), float("inf")]),
    st.sampled_from(["", "a", "b", "é"]),
    st.sampled_from([b"", b"a"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["k", "l"]), st.integers(0, 1), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(
        st.fixed_dictionaries({}, optional={f: sortable for f in "abcd"}), max_size=30
    ),
    keys=st.lists(st.tuples(st.sampled_from("abcde"), st.booleans()), max_size=8),
)
def test_one_sort_orders_as_one_pass_per_key(
    records: list[dict[str, Any]], keys: list[tuple[str, bool]]
) -> None:
    tagged = [{**r, "_i": i} for i, r in enumerate(records)]
    want = [r["_i"] for r in reference_order(tagged, keys)]
    assert [r["_i"] for r in protocol.order_records(list(tagged), keys)] == want
    pairs = [(r, r["_i"]) for r in tagged]
    got = protocol.order_records(pairs, keys, get=lambda item: item[0])
    assert [i for _, i in got] == want


def test_order_by_is_bounded(eng: stateengine.Engine) -> None:
    eng.alter_state("t", add={f"f{i}": {"default": i % 3} for i in range(40)})
    fields = [f"f{i}" if i % 2 else f"-f{i}" for i in range(40)]
    assert len(eng.list_records("t", order_by=fields[: limits.MAX_ORDER_KEYS])) == 1
    for request in (
        {"command": "LIST_RECORDS", "state": "t", "order_by": fields[: limits.MAX_ORDER_KEYS + 1]},
        {"command": "CLAIM_RECORD", "state": "t", "where": {}, "fields": {}, "order_by": fields},
    ):
        assert "at most 32 keys" in refused(eng, request)


def test_a_huge_order_by_is_refused_at_once() -> None:
    """Issue 14 item 3: 20,000 keys on 2,000 records held the writer for 14-38 s."""
    eng = stateengine.Engine()
    eng.set_state("big", [{"a": i % 10, "b": i % 7} for i in range(2000)])
    started = time.perf_counter()
    reply = eng.execute(
        {"command": "LIST_RECORDS", "state": "big", "order_by": ["a", "-b"] * 10_000}
    )
    elapsed = time.perf_counter() - started
    assert reply["ok"] is False and reply["error"]["type"] == "BadRequest", str(reply)[:200]
    assert elapsed < 0.5, elapsed


# --- item 4: the request limit's helpers --------------------------------------------------


def test_clients_put_req_id_first_and_the_server_can_peek_it() -> None:
    request = protocol.with_req_id({"command": "X", "req_id": "theirs", "v": b"x" * 10**6}, 9)
    assert next(iter(request)) == "req_id" and request["req_id"] == 9
    body = msgpack.packb(request, use_bin_type=True)
    assert protocol.peek_req_id(body) == (True, 9)
    assert protocol.peek_req_id(body[: limits.REQ_ID_WINDOW]) == (True, 9)  # a cut body
    assert protocol.peek_req_id(b' {"req_id": "a-1", "pad": "' + b"p" * 10**6) == (True, "a-1")
    for body in (
        msgpack.packb({"command": "X", "req_id": 9}),  # not first: not guessed at
        msgpack.packb({"req_id": "r" * 100}),  # longer than the window
        msgpack.packb([1, 2]),
        b"\x81",
        b"",
        b'{"command": "X", "req_id": 1}',
    ):
        assert protocol.peek_req_id(body) == (False, None)


def test_pack_request_refuses_over_the_limit() -> None:
    pack = msgpack.Packer(use_bin_type=True).pack
    assert protocol.pack_request(pack, {"v": "x" * 50}, 100)
    with pytest.raises(stateengine.errors.PayloadTooLarge, match="limit of 100"):
        protocol.pack_request(pack, {"v": "x" * 100}, 100)
