"""Hypothesis strategies for stateengine: values, schemas, records and requests.

    from hypothesis import given
    from stateengine.testing.strategies import records, requests

    SCHEMA = {"title": "string", "status": "string", "tries": "integer", "note": "string?"}

    @given(records(SCHEMA))
    def test_create(stateengine_client, record): ...

Requests are wire maps (``{"command": ..., "state": ..., ...}``): run them with
``client.execute(request)`` or ``stateengine.Engine().execute(request)``, which take the
same maps and return the same reply maps. Every value fits msgpack and the README's type
vocabulary (``integer``, ``float``, ``string``, ``boolean``, ``bytes``, ``list``, ``map``,
``any``; ``?`` allows nil). Floats are finite unless asked (NaN is never equal to itself,
so a model comparison would fail on it for no fault of the server).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from stateengine import command_table, query
from stateengine.protocol import INT_MAX, INT_MIN, TYPE_NAMES

#: A field no generated schema has (field names never contain ``-``).
UNKNOWN_FIELD = "not-a-field"

__all__ = [
    "ARGUMENTS",
    "command_requests",
    "field_names",
    "identical",
    "json_hard_values",
    "record_ids",
    "records",
    "requests",
    "schemas",
    "type_names",
    "values",
    "values_of_type",
]

#: Field names: short identifiers, never ``id`` or the reserved ``_version``.
field_names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda n: n != "id")
type_names = st.sampled_from(TYPE_NAMES).flatmap(
    lambda base: st.sampled_from([base, f"{base}?"]) if base != "any" else st.just(base)
)


def scalars(allow_nan: bool = False) -> st.SearchStrategy[Any]:
    """nil, bool, 64-bit ints, floats, str, bytes.

    Builds a strategy; raises nothing.
    """
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(INT_MIN, INT_MAX),
        st.floats(allow_nan=allow_nan, allow_infinity=allow_nan),
        st.text(max_size=20),
        st.binary(max_size=20),
    )


def values(allow_nan: bool = False, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any msgpack value the server stores: scalars, lists and str-keyed maps of them.

    Builds a strategy; raises nothing.
    """
    return st.recursive(
        scalars(allow_nan),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


#: Map keys JSON cannot carry as they are: ints, and the escape names of
#: :mod:`stateengine.jsoncodec` (``$b64``, ...) plus other ``$`` keys.
hard_keys = (
    st.integers(INT_MIN, INT_MAX)
    | st.sampled_from(["$b64", "$float", "$map", "$lit", "$x", "$", "id"])
    | st.text(max_size=6)
)


def json_hard_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Values that test a JSON encoding: NaN and infinities, bytes, int map keys, and
    maps that look like escapes (``{"$b64": "AAAA"}`` stored as a map), nested.

    Builds a strategy; raises nothing.
    """
    hard_scalars = scalars(allow_nan=True) | st.sampled_from(["$b64", "AAAA", "nan", "inf"])
    return st.recursive(
        hard_scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(hard_keys, children, max_size=3)
            | st.builds(
                lambda k, v: {k: v}, st.sampled_from(["$b64", "$float", "$map", "$lit"]), children
            )
        ),
        max_leaves=max_leaves,
    )


def identical(a: Any, b: Any) -> bool:
    """Whether two msgpack values are the same: same types (``1`` is not ``1.0``, ``True``
    is not ``1``), NaN is NaN, map keys in the same order. For round-trip checks.

    Never raises.
    """
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) is list:
        return len(a) == len(b) and all(map(identical, a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    return bool(a == b)


def values_of_type(type_name: str, allow_nan: bool = False) -> st.SearchStrategy[Any]:
    """Values a declared field of *type_name* accepts (``integer``, ``string?``, ...).

    :raises KeyError: a type name outside ``TYPE_NAMES``.
    """
    base = type_name.removesuffix("?")
    strategy: st.SearchStrategy[Any] = {
        "integer": st.integers(INT_MIN, INT_MAX),
        "float": st.floats(allow_nan=allow_nan, allow_infinity=allow_nan),
        "string": st.text(max_size=20),
        "boolean": st.booleans(),
        "bytes": st.binary(max_size=20),
        "list": st.lists(values(allow_nan, 4), max_size=4),
        "map": st.dictionaries(st.text(max_size=8), values(allow_nan, 4), max_size=4),
        "any": values(allow_nan),
    }[base]
    return st.none() | strategy if type_name.endswith("?") else strategy


def schemas(min_fields: int = 1, max_fields: int = 5) -> st.SearchStrategy[dict[str, str]]:
    """Declared schemas: ``{field: type name}`` (without ``id``).

    Builds a strategy; raises nothing.
    """
    return st.dictionaries(field_names, type_names, min_size=min_fields, max_size=max_fields)


def record_ids(max_id: int = 8) -> st.SearchStrategy[int | str]:
    """Explicit ids: small ints (so that requests hit existing records) and a few strings.

    Builds a strategy; raises nothing.
    """
    return st.integers(1, max_id) | st.sampled_from(["a", "b"])


def records(
    schema: dict[str, str],
    ids: st.SearchStrategy[int | str] | None = None,
    allow_nan: bool = False,
) -> st.SearchStrategy[dict[str, Any]]:
    """Records valid for a declared *schema* (every field); with *ids*, an explicit ``id``.

    :raises KeyError: a type name outside ``TYPE_NAMES`` in *schema*.
    """
    fields = {name: values_of_type(kind, allow_nan) for name, kind in schema.items()}
    if ids is not None:
        fields["id"] = ids
    return st.fixed_dictionaries(fields)


_RANGED = ("integer", "float", "string", "bytes")


def _where(schema: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """``{}`` or one condition: a plain value, or an operator map (``$eq`` ... ``$nin``)."""
    if not schema:
        return st.just({})

    def condition(name: str) -> st.SearchStrategy[dict[str, Any]]:
        value = values_of_type(schema[name])
        ops = st.builds(lambda op, v: {op: v}, st.sampled_from(["$eq", "$ne"]), value) | (
            st.builds(
                lambda op, vs: {op: vs},
                st.sampled_from(["$in", "$nin"]),
                st.lists(value, max_size=3),
            )
        )
        if schema[name].removesuffix("?") in _RANGED:
            bound = values_of_type(schema[name].removesuffix("?"))  # never nil or NaN
            ops |= st.builds(
                lambda op, v: {op: v}, st.sampled_from(sorted(query.RANGE_OPERATORS)), bound
            )
        return st.builds(lambda c: {name: c}, value | ops)

    return st.just({}) | st.sampled_from(sorted(schema)).flatmap(condition)


def _patch(schema: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.sets(st.sampled_from(sorted(schema)), min_size=1).flatmap(
        lambda names: st.fixed_dictionaries({n: values_of_type(schema[n]) for n in names})
    )


def _order_by(schema: dict[str, str]) -> st.SearchStrategy[Any]:
    names = ["id", *sorted(schema)]
    return st.none() | st.sampled_from(names + [f"-{n}" for n in names])


def _drop_none(**args: Any) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


def requests(
    state: str,
    schema: dict[str, str],
    ids: st.SearchStrategy[int | str] | None = None,
    lease_seconds: float = 1000.5,
    invalid: bool = False,
) -> st.SearchStrategy[dict[str, Any]]:
    """Requests on one table with a declared *schema* (create it with ``CREATE_STATE``).

    Record commands, reads, claims (under a lease of *lease_seconds*: keep it far longer
    than the test, so that no lease runs out while a model stands still), ``INCREMENT``
    on ``integer`` fields, preconditions and small ``BATCH``\\es. A valid request may still
    fail as the command says (``RecordNotFound``, ``DuplicateId``, ``VersionConflict``);
    with ``invalid=True`` some are malformed (unknown field or command, wrong type,
    missing argument), which the server must answer with an error and no change.
    """
    ids = ids if ids is not None else record_ids()
    rec = records(schema)
    version = st.none() | st.integers(0, 50)
    numeric = sorted(n for n, t in schema.items() if t == "integer")
    singles: list[st.SearchStrategy[dict[str, Any]]] = [
        st.builds(lambda i: {"command": "GET_RECORD", "state": state, "id": i}, ids),
        st.builds(
            lambda w, o, lim: _drop_none(
                command="LIST_RECORDS", state=state, where=w or None, order_by=o, limit=lim
            ),
            _where(schema),
            _order_by(schema),
            st.none() | st.integers(0, 5),
        ),
        st.builds(
            lambda r, i: {"command": "CREATE_RECORD", "state": state, "record": {**r, "id": i}},
            rec,
            ids,
        ),
        st.builds(lambda r: {"command": "CREATE_RECORD", "state": state, "record": r}, rec),
        st.builds(
            lambda i, r, v: _drop_none(
                command="SET_RECORD", state=state, id=i, record=r, if_version=v
            ),
            ids,
            rec,
            version,
        ),
        st.builds(
            lambda i, f, v, m: _drop_none(
                command="PATCH_RECORD", state=state, id=i, fields=f, if_version=v, if_match=m
            ),
            ids,
            _patch(schema),
            version,
            st.none() | _where(schema).filter(bool),
        ),
        st.builds(
            lambda i, v: _drop_none(command="DELETE_RECORD", state=state, id=i, if_version=v),
            ids,
            version,
        ),
        st.builds(
            lambda w, f, o, lease: _drop_none(
                command="CLAIM_RECORD",
                state=state,
                where=w,
                fields=f,
                order_by=o,
                lease_seconds=lease_seconds if lease else None,
            ),
            _where(schema),
            _patch(schema),
            _order_by(schema),
            st.booleans(),
        ),
        st.just({"command": "GET_STATE_INFO", "state": state}),
    ]
    if numeric:
        singles.append(
            st.builds(
                lambda i, f, by: {
                    "command": "INCREMENT",
                    "state": state,
                    "id": i,
                    "field": f,
                    "by": by,
                },
                ids,
                st.sampled_from(numeric),
                st.integers(-3, 3),
            )
        )
    single = st.one_of(singles)
    batch = st.builds(
        lambda cs: {"command": "BATCH", "commands": cs},
        st.lists(single.filter(lambda r: r["command"] != "GET_STATE_INFO"), min_size=1, max_size=3),
    )
    out = st.one_of(single, batch)
    if invalid:
        out = out | _invalid(state, schema, ids)
    return out


def _invalid(
    state: str, schema: dict[str, str], ids: st.SearchStrategy[int | str]
) -> st.SearchStrategy[dict[str, Any]]:
    """Malformed requests: each must get an error reply and change nothing."""
    rec = records(schema)
    return st.one_of(
        st.builds(
            lambda r: {
                "command": "CREATE_RECORD",
                "state": state,
                "record": {**r, UNKNOWN_FIELD: 1},
            },
            rec,
        ),
        st.builds(lambda i: {"command": "GET_RECORD", "state": state, "id": i, "bogus": 1}, ids),
        st.builds(lambda i: {"command": "PATCH_RECORD", "state": state, "id": i}, ids),
        st.just({"command": "NO_SUCH_COMMAND", "state": state}),
        st.builds(
            lambda i: {"command": "INCREMENT", "state": state, "id": i, "field": UNKNOWN_FIELD}, ids
        ),
    )


# --- every command of the command table ---------------------------------------------------


@dataclass(frozen=True)
class ArgContext:
    """What an argument's strategy may depend on: the table and its schema."""

    state: str
    schema: dict[str, str]
    ids: st.SearchStrategy[int | str]
    lease_seconds: float


def _add_fields(c: ArgContext) -> st.SearchStrategy[dict[str, Any]]:
    spec = st.fixed_dictionaries({"type": type_names}).map(
        lambda s: {**s, "default": None} if s["type"].endswith("?") or s["type"] == "any" else s
    )
    new = field_names.filter(lambda n: n not in c.schema)
    return st.dictionaries(new, spec, min_size=1, max_size=2)


def _numeric_field(c: ArgContext) -> st.SearchStrategy[str]:
    numeric = sorted(n for n, t in c.schema.items() if t.removesuffix("?") in ("integer", "float"))
    return st.sampled_from(numeric or sorted(c.schema) or ["id"])


#: argument name → its strategy for a table: how :func:`command_requests` fills any
#: command of the table. A command with an argument not here is refused (ValueError)
#: by :func:`command_requests`: add the argument's strategy with the command.
ARGUMENTS: dict[str, Callable[[ArgContext], st.SearchStrategy[Any]]] = {
    "state": lambda c: st.just(c.state),
    "id": lambda c: c.ids,
    "record": lambda c: records(c.schema),
    "records": lambda c: st.lists(records(c.schema), max_size=3),
    "fields": lambda c: _patch(c.schema) if c.schema else st.just({}),
    "where": lambda c: _where(c.schema),
    "if_match": lambda c: _where(c.schema),
    "order_by": lambda c: _order_by(c.schema).filter(lambda o: o is not None),
    "offset": lambda c: st.integers(0, 5),
    "limit": lambda c: st.integers(0, 5),
    "max_length": lambda c: st.integers(1, 10),
    "schema": lambda c: st.just(dict(c.schema)),
    "expected_version": lambda c: st.integers(0, 50),
    "if_version": lambda c: st.integers(0, 50),
    "lease_seconds": lambda c: st.just(c.lease_seconds),
    "by": lambda c: st.integers(-3, 3),
    "field": _numeric_field,
    "add": _add_fields,
    "drop": lambda c: (
        st.lists(st.sampled_from(sorted(c.schema)), max_size=1, unique=True)
        if c.schema
        else st.just([])
    ),
    # short waits: a parked claim holds its client until the wait ends
    "wait": lambda c: st.sampled_from([0, 0.01]),
    # a TTL as long as the leases: nothing expires during a test unless it waits
    "ttl": lambda c: st.just(c.lease_seconds),
    "max_attempts": lambda c: st.integers(1, 3),
    "dead_letter": lambda c: _patch(c.schema) if c.schema else st.just({}),
    "indexes": lambda c: _indexes(c.schema),
    "add_indexes": lambda c: _indexes(c.schema),
    "drop_indexes": lambda c: _indexes(c.schema),
    # BATCH: built by command_requests from the other commands.
}


def _indexes(schema: dict[str, str]) -> st.SearchStrategy[list[Any]]:
    """Index declarations over the schema's fields: a name or a list of up to 3."""
    names = ["id", *sorted(schema)]
    one = st.sampled_from(names) | st.lists(
        st.sampled_from(names), min_size=1, max_size=3, unique=True
    )
    return st.lists(one, max_size=2)


def command_requests(
    state: str,
    schema: dict[str, str],
    ids: st.SearchStrategy[int | str] | None = None,
    commands: Iterable[str] | None = None,
    lease_seconds: float = 1000.5,
) -> st.SearchStrategy[dict[str, Any]]:
    """Requests of every command of the command table (``stateengine.command_table``),
    or of *commands*, on one table with a declared *schema*.

    Derived from the table: each command's required arguments and a random subset of
    its optional ones, each drawn from :data:`ARGUMENTS`; a ``BATCH`` holds 1 to 3 such
    requests. So a command added to the table is drawn here without an edit, once its
    arguments have strategies. Every request has the command's shape (the server never
    answers "takes no argument" or "requires"); its values may still be refused
    (``SchemaError``, ``RecordNotFound``, ...), unlike :func:`requests`, which keeps to
    requests a model can follow.

    :raises ValueError: a command is not in the table, or has an argument without a
        strategy in :data:`ARGUMENTS`.
    """
    ctx = ArgContext(state, schema, ids if ids is not None else record_ids(), lease_seconds)
    chosen = list(command_table.COMMANDS if commands is None else commands)
    others = [name for name in command_table.COMMANDS if name != "BATCH"]
    for name in chosen:
        if name not in command_table.COMMANDS:
            raise ValueError(f"command_requests: {name!r} is not in the command table")
    for name in others if "BATCH" in chosen else chosen:
        _check_arguments(name)
    # Built when first drawn: a BATCH's members are every other command, and building
    # all of them for each single-command strategy would cost more than the draws.
    singles = {
        name: st.deferred(lambda name=name: _command_request(name, ctx))  # type: ignore[misc]
        for name in command_table.COMMANDS
        if name != "BATCH"
    }
    out: list[st.SearchStrategy[dict[str, Any]]] = []
    for name in chosen:
        if name == "BATCH":
            members = st.one_of([singles[n] for n in others])
            out.append(
                st.builds(
                    lambda cs: {"command": "BATCH", "commands": cs},
                    st.lists(members, min_size=1, max_size=3),
                )
            )
        else:
            out.append(singles[name])
    return st.one_of(out)


def _check_arguments(name: str) -> None:
    missing = sorted(a for a in command_table.COMMANDS[name].args if a not in ARGUMENTS)
    if missing:
        raise ValueError(
            f"command_requests: no strategy for argument(s) {missing} of {name}: "
            "add them to stateengine.testing.strategies.ARGUMENTS"
        )


def _command_request(name: str, ctx: ArgContext) -> st.SearchStrategy[dict[str, Any]]:
    spec = command_table.COMMANDS[name]
    required = {a: ARGUMENTS[a](ctx) for a in spec.required}
    optional = {a: st.none() | ARGUMENTS[a](ctx) for a in spec.optional}
    return st.fixed_dictionaries({**required, **optional}).map(
        lambda args: {"command": name, **{k: v for k, v in args.items() if v is not None}}
    )
