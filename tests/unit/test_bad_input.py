"""Malformed requests: every one gets `ok: false` with a known error type and a message that
names the problem, no exception escapes `Engine.execute`, the engine keeps working and its
state is unchanged (README "Wire protocol", "Errors"; SPEC §7)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stateengine
from stateengine import command_table, errors

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_TYPES = set(errors.ERROR_TYPES)
BAD_REQUEST_FAMILY = {"BadRequest", "UnknownCommand", "PayloadTooLarge"}


class Unpackable:
    def __repr__(self) -> str:
        return "Unpackable()"


def nest(n: int) -> list[Any]:
    v: list[Any] = [1]
    for _ in range(n):
        v = [v]
    return v


def self_referencing() -> list[Any]:
    v: list[Any] = [1]
    v.append(v)
    return v


huge_int = st.one_of(
    st.integers(min_value=2**64, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-(2**63) - 1),
)
# Values no msgpack encoder takes, as the README's value rules define them.
junk_but_ints = st.one_of(
    st.tuples(st.integers(0, 3)),
    st.frozensets(st.integers(0, 3), min_size=1),
    st.sets(st.integers(0, 3), min_size=1),
    st.builds(Unpackable),
    st.integers(40, 200).map(nest),
    st.just(0).map(lambda _: self_referencing()),
    st.complex_numbers(allow_nan=False, max_magnitude=10).filter(lambda c: c.imag != 0),
    st.sampled_from([{(1, 2): "k"}, {1.5: "k"}, {None: 1}, {b"k": 1}]),
)
junk = st.one_of(junk_but_ints, huge_int)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**64


def valid_order_by(v: Any) -> bool:
    if isinstance(v, str):
        return True  # [] is left open by the README
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# What a well-typed value of each argument is (README argument table). A value outside is
# ill-typed: a BadRequest. Values the README leaves open (an explicit null for an optional
# argument, max_length 0, an empty list where a list is expected, an empty id) are not used.
VALID: dict[str, Any] = {
    "state": lambda v: isinstance(v, str) and v != "",
    "id": lambda v: is_int(v) or isinstance(v, str),
    "record": lambda v: isinstance(v, dict),
    "fields": lambda v: isinstance(v, dict),
    "where": lambda v: isinstance(v, dict),
    "add": lambda v: isinstance(v, dict),
    "schema": lambda v: isinstance(v, dict),
    "records": lambda v: isinstance(v, list),
    "commands": lambda v: isinstance(v, list),
    "drop": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "max_length": is_int,
    "expected_version": is_int,
    "if_version": is_int,
    "offset": lambda v: is_int(v) and v >= 0,
    "limit": lambda v: is_int(v) and v >= 0,
    "field": lambda v: isinstance(v, str),
    "by": lambda v: is_int(v) or isinstance(v, float),  # NaN/inf: the README is silent
    "lease_seconds": lambda v: (
        (is_int(v) and v > 0) or (isinstance(v, float) and (v > 0 or math.isinf(v)))
    ),
    "order_by": valid_order_by,
}
WRONG_TYPED: list[Any] = [
    True,
    False,
    0,
    -1,
    1.5,
    float("nan"),
    "",
    "x",
    b"x",
    [1],
    ["a", 1],
    {"a": 1},
    [],
]
ill_typed_value = st.one_of(st.sampled_from(WRONG_TYPED), junk)

# One valid request per command, on the fixture's state (checked by test_bases_are_valid).
BASES: dict[str, dict[str, Any]] = {
    "CREATE_STATE": {"state": "new", "max_length": 3, "schema": {"x": "string"}},
    "DELETE_STATE": {"state": "u"},
    "LIST_STATES": {},
    "GET_STATE_INFO": {"state": "t"},
    "GET_SCHEMA": {"state": "t"},
    "SET_STATE": {"state": "t", "records": [{"name": "a", "n": 1}], "expected_version": 2},
    "CREATE_RECORD": {"state": "t", "record": {"name": "z", "n": 3}, "expected_version": 2},
    "SET_RECORD": {"state": "t", "id": 1, "record": {"name": "q", "n": 5}, "if_version": 2},
    "PATCH_RECORD": {"state": "t", "id": 1, "fields": {"n": 7}, "expected_version": 2},
    "DELETE_RECORD": {"state": "t", "id": 1, "if_version": 2},
    "GET_RECORD": {"state": "t", "id": 1},
    "LIST_RECORDS": {"state": "t", "where": {"n": 1}, "order_by": "name", "offset": 0, "limit": 5},
    "CLAIM_RECORD": {
        "state": "t",
        "where": {"name": "a"},
        "fields": {"n": 9},
        "order_by": ["-n", "id"],
        "lease_seconds": 5,
        "expected_version": 2,
    },
    "INCREMENT": {"state": "t", "id": 1, "field": "n", "by": 2},
    "ALTER_STATE": {
        "state": "t",
        "add": {"extra": {"type": "string?", "default": None}},
        "drop": ["n"],
        "expected_version": 2,
    },
    "BATCH": {"commands": [{"command": "GET_RECORD", "state": "t", "id": 1}]},
}
REQUIRED: dict[str, set[str]] = {
    "CREATE_STATE": {"state"},
    "DELETE_STATE": {"state"},
    "LIST_STATES": set(),
    "GET_STATE_INFO": {"state"},
    "GET_SCHEMA": {"state"},
    "SET_STATE": {"state", "records"},
    "CREATE_RECORD": {"state", "record"},
    "SET_RECORD": {"state", "id", "record"},
    "PATCH_RECORD": {"state", "id", "fields"},
    "DELETE_RECORD": {"state", "id"},
    "GET_RECORD": {"state", "id"},
    "LIST_RECORDS": {"state"},
    "CLAIM_RECORD": {"state", "where", "fields"},
    "INCREMENT": {"state", "id", "field"},
    "ALTER_STATE": {"state"},
    "BATCH": {"commands"},
}


def make_engine() -> stateengine.Engine:
    eng = stateengine.Engine(clock=lambda: 1_000_000.0)
    setup = [
        {"command": "CREATE_STATE", "state": "t", "schema": {"name": "string", "n": "integer"}},
        {"command": "CREATE_RECORD", "state": "t", "record": {"name": "a", "n": 1}},
        {"command": "CREATE_RECORD", "state": "t", "record": {"name": "b", "n": 2}},
        {"command": "CREATE_RECORD", "state": "u", "record": {"k": [1, {"x": b"y"}]}},
    ]
    for req in setup:
        assert eng.execute(req)["ok"] is True
    return eng


def canon(v: Any) -> Any:
    if isinstance(v, dict):
        return ("map", tuple(sorted(((canon(k), canon(x)) for k, x in v.items()), key=repr)))
    if isinstance(v, list):
        return ("list", tuple(canon(x) for x in v))
    return (type(v).__name__, v)


def digest(eng: stateengine.Engine) -> Any:
    states = eng.execute({"command": "LIST_STATES"})
    assert states["ok"] is True, states
    out: list[Any] = [states["seq"]]
    for name in states["result"]:
        info = eng.execute({"command": "GET_STATE_INFO", "state": name})
        recs = eng.execute({"command": "LIST_RECORDS", "state": name})
        assert info["ok"] is True and recs["ok"] is True, (info, recs)
        out.append((name, canon(info["result"]), canon(recs["result"])))
    return out


def rejected(eng: stateengine.Engine, request: Any, types: set[str]) -> str:
    """Send `request`; assert it is refused with one of `types` and nothing changed."""
    before = digest(eng)
    try:
        reply = eng.execute(request)
    except BaseException as e:
        pytest.fail(f"execute raised {e!r} for {request!r}")
    assert isinstance(reply, dict) and reply.get("ok") is False, (request, reply)
    error = reply["error"]
    assert error["type"] in KNOWN_TYPES, reply
    assert error["type"] in types, (request, reply)
    assert isinstance(error["message"], str) and error["message"].strip(), reply
    if isinstance(request, dict) and "req_id" in request:
        assert reply.get("req_id") == request["req_id"], reply
    assert digest(eng) == before, f"the state changed after {request!r}"
    ok = eng.execute({"command": "GET_RECORD", "state": "t", "id": 2})
    assert ok["ok"] is True and ok["result"]["name"] == "b", ok  # still working
    return error["message"]


def named(message: str, name: str) -> None:
    assert name in message, f"the message {message!r} does not name {name!r}"


# --- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", sorted(BASES))
def test_bases_are_valid(cmd: str) -> None:
    eng = make_engine()
    reply = eng.execute({"command": cmd, **copy.deepcopy(BASES[cmd])})
    assert reply["ok"] is True, reply


@SETTINGS
@given(
    request=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.lists(st.sampled_from(["command", "LIST_STATES", 1]), max_size=4),
        st.tuples(st.just("command"), st.just("LIST_STATES")),
        junk,
    )
)
def test_non_map_request(request: Any) -> None:
    rejected(make_engine(), request, {"BadRequest"})


@SETTINGS
@given(
    command=st.one_of(
        st.none(),
        st.integers(),
        st.floats(),
        st.binary(max_size=5),
        st.lists(st.text(max_size=3)),
        junk,
    ),
    drop=st.booleans(),
)
def test_missing_or_ill_typed_command(command: Any, drop: bool) -> None:
    request: dict[str, Any] = {"state": "t", "id": 1}
    if not drop:
        request["command"] = command
    message = rejected(make_engine(), request, {"BadRequest", "UnknownCommand"})
    named(message, "command")


@SETTINGS
@given(name=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=12))
def test_unknown_command(name: str) -> None:
    if name in command_table.names():  # SYNC and STATS have no base request here
        return
    message = rejected(make_engine(), {"command": name, "state": "t"}, {"UnknownCommand"})
    named(message, name)


@SETTINGS
@given(
    cmd=st.sampled_from(sorted(BASES)),
    arg=st.one_of(
        st.sampled_from(["bogus", "recrod", "ids", "State", "sate", "lease", "where_"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10),
    ),
    value=st.one_of(st.integers(0, 3), st.text(max_size=3), junk),
    req_id=st.one_of(st.none(), st.integers(0, 100)),
)
def test_unknown_argument(cmd: str, arg: str, value: Any, req_id: int | None) -> None:
    request = {"command": cmd, **copy.deepcopy(BASES[cmd])}
    if arg in set(request) | {"req_id", "command"} | _optional(cmd):
        return
    request[arg] = value
    if req_id is not None:
        request["req_id"] = req_id
    message = rejected(make_engine(), request, {"BadRequest"})
    named(message, arg)


def _optional(cmd: str) -> set[str]:
    pre = {"expected_version", "if_version", "if_match"}
    return {
        "CREATE_STATE": {"max_length", "schema"},
        "SET_STATE": {"expected_version"},
        "CREATE_RECORD": {"expected_version"},
        "SET_RECORD": pre,
        "PATCH_RECORD": pre | {"lease_seconds"},
        "DELETE_RECORD": pre,
        "LIST_RECORDS": {"where", "order_by", "offset", "limit"},
        "CLAIM_RECORD": {"order_by", "lease_seconds", "expected_version"},
        "INCREMENT": pre | {"by"},
        "ALTER_STATE": {"add", "drop", "expected_version"},
    }.get(cmd, set())


@pytest.mark.parametrize(("cmd", "arg"), sorted((c, a) for c, req in REQUIRED.items() for a in req))
def test_missing_argument(cmd: str, arg: str) -> None:
    request = {"command": cmd, **copy.deepcopy(BASES[cmd])}
    del request[arg]
    message = rejected(make_engine(), request, {"BadRequest"})
    named(message, arg)


ARGS = sorted((c, a) for c, req in BASES.items() for a in req)


@SETTINGS
@given(where=st.sampled_from(ARGS), value=ill_typed_value)
def test_ill_typed_argument(where: tuple[str, str], value: Any) -> None:
    cmd, arg = where
    if VALID[arg](value):
        return
    request = {"command": cmd, **copy.deepcopy(BASES[cmd])}
    request[arg] = value
    # a non-string field name (INCREMENT's field, a member of drop) may fairly be reported
    # as a SchemaError naming it
    types = {"BadRequest", "SchemaError"} if arg in ("field", "drop") else {"BadRequest"}
    message = rejected(make_engine(), request, types)
    named(message, arg)


# Where a value inside a request's maps can hide.
VALUE_SLOTS = [
    ("CREATE_RECORD", ("record", "name")),
    ("CREATE_RECORD", ("record", "n")),
    ("SET_RECORD", ("record", "name")),
    ("PATCH_RECORD", ("fields", "n")),
    ("SET_STATE", ("records", 0, "name")),
    ("LIST_RECORDS", ("where", "n")),
    ("CLAIM_RECORD", ("where", "name")),
    ("CLAIM_RECORD", ("fields", "n")),
    ("ALTER_STATE", ("add", "extra", "default")),
]


@SETTINGS
@given(slot=st.sampled_from(VALUE_SLOTS), value=junk, wrap=st.sampled_from(["bare", "list", "map"]))
def test_non_msgpack_value_inside(slot: tuple[str, tuple[Any, ...]], value: Any, wrap: str) -> None:
    cmd, path = slot
    request = {"command": cmd, **copy.deepcopy(BASES[cmd])}
    target: Any = request
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = {"bare": value, "list": [1, value], "map": {"k": value}}[wrap]
    field = path[-2] if path[-1] == "default" else path[-1]
    # the slot's field is typed, so a SchemaError for the type is fair too
    types = BAD_REQUEST_FAMILY | {"SchemaError"}
    message = rejected(make_engine(), request, types)
    if isinstance(field, str):
        named(message, field)


@SETTINGS
@given(value=junk, field=st.sampled_from(["k"]))
def test_non_msgpack_value_in_an_any_field(value: Any, field: str) -> None:
    """On a field typed `any` only the value can be wrong: a BadRequest naming the field."""
    request = {"command": "CREATE_RECORD", "state": "u", "record": {field: value}}
    message = rejected(make_engine(), request, BAD_REQUEST_FAMILY)
    named(message, field)


@SETTINGS
@given(
    index=st.integers(0, 2),
    bad=st.one_of(
        st.sampled_from(
            [
                {"command": "BATCH", "commands": []},
                {"command": "GET_RECORD", "state": "t", "id": 1, "req_id": 5},
                {"command": "FROB"},
                {"state": "t"},
                ["GET_RECORD", "t", 1],
                {"command": "GET_RECORD", "state": "t", "id": 1, "bogus": 1},
                {"command": "CREATE_RECORD", "state": "u", "record": {"k": (1,)}},
            ]
        ),
        junk,
    ),
)
def test_bad_batch_member_fails_the_whole_batch(index: int, bad: Any) -> None:
    good = [
        {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"n": 10}},
        {"command": "CREATE_RECORD", "state": "t", "record": {"name": "c", "n": 3}},
        {"command": "DELETE_STATE", "state": "u"},
    ]
    commands: list[Any] = list(good)
    commands.insert(index, bad)
    message = rejected(
        make_engine(), {"command": "BATCH", "commands": commands}, BAD_REQUEST_FAMILY
    )
    assert message.startswith(f"commands[{index}]"), message


@SETTINGS
@given(value=ill_typed_value.filter(lambda v: not isinstance(v, list)))
def test_batch_commands_not_a_list(value: Any) -> None:
    message = rejected(make_engine(), {"command": "BATCH", "commands": value}, {"BadRequest"})
    named(message, "commands")


INT_ARGS = sorted(
    (c, a)
    for c, a in ARGS
    if a in {"max_length", "expected_version", "if_version", "offset", "limit", "by"}
)


def test_out_of_range_int_argument() -> None:
    wrong = []
    for cmd, arg in INT_ARGS:
        for value in (2**64, -(2**63) - 1):
            request = {"command": cmd, **copy.deepcopy(BASES[cmd])}
            request[arg] = value
            reply = make_engine().execute(request)
            if reply["ok"] or reply["error"]["type"] != "BadRequest":
                wrong.append((cmd, arg, value, reply))
    assert not wrong, wrong


@pytest.mark.parametrize("value", [False, 0, ""])
def test_falsy_drop(value: Any) -> None:
    request = {"command": "ALTER_STATE", "state": "t", "drop": value, "add": {"e": {}}}
    named(rejected(make_engine(), request, {"BadRequest"}), "drop")


@pytest.mark.parametrize("drop", [[1], ["n", None], [["n"]]])
def test_a_drop_of_a_name_that_is_not_text_is_ill_typed(drop: list[Any]) -> None:
    """A list of anything but strings is ill-typed (BadRequest), not an unknown field:
    what the wire makes of the model test's ``(1,)`` (the server model caught it)."""
    message = rejected(
        make_engine(), {"command": "ALTER_STATE", "state": "t", "drop": drop}, {"BadRequest"}
    )
    named(message, "drop")
