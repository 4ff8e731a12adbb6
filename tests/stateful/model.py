"""A plain-Python reference model of the stateengine table engine.

Written from SPEC §3/§5 and the README ("Data model", "Wire protocol", "Leases and
CLAIM_RECORD", "Record TTL", "Errors") only, never from the engine's source, so that it can disagree
with it.

Where the README leaves a choice open (which of two applicable errors is reported, whether a
read-only BATCH advances ``seq``, whether ``ALTER_STATE`` completes leases, ...), the model is
*nondeterministic*: a handler calls ``ctx.choose(n)`` and :func:`outcomes` enumerates every
path. Error replies are matched against a *set* of acceptable error types. The test keeps every
model world that is consistent with what the engine replied.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
MAX_DEPTH = 32
TYPE_NAMES = frozenset({"integer", "float", "string", "boolean", "bytes", "list", "map", "any"})
ANY_VERSION = object()  # a reply whose table version the README leaves open

PRECONDITIONS = frozenset({"expected_version", "if_version", "if_match"})
EV = frozenset({"expected_version"})

# command -> (required arguments, optional arguments); `command` and `req_id` are implicit.
COMMANDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "CREATE_STATE": (frozenset({"state"}), frozenset({"max_length", "schema", "indexes"})),
    "DELETE_STATE": (frozenset({"state"}), frozenset()),
    "LIST_STATES": (frozenset(), frozenset()),
    "GET_STATE_INFO": (frozenset({"state"}), frozenset()),
    "GET_SCHEMA": (frozenset({"state"}), frozenset()),
    "SET_STATE": (frozenset({"state", "records"}), EV),
    "CREATE_RECORD": (frozenset({"state", "record"}), EV | {"ttl"}),
    "SET_RECORD": (frozenset({"state", "id", "record"}), PRECONDITIONS | {"ttl"}),
    "PATCH_RECORD": (
        frozenset({"state", "id", "fields"}),
        PRECONDITIONS | {"lease_seconds", "ttl"},
    ),
    "EXPIRE_RECORD": (frozenset({"state", "id", "ttl"}), PRECONDITIONS),
    "DELETE_RECORD": (frozenset({"state", "id"}), PRECONDITIONS),
    "GET_RECORD": (frozenset({"state", "id"}), frozenset()),
    "LIST_RECORDS": (frozenset({"state"}), frozenset({"where", "order_by", "offset", "limit"})),
    "CLAIM_RECORD": (
        frozenset({"state", "where", "fields"}),
        frozenset(
            {"order_by", "lease_seconds", "expected_version", "wait", "max_attempts", "dead_letter"}
        ),
    ),
    "INCREMENT": (frozenset({"state", "id", "field"}), PRECONDITIONS | {"by"}),
    "ALTER_STATE": (
        frozenset({"state"}),
        frozenset({"add", "drop", "add_indexes", "drop_indexes", "expected_version"}),
    ),
    "BATCH": (frozenset({"commands"}), frozenset()),
}
WRITE_COMMANDS = frozenset(
    {
        "CREATE_STATE",
        "DELETE_STATE",
        "SET_STATE",
        "CREATE_RECORD",
        "SET_RECORD",
        "PATCH_RECORD",
        "DELETE_RECORD",
        "EXPIRE_RECORD",
        "INCREMENT",
        "ALTER_STATE",
    }
)
# Commands on a table that must exist (the others create it implicitly or take none).
NEEDS_TABLE = frozenset(COMMANDS) - {
    "CREATE_STATE",
    "SET_STATE",
    "CREATE_RECORD",
    "LIST_STATES",
    "BATCH",
}
INFO_RESULT = frozenset({"CREATE_STATE", "GET_STATE_INFO", "ALTER_STATE"})


# --- values ----------------------------------------------------------------------------


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return (is_int(v) or isinstance(v, float)) and not isinstance(v, bool)


ID_MAX = 2**63 - 1  # ids: the signed 64-bit range (README "Limits")


def valid_text(v: str) -> bool:
    """No lone surrogate: text every store can encode as UTF-8."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_name(v: Any) -> bool:
    """A table name: 1..1024 bytes of UTF-8, no NUL, valid text (README "Limits")."""
    if not isinstance(v, str) or v == "" or "\x00" in v:
        return False
    try:
        return len(v.encode("utf-8")) <= 1024
    except UnicodeEncodeError:
        return False


def valid_id(v: Any) -> bool:
    if isinstance(v, str):
        try:
            return len(v.encode("utf-8")) <= 1024
        except UnicodeEncodeError:
            return False
    return is_int(v) and INT_MIN <= v <= ID_MAX


def value_problem(v: Any, depth: int = 0) -> str | None:
    """Why `v` is not a msgpack value the README allows (None when it is)."""
    if depth > MAX_DEPTH:
        return "nested too deep"
    if isinstance(v, str):
        return None if valid_text(v) else "invalid text"
    if v is None or isinstance(v, (bool, bytes, float)):
        return None
    if isinstance(v, int):
        return None if INT_MIN <= v <= INT_MAX else "int out of range"
    if isinstance(v, list):
        for x in v:
            p = value_problem(x, depth + 1)
            if p:
                return p
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(k, bool) or not (isinstance(k, str) or is_int(k)):
                return "bad map key"
            if is_int(k) and not INT_MIN <= k <= INT_MAX:
                return "int out of range"
            if isinstance(k, str) and not valid_text(k):
                return "invalid text"
            p = value_problem(x, depth + 1)
            if p:
                return p
        return None
    return f"not a msgpack type: {type(v).__name__}"


def msg_eq(a: Any, b: Any) -> bool:
    """`==` on msgpack values: 1 == 1.0, True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return bool(a == b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, bytes) and isinstance(b, bytes):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(msg_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        for k, x in a.items():
            match = [k2 for k2 in b if msg_eq(k, k2)]
            if len(match) != 1 or not msg_eq(x, b[match[0]]):
                return False
        return True
    return False


def sort_key(v: Any) -> tuple[Any, ...]:
    """nil, booleans, numbers, strings, bytes, lists, maps (maps: all equal, see tests)."""
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (1, v)
    if is_number(v):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, bytes):
        return (4, v)
    if isinstance(v, list):
        return (5, tuple(sort_key(x) for x in v))
    return (6,)


def canon(v: Any) -> Any:
    """A hashable, type-strict canonical form (1, 1.0 and True all differ)."""
    if v is None:
        return ("nil",)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return ("float", "nan" if math.isnan(v) else v)
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, bytes):
        return ("bytes", v)
    if isinstance(v, (list, tuple)):
        return ("list", tuple(canon(x) for x in v))
    if isinstance(v, dict):
        items = ((canon(k), _expires(k, x)) for k, x in v.items())
        return ("map", tuple(sorted(items, key=repr)))
    return ("other", repr(v))


#: The server test's model cannot know the server's wall clock: it then compares a
#: record's ``_expires`` only for being there (a TTL), not its value.
WALL_CLOCK = False


def _expires(key: Any, value: Any) -> Any:
    if WALL_CLOCK and key == "_expires" and isinstance(value, float):
        return ("float", "some deadline")
    return canon(value)


def type_fits(t: str, v: Any) -> bool:
    base = t[:-1] if t.endswith("?") else t
    if v is None:
        return t.endswith("?") or base == "any"
    if value_problem(v) is not None:
        return False
    return {
        "any": True,
        "integer": is_int(v),
        "float": is_number(v),
        "string": isinstance(v, str),
        "boolean": isinstance(v, bool),
        "bytes": isinstance(v, bytes),
        "list": isinstance(v, list),
        "map": isinstance(v, dict),
    }.get(base, False)


def valid_type_name(t: Any) -> bool:
    return isinstance(t, str) and (t[:-1] if t.endswith("?") else t) in TYPE_NAMES


def coerce(t: str, v: Any) -> Any:
    base = t[:-1] if t.endswith("?") else t
    if base == "float" and is_int(v):
        return float(v)
    return copy.deepcopy(v)


# --- state -----------------------------------------------------------------------------


@dataclass
class Lease:
    deadline: float
    saved: dict[str, Any]  # the values the claim overwrote
    # (attempt counter, max_attempts, dead-letter fields): README "Dead letters"
    dead: tuple[str, int, dict[str, Any]] | None = None


@dataclass
class Table:
    name: str
    version: int = 0
    fields: list[str] | None = None  # schema without `id`; None: no schema yet
    types: dict[str, str] = field(default_factory=dict)
    id_type: str | None = None
    max_length: int | None = None
    next_id: int = 1
    records: dict[Any, dict[str, Any]] = field(default_factory=dict)  # insertion order
    versions: dict[Any, int] = field(default_factory=dict)
    leases: dict[Any, Lease] = field(default_factory=dict)
    expires: dict[Any, float] = field(default_factory=dict)  # TTL deadlines
    # Declared indexes: they change what GET_STATE_INFO shows, never a query's answer.
    indexes: list[list[str]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema": self.schema(),
            "types": None if self.fields is None else self.public_types(),
            "version": self.version,
            "size": len(self.records),
            "max_length": self.max_length,
            "next_id": self.next_id,
            "indexes": [list(i) for i in self.indexes],
        }

    def schema(self) -> list[str]:
        return [] if self.fields is None else ["id", *self.fields]

    def public_types(self) -> dict[str, str]:
        t = {f: self.types[f] for f in self.fields or []}
        if self.id_type:
            t["id"] = self.id_type
        return t

    def out(self, rid: Any) -> dict[str, Any]:
        r = copy.deepcopy(self.records[rid])
        r["_version"] = self.versions[rid]
        if rid in self.expires:
            r["_expires"] = self.expires[rid]
        return r

    def known(self, f: Any) -> bool:
        return f == "id" or (self.fields is not None and f in self.fields)


@dataclass
class World:
    tables: dict[str, Table] = field(default_factory=dict)
    seq: int = 0

    def key(self) -> Any:
        return canon(
            [
                self.seq,
                [
                    [
                        n,
                        t.info(),
                        t.id_type,
                        [[canon(k), r, t.versions[k]] for k, r in t.records.items()],
                        [[canon(k), ls.deadline, ls.saved] for k, ls in t.leases.items()],
                        [[canon(k), d] for k, d in t.expires.items()],
                    ]
                    for n, t in sorted(self.tables.items())
                ],
            ]
        )


def normalize_info(info: Any) -> Any:
    """`types` may or may not list an undeclared `id`: keep it only when it restricts ids."""
    if not isinstance(info, dict):
        return info
    info = dict(info)
    types = info.get("types")
    if isinstance(types, dict) and types.get("id") not in ("integer", "string"):
        info["types"] = {k: v for k, v in types.items() if k != "id"}
    return info


def model_digest(w: World) -> Any:
    return canon(
        {
            "seq": w.seq,
            "tables": {
                n: {
                    "info": normalize_info(t.info()),
                    "schema": t.schema(),
                    "records": [t.out(k) for k in t.records],
                }
                for n, t in w.tables.items()
            },
        }
    )


def engine_digest(execute: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """The whole visible state, read through the public API only."""
    r = execute({"command": "LIST_STATES"})
    assert r.get("ok") is True, r
    seq = r["seq"]
    tables: dict[str, Any] = {}
    for name in r["result"]:
        info = execute({"command": "GET_STATE_INFO", "state": name})
        schema = execute({"command": "GET_SCHEMA", "state": name})
        records: list[Any] = []
        while True:
            page = execute(
                {"command": "LIST_RECORDS", "state": name, "offset": len(records), "limit": 100}
            )
            assert page.get("ok") is True, page
            records.extend(page["result"])
            if len(page["result"]) < 100:
                break
        assert info.get("ok") is True and schema.get("ok") is True, (info, schema)
        assert info["seq"] == seq and schema["seq"] == seq and page["seq"] == seq
        tables[name] = {
            "info": normalize_info(info["result"]),
            "schema": schema["result"],
            "records": records,
        }
    return canon({"seq": seq, "tables": tables})


# --- nondeterministic execution ----------------------------------------------------------


class MErr(Exception):
    def __init__(self, types: set[str] | frozenset[str], why: str, index: int | None = None):
        super().__init__(why)
        self.types = frozenset(types)
        self.why = why
        self.index = index


class Ctx:
    def __init__(self, prefix: list[int], now: float):
        self.prefix = prefix
        self.trace: list[tuple[int, int]] = []
        self.now = now

    def choose(self, n: int) -> int:
        i = len(self.trace)
        c = self.prefix[i] if i < len(self.prefix) else 0
        self.trace.append((c, n))
        return c


@dataclass
class Outcome:
    ok: bool
    world: World
    result: Any = None
    version: Any = None
    seq: int = 0
    errors: frozenset[str] = frozenset()
    index: int | None = None
    why: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"ok result={self.result!r} version={self.version!r} seq={self.seq}"
        return f"error {sorted(self.errors)} index={self.index} ({self.why})"


def expire(world: World, now: float) -> None:
    """README lease rule 2 and "Record TTL": before a command, every lease and TTL whose
    deadline is <= now ends in one commit of its own (one seq; each table touched +1):
    the values a claim overwrote are put back (or its dead-letter fields set once its
    counter reached max_attempts), records past their TTL are deleted."""
    touched = False
    for t in world.tables.values():
        hit = False
        for k, lease in list(t.leases.items()):
            if lease.deadline <= now:
                rec = {**t.records[k], **copy.deepcopy(lease.saved)}
                if lease.dead is not None:
                    counter, most, letter = lease.dead
                    count = t.records[k].get(counter)
                    if is_number(count) and count >= most:
                        rec.update(copy.deepcopy(letter))
                t.records[k] = rec
                t.versions[k] = world.seq + 1
                del t.leases[k]
                hit = True
        for k, when in list(t.expires.items()):
            if when <= now:
                del t.records[k], t.versions[k], t.expires[k]
                t.leases.pop(k, None)
                hit = True
        if hit:
            t.version += 1
            touched = True
    if touched:
        world.seq += 1


def outcomes(world: World, request: Any, now: float, limit: int = 64) -> list[Outcome]:
    """Every reply the README allows for `request` on `world`, with the world after it
    (the expiry commit of what ran out by *now* first)."""
    world = copy.deepcopy(world)
    expire(world, now)
    res: list[Outcome] = []
    prefix: list[int] = []
    while True:
        ctx = Ctx(prefix, now)
        w = copy.deepcopy(world)
        try:
            result, version, wrote = dispatch(ctx, w, request, in_batch=False)
            if wrote:
                w.seq += 1
            res.append(Outcome(True, w, result, version, w.seq))
        except MErr as e:
            res.append(Outcome(False, world, errors=e.types, index=e.index, why=e.why))
        trace = ctx.trace
        while trace and trace[-1][0] == trace[-1][1] - 1:
            trace.pop()
        if not trace or len(res) >= limit:
            return res
        prefix = [c for c, _ in trace[:-1]] + [trace[-1][0] + 1]


def first_problem(req: Any, in_batch: bool) -> tuple[frozenset[str], str] | None:
    """Request-shape errors that come before anything else (stateless)."""
    if not isinstance(req, dict):
        return frozenset({"BadRequest"}), "request is not a map"
    cmd = req.get("command")
    if "command" not in req or not isinstance(cmd, str):
        return frozenset({"BadRequest", "UnknownCommand"}), "missing or ill-typed command"
    if cmd not in COMMANDS:
        return frozenset({"UnknownCommand"}), f"unknown command {cmd!r}"
    if in_batch and cmd == "BATCH":
        return frozenset({"BadRequest", "UnknownCommand"}), "nested BATCH"
    return None


def structural_problems(req: dict[str, Any], in_batch: bool) -> list[tuple[str | None, str]]:
    """Unknown, missing and ill-typed arguments: BadRequest, known without any state."""
    cmd = req["command"]
    required, optional = COMMANDS[cmd]
    allowed = required | optional | {"command"} | (set() if in_batch else {"req_id"})
    probs: list[tuple[str | None, str]] = [
        (None, f"unknown argument {k!r}") for k in req if k not in allowed
    ]
    probs += [(k, f"missing argument {k!r}") for k in required if k not in req]

    def bad(k: str, ok: Callable[[Any], bool]) -> None:
        if k in req and not ok(req[k]):
            probs.append((k, f"ill-typed {k}"))

    bad("state", valid_name)
    bad("id", valid_id)
    for k in ("record", "fields", "where", "if_match", "dead_letter", "add", "schema"):
        bad(k, lambda v: isinstance(v, dict))
    bad("records", lambda v: isinstance(v, list))
    bad("commands", lambda v: isinstance(v, list))
    bad("drop", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
    bad("max_length", lambda v: is_int(v) and 0 <= v <= INT_MAX)
    bad("expected_version", lambda v: is_int(v) and INT_MIN <= v <= INT_MAX)
    bad("if_version", lambda v: is_int(v) and INT_MIN <= v <= INT_MAX)
    bad("offset", lambda v: is_int(v) and 0 <= v <= INT_MAX)
    bad("limit", lambda v: is_int(v) and 0 <= v <= INT_MAX)
    bad("by", lambda v: is_number(v) and value_problem(v) is None)
    bad(
        "lease_seconds",
        lambda v: is_number(v) and value_problem(v) is None and v > 0 and math.isfinite(v),
    )
    # README "Blocking claims": seconds in [0, 3600], on a claim of its own (the engine
    # answers at once; the server parks).
    bad("wait", lambda v: is_number(v) and 0 <= v <= 3600 and not in_batch)
    bad(
        "order_by",
        lambda v: (
            isinstance(v, str)
            or (isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v))
        ),
    )
    if cmd == "ALTER_STATE" and isinstance(req.get("add"), dict):
        for spec in req["add"].values():
            if not isinstance(spec, dict) or set(spec) - {"type", "default"}:
                probs.append(("add", "ill-typed add spec"))
    return probs


def value_problems(req: dict[str, Any]) -> list[str]:
    """Non-msgpack values inside records, fields, where, if_match, defaults."""
    probs = []
    for k in ("record", "fields", "where", "if_match"):
        if isinstance(req.get(k), dict):
            p = value_problem(req[k])
            if p:
                probs.append(f"{k}: {p}")
    if isinstance(req.get("records"), list):
        for r in req["records"]:
            p = value_problem(r) if isinstance(r, dict) else "record is not a map"
            if p:
                probs.append(f"records: {p}")
    if isinstance(req.get("add"), dict):
        for spec in req["add"].values():
            if isinstance(spec, dict) and "default" in spec:
                p = value_problem(spec["default"])
                if p:
                    probs.append(f"add default: {p}")
    return probs


def dispatch(ctx: Ctx, w: World, req: Any, in_batch: bool) -> tuple[Any, Any, bool]:
    """Apply one request to `w` (mutated only on success). Returns (result, version, wrote)."""
    fp = first_problem(req, in_batch)
    if fp:
        raise MErr(fp[0], fp[1])
    cmd = req["command"]
    _, optional = COMMANDS[cmd]
    nulls = [k for k in optional if k in req and req[k] is None]
    if nulls and ctx.choose(2) == 0:
        # README is silent on an explicit null for an optional argument: absent, or ill-typed.
        req = {k: v for k, v in req.items() if k not in nulls}
    structural = structural_problems(req, in_batch)
    existence: set[str] = set()
    name = req.get("state")
    if isinstance(name, str) and name:
        if cmd in NEEDS_TABLE and name not in w.tables:
            existence.add("StateNotFound")
        if cmd == "CREATE_STATE" and name in w.tables:
            existence.add("StateExists")
    values = value_problems(req)
    if structural:
        # The README does not order a request's defects: a malformed argument may be reported
        # after a missing table or record, or after what the rest of the request gets wrong.
        t = w.tables.get(name) if isinstance(name, str) else None
        rid = req.get("id", _MISSING)
        if t is not None and cmd in NEEDS_TABLE and valid_id(rid) and find(t, rid) is _MISSING:
            missing(t, _MISSING, rid, existence)
        accepted = {"BadRequest"} | existence
        ev = req.get("expected_version")
        if t is not None and is_int(ev) and ev != t.version:
            accepted.add("VersionConflict")  # a precondition may be checked first, too
        bad = {a for a, _ in structural}
        required, optional = COMMANDS[cmd]
        # Run the rest of the request, with a neutral stand-in for a bad required argument
        # when one exists, and accept whatever else it gets wrong.
        neutral: dict[str, Any] = {"where": {}, "fields": {}, "records": []}
        if not existence and not (bad & required) - set(neutral):
            rest = {k: v for k, v in req.items() if k in optional | required and k not in bad}
            rest.update({k: copy.deepcopy(neutral[k]) for k in bad & required})
            rest["command"] = cmd
            try:
                HANDLERS[cmd](ctx, copy.deepcopy(w), rest, set())
            except MErr as e:
                accepted |= e.types
        raise MErr(accepted, "; ".join(m for _, m in structural))
    if existence:
        raise MErr(existence | ({"BadRequest"} if values else set()), f"table {name!r}")
    errs: set[str] = {"BadRequest"} if values else set()
    handler = HANDLERS[cmd]
    return handler(ctx, w, req, errs)


def fail(errs: set[str], why: str) -> None:
    if errs:
        raise MErr(errs, why)


# --- validation helpers --------------------------------------------------------------------


def check_preconditions(
    t: Table, rid: Any, req: dict[str, Any], errs: set[str], exists: bool
) -> None:
    if not exists:
        return  # a missing record is RecordNotFound first
    if "expected_version" in req and req["expected_version"] != t.version:
        errs.add("VersionConflict")
    if "if_version" in req and req["if_version"] != t.versions[rid]:
        errs.add("VersionConflict")
    for f, v in (req.get("if_match") or {}).items():
        if not t.known(f):
            errs.update({"SchemaError", "VersionConflict"})
        elif bad_condition(v):
            errs.update({"BadRequest", "VersionConflict"})
        elif not holds(t.records[rid], f, v):
            errs.add("VersionConflict")


def check_field_name(f: Any, errs: set[str]) -> bool:
    """False when `f` cannot be a field name at all."""
    if not isinstance(f, str) or f == "":
        errs.update({"BadRequest", "SchemaError"})
        return False
    if f == "_version":
        errs.add("SchemaError")
        return False
    return True


def check_id_value(t: Table, v: Any, errs: set[str]) -> None:
    if not valid_id(v):
        errs.update({"BadRequest", "SchemaError"})
    elif t.id_type == "integer" and not is_int(v):
        errs.add("SchemaError")
    elif t.id_type == "string" and not isinstance(v, str):
        errs.add("SchemaError")


def check_full_record(
    t: Table, rec: dict[str, Any], errs: set[str], fields: list[str] | None
) -> None:
    """`fields`: the schema to check against (None: this record sets it)."""
    for k, v in rec.items():
        if not check_field_name(k, errs) or k == "id":
            continue
        if fields is not None and k not in fields:
            errs.add("SchemaError")
        elif fields is not None and not type_fits(t.types.get(k, "any"), v):
            errs.add("SchemaError")
    if fields is not None:
        if any(f not in rec for f in fields):
            errs.add("SchemaError")


def record_fields(rec: dict[str, Any]) -> list[str]:
    return [k for k in rec if k != "id"]


def store(t: Table, rec: dict[str, Any]) -> dict[str, Any]:
    return {k: coerce(t.types.get(k, "any"), v) if k != "id" else v for k, v in rec.items()}


def check_patch_fields(t: Table, rid: Any, fields: dict[str, Any], errs: set[str]) -> None:
    for k, v in fields.items():
        if not check_field_name(k, errs):
            continue
        if k == "id":
            if not (valid_id(v) and type(v) is type(rid) and v == rid):
                errs.update(
                    {"ImmutableId"} | ({"BadRequest", "SchemaError"} if not valid_id(v) else set())
                )
        elif not t.known(k):
            errs.add("SchemaError")
        elif not type_fits(t.types.get(k, "any"), v):
            errs.add("SchemaError")


def is_inc(v: Any) -> bool:
    """A claim's ``{"$inc": n}`` (README "Leases and CLAIM_RECORD": attempt counters)."""
    return type(v) is dict and len(v) == 1 and "$inc" in v


def apply_patch(t: Table, rid: Any, fields: dict[str, Any]) -> None:
    rec = t.records[rid]
    for k, v in fields.items():
        if k != "id":
            rec[k] = coerce(t.types.get(k, "any"), v)


def same_id(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def find(t: Table, rid: Any) -> Any:
    """The key of record `rid` (type-strict: 1 and "1" differ), or a unique miss marker."""
    for k in t.records:
        if same_id(k, rid):
            return k
    return _MISSING


_MISSING = object()


def missing(t: Table, key: Any, rid: Any, errs: set[str]) -> None:
    errs.add("RecordNotFound")
    if t.id_type is not None:
        check_id_value(t, rid, errs)  # an id of the wrong declared type may be a SchemaError


def check_where(ctx: Ctx, t: Table, where: dict[str, Any], errs: set[str]) -> None:
    schemaless_ref = False
    for f in where:
        if not isinstance(f, str) or f == "":
            errs.update({"BadRequest", "SchemaError"})
        elif t.fields is None:
            schemaless_ref = True
        elif not t.known(f):
            errs.add("SchemaError")
        elif bad_condition(where[f]):
            errs.add("BadRequest")
    if schemaless_ref and ctx.choose(2):
        errs.add("SchemaError")  # README: unknown field; but no schema exists yet


def parse_order(ctx: Ctx, t: Table, order_by: Any, errs: set[str]) -> list[tuple[str, bool]]:
    if order_by is None:
        return []
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    if len(items) > 32:  # README "Limits": at most 32 keys
        errs.add("BadRequest")
    keys: list[tuple[str, bool]] = []
    schemaless_ref = False
    for it in items:
        desc = it.startswith("-")
        f = it[1:] if desc else it
        if f == "":
            errs.update({"BadRequest", "SchemaError"})
        elif t.fields is None:
            schemaless_ref = True
        elif not t.known(f):
            errs.update({"BadRequest", "SchemaError"})
        keys.append((f, desc))
    if schemaless_ref and ctx.choose(2):
        errs.update({"SchemaError", "BadRequest"})
    return keys


def ordered(
    t: Table, keys: list[tuple[str, bool]], view: Callable[[Any], dict[str, Any]]
) -> list[Any]:
    ids = list(t.records)
    for f, desc in reversed(keys):
        ids.sort(key=lambda k, f=f: sort_key(view(k).get(f)), reverse=desc)
    return ids


OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")


def operator_map(cond: Any) -> bool:
    """README: a map is an operator map only when non-empty and every key is an operator."""
    return isinstance(cond, dict) and bool(cond) and all(k in OPERATORS for k in cond)


def range_kind(v: Any) -> str | None:
    """Ranges compare numbers with numbers, strings with strings, bytes with bytes."""
    if isinstance(v, bool) or v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, int | float):
        return "number"
    return {str: "string", bytes: "bytes"}.get(type(v))


def bad_condition(cond: Any) -> bool:
    """An operator the engine refuses: a bound it cannot compare, `$in` without a list."""
    if not operator_map(cond):
        return False
    for op, arg in cond.items():
        if op in ("$in", "$nin") and not isinstance(arg, list):
            return True
        if op in ("$gt", "$gte", "$lt", "$lte") and range_kind(arg) is None:
            return True
    return False


def holds(rec: dict[str, Any], f: str, cond: Any) -> bool:
    has = f in rec
    for op, arg in cond.items() if operator_map(cond) else [("$eq", cond)]:
        if op in ("$eq", "$ne"):
            ok = has and msg_eq(rec[f], arg)
        elif op in ("$in", "$nin"):
            ok = has and any(msg_eq(rec[f], x) for x in arg)
        else:
            if not has or range_kind(rec[f]) is None or range_kind(rec[f]) != range_kind(arg):
                return False
            a, b = rec[f], arg
            ok = {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
            if not ok:
                return False
            continue
        if ok != (op in ("$eq", "$in")):
            return False
    return True


def matches(rec: dict[str, Any], where: dict[str, Any]) -> bool:
    return all(holds(rec, f, cond) for f, cond in where.items())


# --- handlers --------------------------------------------------------------------------------


MAX_INDEXES, MAX_INDEX_FIELDS = 16, 8


def index_list(v: Any, errs: set[str]) -> list[list[str]] | None:
    """README: a list of field names or lists of 1-8 distinct ones; None if malformed."""
    out = []
    if not isinstance(v, list):
        errs.add("BadRequest")
        return None
    for item in v:
        names = item if isinstance(item, list) else [item]
        if (
            not 1 <= len(names) <= MAX_INDEX_FIELDS
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            errs.add("BadRequest")
            return None
        out.append(list(names))
    return out


def add_indexes(t: Table, v: Any, errs: set[str]) -> None:
    """Declare indexes on *t*: known fields, none twice, at most 16."""
    new = index_list(v, errs)
    if new is None:
        return
    if t.fields is None:
        errs.add("SchemaError")
        return
    for i in new:
        if any(n != "id" and n not in t.fields for n in i) or i in t.indexes:
            errs.add("SchemaError")
        t.indexes.append(i)
    if len(t.indexes) > MAX_INDEXES:
        errs.add("BadRequest")


def h_create_state(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    t = Table(req["state"], max_length=req.get("max_length"))
    if t.max_length == 0 and ctx.choose(2):
        errs.add("BadRequest")
    if "schema" in req:
        schema = req["schema"]
        if not schema and ctx.choose(2):
            errs.update({"BadRequest", "SchemaError"})
        t.fields = []
        for f, ty in schema.items():
            if not check_field_name(f, errs):
                continue
            if not valid_type_name(ty):
                errs.update({"BadRequest", "SchemaError"})
            elif f == "id":
                if ty not in ("integer", "string"):
                    errs.update({"BadRequest", "SchemaError"})
                t.id_type = ty
            else:
                t.fields.append(f)
                t.types[f] = ty
    if "indexes" in req:
        add_indexes(t, req["indexes"], errs)
    fail(errs, "CREATE_STATE")
    w.tables[t.name] = t
    return t.info(), 0, True


def h_delete_state(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    fail(errs, "DELETE_STATE")
    del w.tables[req["state"]]
    return None, ANY_VERSION, True


def h_list_states(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    fail(errs, "LIST_STATES")
    return sorted(w.tables), None, False


def h_get_state_info(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    fail(errs, "GET_STATE_INFO")
    t = w.tables[req["state"]]
    return t.info(), t.version, False


def h_get_schema(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    fail(errs, "GET_SCHEMA")
    t = w.tables[req["state"]]
    return t.schema(), t.version, False


def table_or_new(w: World, name: str) -> tuple[Table, bool]:
    if name in w.tables:
        return w.tables[name], False
    return Table(name), True


def h_set_state(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    t, _new = table_or_new(w, req["state"])
    records = req["records"]
    if req.get("expected_version", t.version) != t.version:
        errs.add("VersionConflict")
    fields = t.fields
    if fields is None and records and isinstance(records[0], dict):
        fields = [f for f in record_fields(records[0]) if isinstance(f, str)]
    for r in records:
        if not isinstance(r, dict):
            errs.add("BadRequest")
            continue
        check_full_record(t, r, errs, fields)
        if "id" in r:
            check_id_value(t, r["id"], errs)
    kept = records if t.max_length is None else records[: t.max_length]
    ids_kept = [canon(r["id"]) for r in kept if isinstance(r, dict) and "id" in r]
    ids_all = [canon(r["id"]) for r in records if isinstance(r, dict) and "id" in r]
    if len(set(ids_kept)) != len(ids_kept):
        errs.add("DuplicateId")
    elif len(set(ids_all)) != len(ids_all) and ctx.choose(2):
        errs.add("DuplicateId")  # a duplicate among records truncated away
    if t.id_type and any(isinstance(r, dict) and "id" not in r for r in kept):
        if t.id_type == "string":
            errs.update({"SchemaError", "BadRequest"})
    auto = sum(1 for r in kept if isinstance(r, dict) and "id" not in r)
    first = max(
        [t.next_id] + [r["id"] + 1 for r in kept if isinstance(r, dict) and is_int(r.get("id"))]
    )
    if auto and first + auto - 1 > ID_MAX:
        errs.add("CapacityError")  # no auto-increment id left
    fail(errs, "SET_STATE")
    if t.fields is None and kept:
        t.fields = list(fields or [])
        t.types = dict.fromkeys(t.fields, "any")
    nxt = max([t.next_id] + [r["id"] + 1 for r in kept if is_int(r.get("id"))])
    t.records, t.versions, t.leases, t.expires = {}, {}, {}, {}
    for r in kept:
        rec = store(t, r)
        if "id" not in rec:
            rec = {"id": nxt, **rec}
            nxt += 1
        t.records[rec["id"]] = rec
        t.versions[rec["id"]] = w.seq + 1
    t.next_id = nxt
    t.version += 1
    w.tables[t.name] = t
    return len(kept), t.version, True


def h_create_record(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    t, _new = table_or_new(w, req["state"])
    rec = req["record"]
    if req.get("expected_version", t.version) != t.version:
        errs.add("VersionConflict")
    fields = t.fields
    if fields is None:
        fields_new = [f for f in record_fields(rec) if isinstance(f, str)]
        check_full_record(t, rec, errs, None)
    else:
        fields_new = fields
        check_full_record(t, rec, errs, fields)
    if "id" in rec:
        check_id_value(t, rec["id"], errs)
        if valid_id(rec["id"]) and find(t, rec["id"]) is not _MISSING:
            errs.add("DuplicateId")
    elif t.id_type == "string":
        errs.update({"SchemaError", "BadRequest"})
    elif t.next_id > ID_MAX:
        errs.add("CapacityError")  # no auto-increment id left
    if t.max_length is not None and len(t.records) >= t.max_length:
        errs.add("CapacityError")
    check_ttl(req, errs)
    fail(errs, "CREATE_RECORD")
    if t.fields is None:
        t.fields = list(fields_new)
        t.types = dict.fromkeys(t.fields, "any")
    stored = store(t, rec)
    if "id" in stored:
        rid = stored["id"]
        if is_int(rid):
            t.next_id = max(t.next_id, rid + 1)
    else:
        rid = t.next_id
        t.next_id += 1
        stored = {"id": rid, **stored}
    t.records[rid] = stored
    t.versions[rid] = w.seq + 1
    if req.get("ttl") is not None:
        t.expires[rid] = ctx.now + req["ttl"]
    t.version += 1
    w.tables[t.name] = t
    return t.out(rid), t.version, True


def h_set_record(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    rid = req["id"]
    key, _ = existing_checked(t, rid, req, errs)
    rec = req["record"]
    check_full_record(t, rec, errs, t.fields if t.fields is not None else None)
    if "id" in rec and not same_id(rec["id"], rid):
        errs.add("ImmutableId")
        if not valid_id(rec["id"]):
            errs.update({"BadRequest", "SchemaError"})
    check_ttl(req, errs)
    fail(errs, "SET_RECORD")
    stored = store(t, {k: v for k, v in rec.items() if k != "id"})
    t.records[key] = {"id": key, **stored}
    t.versions[key] = w.seq + 1
    t.leases.pop(key, None)
    t.expires.pop(key, None)  # README: SET_RECORD without ttl drops the deadline
    if req.get("ttl") is not None:
        t.expires[key] = ctx.now + req["ttl"]
    t.version += 1
    return t.out(key), t.version, True


def h_patch_record(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    rid = req["id"]
    key, exists = existing_checked(t, rid, req, errs)
    fields = req["fields"]
    check_patch_fields(t, rid, fields, errs)
    if not fields and ctx.choose(2):
        errs.add("BadRequest")
    renew = "lease_seconds" in req
    if renew and exists and t.leases.get(key) is None:
        errs.add("BadRequest")
    check_ttl(req, errs)
    fail(errs, "PATCH_RECORD")
    apply_patch(t, key, fields)
    t.versions[key] = w.seq + 1
    if req.get("ttl") is not None:
        t.expires[key] = ctx.now + req["ttl"]
    if renew:
        t.leases[key].deadline = ctx.now + req["lease_seconds"]
    else:
        lease = t.leases.get(key)
        # README lease rule 4: only a write to a field the claim set completes the lease.
        if lease is not None and any(f in lease.saved for f in fields if f != "id"):
            t.leases.pop(key, None)
    t.version += 1
    return t.out(key), t.version, True


def h_delete_record(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    key, _ = existing_checked(t, req["id"], req, errs)
    fail(errs, "DELETE_RECORD")
    del t.records[key]
    del t.versions[key]
    t.leases.pop(key, None)
    t.expires.pop(key, None)
    t.version += 1
    return None, t.version, True


def existing_checked(t: Table, rid: Any, req: dict[str, Any], errs: set[str]) -> tuple[Any, bool]:
    """A record write's target: its key and whether it exists (a missing one and failed
    preconditions noted in *errs*)."""
    key = find(t, rid)
    exists = key is not _MISSING
    if not exists:
        missing(t, key, req["id"], errs)
    check_preconditions(t, key, req, errs, exists)
    return key, exists


def check_ttl(req: dict[str, Any], errs: set[str]) -> None:
    ttl = req.get("ttl")
    if ttl is not None and not (is_number(ttl) and 0 < ttl < 10**9):
        errs.add("BadRequest")


def h_expire_record(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    """README "Record TTL": set (ttl seconds from now) or drop (null) the deadline."""
    t = w.tables[req["state"]]
    key, _ = existing_checked(t, req["id"], req, errs)
    check_ttl(req, errs)
    fail(errs, "EXPIRE_RECORD")
    t.expires.pop(key, None)
    if req["ttl"] is not None:
        t.expires[key] = ctx.now + req["ttl"]
    t.versions[key] = w.seq + 1
    t.version += 1
    return t.out(key), t.version, True


def h_get_record(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    key = find(t, req["id"])
    if key is _MISSING:
        missing(t, key, req["id"], errs)
    fail(errs, "GET_RECORD")
    return t.out(key), t.version, False


def h_list_records(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    where = req.get("where") or {}
    check_where(ctx, t, where, errs)
    keys = parse_order(ctx, t, req.get("order_by"), errs)
    fail(errs, "LIST_RECORDS")
    ids = [k for k in ordered(t, keys, lambda k: t.records[k]) if matches(t.records[k], where)]
    off = req.get("offset", 0)
    lim = req.get("limit")
    ids = ids[off:] if lim is None else ids[off : off + lim]
    return [t.out(k) for k in ids], t.version, False


def h_claim_record(
    ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]
) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    where = req["where"]
    fields = req["fields"]
    check_where(ctx, t, where, errs)
    keys = parse_order(ctx, t, req.get("order_by"), errs)
    late: set[str] = set()  # errors that may or may not be reported when nothing matches
    if req.get("expected_version", t.version) != t.version:
        late.add("VersionConflict")
    if not fields:
        late.add("BadRequest")
    incs = {k: v["$inc"] for k, v in fields.items() if is_inc(v)}  # README: attempts
    for k, v in fields.items():
        if not check_field_name(k, late):
            continue
        if k in incs:
            if not is_number(incs[k]) or (is_int(incs[k]) and not INT_MIN <= incs[k] <= INT_MAX):
                errs.add("BadRequest")  # refused before any record is looked at
                continue
            v = incs[k]
        if k == "id":
            late.update({"ImmutableId", "SchemaError", "BadRequest"})
        elif not t.known(k):
            late.add("SchemaError")
        elif not type_fits(t.types.get(k, "any"), v):
            late.add("SchemaError")
    if errs:
        raise MErr(errs | late, "CLAIM_RECORD")

    dead = check_dead_letter(t, req, incs, late)

    def claimable(k: Any) -> bool:
        # rule 1: a leased record is not claimable (one that ran out was put back by the
        # expiry commit before this command)
        return k not in t.leases and matches(t.records[k], where)

    pick = next((k for k in ordered(t, keys, lambda k: t.records[k]) if claimable(k)), _MISSING)
    if pick is _MISSING:
        if late and ctx.choose(2):
            raise MErr(late, "CLAIM_RECORD (nothing matched)")
        return None, t.version, False
    old = t.records[pick]
    if incs:
        fields = dict(fields)
        for k, n in incs.items():
            if not t.known(k) or not is_number(old.get(k)):
                late.add("SchemaError")
                continue
            total = old[k] + n
            if is_int(total) and not INT_MIN <= total <= INT_MAX:
                late.add("SchemaError")
            elif not type_fits(t.types.get(k, "any"), total):
                late.add("SchemaError")
            fields[k] = total
    fail(late, "CLAIM_RECORD")
    saved = {}
    for k in fields:
        if k not in incs:  # an attempt counter is not put back when the lease runs out
            saved[k] = copy.deepcopy(old[k])
    apply_patch(t, pick, fields)
    t.versions[pick] = w.seq + 1
    if "lease_seconds" in req:
        t.leases[pick] = Lease(ctx.now + req["lease_seconds"], saved, dead)
    else:
        t.leases.pop(pick, None)
    t.version += 1
    return t.out(pick), t.version, True


def check_dead_letter(
    t: Table, req: dict[str, Any], incs: dict[str, Any], late: set[str]
) -> tuple[str, int, dict[str, Any]] | None:
    """README "Dead letters": max_attempts and dead_letter together, with a lease and
    exactly one $inc counter; the dead-letter fields are checked like a patch."""
    if "max_attempts" not in req and "dead_letter" not in req:
        return None
    most, letter = req.get("max_attempts"), req.get("dead_letter")
    if (
        not is_int(most)
        or most < 1
        or not isinstance(letter, dict)
        or "lease_seconds" not in req
        or len(incs) != 1
    ):
        raise MErr({"BadRequest"} | late, "CLAIM_RECORD dead letter")
    for k, v in letter.items():
        if k == "id":
            raise MErr({"ImmutableId", "BadRequest", "SchemaError"} | late, "dead_letter id")
        if not t.known(k) or not type_fits(t.types.get(k, "any"), v):
            raise MErr({"SchemaError", "BadRequest"} | late, "dead_letter field")
    stored = {k: coerce(t.types.get(k, "any"), v) for k, v in letter.items()}
    return next(iter(incs)), most, stored


def h_increment(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    key, exists = existing_checked(t, req["id"], req, errs)
    f = req["field"]
    by = req.get("by", 1)
    if not isinstance(f, str):
        errs.update({"BadRequest", "SchemaError"})  # an ill-typed field name
    elif f == "id":
        errs.update({"ImmutableId", "SchemaError", "BadRequest"})
    elif f in ("_version", ""):
        errs.update({"SchemaError", "BadRequest"})
    elif not t.known(f):
        errs.add("SchemaError")
    else:
        base = t.types.get(f, "any").rstrip("?")
        if base == "integer" and not is_int(by):
            errs.update({"SchemaError", "BadRequest"})
        if base not in ("integer", "float", "any"):
            errs.add("SchemaError")
        if exists and not is_number(t.records[key][f]):
            errs.add("SchemaError")
    fail(errs, "INCREMENT")
    new = coerce(t.types.get(f, "any"), t.records[key][f] + by)
    t.records[key][f] = new
    t.versions[key] = w.seq + 1
    lease = t.leases.get(key)
    if lease is not None and f in lease.saved:  # README lease rule 4
        t.leases.pop(key, None)
    t.version += 1
    return new, t.version, True


def h_alter_state(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    t = w.tables[req["state"]]
    add = req.get("add") or {}
    drop = req.get("drop") or []
    if req.get("expected_version", t.version) != t.version:
        errs.add("VersionConflict")
    index_args = ("add_indexes", "drop_indexes")
    if not add and not drop and not any(req.get(k) for k in index_args) and ctx.choose(2):
        errs.add("BadRequest")
    if len(set(drop)) != len(drop) or set(drop) & set(add):
        if ctx.choose(2):
            errs.update({"BadRequest", "SchemaError"})
    for f in drop:
        if f == "id":
            errs.update({"SchemaError", "BadRequest", "ImmutableId"})
        elif t.fields is None or f not in t.fields:
            errs.add("SchemaError")
    new_types: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    for f, spec in add.items():
        if not check_field_name(f, errs):
            continue
        ty = spec.get("type", "any")
        default = spec.get("default")
        if f == "id" or (t.fields is not None and f in t.fields and f not in drop):
            errs.add("SchemaError")
        if not valid_type_name(ty):
            errs.update({"BadRequest", "SchemaError"})
        elif not type_fits(ty, default):
            errs.add("SchemaError")
        else:
            new_types[f] = ty
            defaults[f] = coerce(ty, default)
    indexes = [list(i) for i in t.indexes]
    dropped = index_list(req.get("drop_indexes") or [], errs)
    for i in dropped or []:
        if i in indexes:
            indexes.remove(i)
        else:
            errs.add("SchemaError")
    if any(f in i for f in drop for i in indexes):
        errs.add("SchemaError")  # a field an index keeps cannot be dropped
    if "add_indexes" in req and req["add_indexes"] is not None:
        after = Table(t.name, fields=[f for f in t.fields or [] if f not in drop] + list(add))
        after.indexes = indexes
        add_indexes(after, req["add_indexes"], errs)
        indexes = after.indexes
    fail(errs, "ALTER_STATE")
    t.indexes = indexes
    fields = list(t.fields or [])
    for f in dict.fromkeys(drop):
        fields.remove(f)
        t.types.pop(f, None)
        for r in t.records.values():
            r.pop(f, None)
        for ls in t.leases.values():
            ls.saved.pop(f, None)
    for f in add:
        fields.append(f)
        t.types[f] = new_types[f]
        for r in t.records.values():
            r[f] = copy.deepcopy(defaults[f])
    t.fields = fields
    for k in t.versions:
        t.versions[k] = w.seq + 1
    if t.leases and ctx.choose(2):
        t.leases = {}  # README is silent on whether ALTER_STATE completes leases
    t.version += 1
    return t.info(), t.version, True


def h_batch(ctx: Ctx, w: World, req: dict[str, Any], errs: set[str]) -> tuple[Any, Any, bool]:
    fail(errs, "BATCH")
    commands = req["commands"]
    if not commands and ctx.choose(2):
        raise MErr({"BadRequest"}, "empty BATCH")
    first_bad: tuple[int, frozenset[str]] | None = None
    for j, sub in enumerate(commands):
        fp = first_problem(sub, in_batch=True)
        if fp is None and structural_problems(sub, in_batch=True):
            fp = (frozenset({"BadRequest"}), "structural")
        if fp:
            first_bad = (j, fp[0])
            break
    work = copy.deepcopy(w)
    results = []
    wrote = False
    for i, sub in enumerate(commands):
        try:
            r, _v, wr = dispatch(ctx, work, sub, in_batch=True)
        except MErr as e:
            if first_bad is not None and first_bad[0] > i and ctx.choose(2):
                raise MErr(first_bad[1], "pre-validated sub-command", first_bad[0]) from None
            raise MErr(e.types, e.why, i) from None
        results.append(r)
        wrote = wrote or wr
    if not wrote:
        wrote = bool(ctx.choose(2))  # does a read-only BATCH commit? README is silent
    w.tables = work.tables
    return results, None, wrote


HANDLERS: dict[str, Callable[[Ctx, World, dict[str, Any], set[str]], tuple[Any, Any, bool]]] = {
    "CREATE_STATE": h_create_state,
    "DELETE_STATE": h_delete_state,
    "LIST_STATES": h_list_states,
    "GET_STATE_INFO": h_get_state_info,
    "GET_SCHEMA": h_get_schema,
    "SET_STATE": h_set_state,
    "CREATE_RECORD": h_create_record,
    "SET_RECORD": h_set_record,
    "PATCH_RECORD": h_patch_record,
    "DELETE_RECORD": h_delete_record,
    "EXPIRE_RECORD": h_expire_record,
    "GET_RECORD": h_get_record,
    "LIST_RECORDS": h_list_records,
    "CLAIM_RECORD": h_claim_record,
    "INCREMENT": h_increment,
    "ALTER_STATE": h_alter_state,
    "BATCH": h_batch,
}


# --- matching a reply ----------------------------------------------------------------------


def normalize_result(request: Any, result: Any) -> Any:
    """Make a result comparable: info maps drop an undeclared `id` type (both sides)."""
    if not isinstance(request, dict):
        return result
    cmd = request.get("command")
    if cmd in INFO_RESULT:
        return normalize_info(result)
    if cmd == "BATCH" and isinstance(result, list) and isinstance(request.get("commands"), list):
        return [normalize_result(s, r) for s, r in zip(request["commands"], result, strict=False)]
    return result


def mismatch(o: Outcome, request: Any, reply: Any) -> str | None:
    """Why `reply` is not `o` (None when it is)."""
    if not isinstance(reply, dict):
        return f"reply is not a map: {reply!r}"
    extra = {"req_id"} if isinstance(request, dict) and "req_id" in request else set()
    if extra:
        if canon(reply.get("req_id")) != canon(request["req_id"]):
            return "req_id not echoed"
    if o.ok:
        if set(reply) != {"ok", "result", "version", "seq"} | extra:
            return f"ok reply keys {sorted(reply)}"
        if reply["ok"] is not True:
            return "expected ok"
        if canon(normalize_result(request, reply["result"])) != canon(
            normalize_result(request, o.result)
        ):
            return "result differs"
        if o.version is not ANY_VERSION and canon(reply["version"]) != canon(o.version):
            return f"version {reply['version']!r} != {o.version!r}"
        if o.version is ANY_VERSION and not (reply["version"] is None or is_int(reply["version"])):
            return "version"
        if canon(reply["seq"]) != canon(o.seq):
            return f"seq {reply['seq']!r} != {o.seq!r}"
        return None
    if set(reply) != {"ok", "error"} | extra:
        return f"error reply keys {sorted(reply)}"
    if reply["ok"] is not False:
        return "expected an error"
    err = reply["error"]
    if not isinstance(err, dict) or set(err) != {"type", "message"}:
        return f"malformed error {err!r}"
    if err["type"] not in o.errors:
        return f"error type {err['type']} not in {sorted(o.errors)}"
    if not isinstance(err["message"], str) or not err["message"]:
        return "empty error message"
    if o.index is not None and not err["message"].startswith(f"commands[{o.index}]"):
        return f"message {err['message']!r} lacks prefix commands[{o.index}]"
    return None
