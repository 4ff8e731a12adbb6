"""Linearizability and snapshot-consistency checker for recorded histories.

``check(operations)`` decides whether a concurrent history (see
:mod:`stateengine.testing.history`) can be explained by some order of the operations
that respects real time (an operation that completed before another was invoked comes
first) and the product's sequential command semantics (README "Wire protocol"): the
Wing & Gong search with Lowe's memoization, as in porcupine.

How the search is kept small:

- **Sequential prefix.** Operations at the start of the history that do not overlap
  anything (the setup: ``CREATE_STATE``, ``SET_STATE``, a first batch of records) are
  applied in order to one global model state; the rest is checked from there.
- **Partitions (P-compositionality).** Record commands (``GET_RECORD``, ``SET_RECORD``,
  ``PATCH_RECORD``, ``DELETE_RECORD``, ``INCREMENT``, ``CREATE_RECORD`` with an explicit
  id) touch one record; table commands (``LIST_RECORDS``, ``CLAIM_RECORD``, ``SET_STATE``,
  ``CREATE_RECORD`` with an auto id, ``GET_STATE_INFO``, any ``expected_version``) the whole
  table; ``SNAPSHOT`` and ``BATCH`` touch the union of their parts. Union-find on what
  the operations touch gives independent partitions, each searched alone. A table that
  does not exist after the prefix, or that is created, dropped, replaced or altered
  later, is one partition.
- **Memoization** on (linearized set, model state); the linearized set is kept as the
  index of the first unlinearized operation plus a small window bitset.
- **Reads first.** A read that may come next and that the current state explains is
  linearized at once, without branching: nothing has to precede it and it changes
  nothing, so any explanation from there can be rearranged to take it first.
- **seq order.** Recorded writes are linearized in ``seq`` order, and a write of
  unknown outcome only where the recorded ``seq``s leave a free one (below).

Model choices:

- ``_version`` and ``seq``. ``_version`` is the global ``seq`` of the record's last
  write, which no per-partition model can predict, so a write takes the ``seq`` of its
  reply (or the ``_version`` of the record it returned) and the model then compares
  ``_version`` exactly: that is what catches a stale read (an old value *and* its old
  ``_version``, even when a later write put the same value back). Writes are also
  linearized in ``seq`` order (the writer commits in that order). A write of unknown
  outcome that took effect has a ``seq`` no recorded write has (``seq`` is dense), so it
  is linearized only where the recorded ``seq``s leave a free one, and takes it as its
  ``_version`` (past the last recorded write, or with too many free ones, a placeholder
  that matches any ``_version`` no recorded write has, and ``if_version`` against it
  may pass or fail).
- Initial state: every table starts nonexistent unless the history creates it (use the
  sequential prefix for setup) or ``initial`` declares it as ``{table: {id: record}}``;
  a declared table's version is unknown (``expected_version`` may pass or fail), its
  auto-increment counter is assumed to be past its largest integer id.
- Leases: the writer's wall clock is not recorded, so a lease granted by a claim or
  renewal over ``[invoke, complete]`` *may* have expired for a later operation whose
  completion is at least ``lease_seconds`` after that invocation, and *may* still be
  live for one invoked less than ``lease_seconds`` after that completion (both with
  :data:`LEASE_SLACK_NS` of slack for the two clocks). A claim is explained when some
  choice of expiries makes it pick what it returned. Two claims that get the same
  record while the first lease must still be live (or without a lease, after the first
  changed the record so that it no longer matches) are rejected.
- Errors that do not depend on the state (``BadRequest``, ``SchemaError``,
  ``ImmutableId``, ...; the schema is not modelled) are taken as "no effect" and not
  checked; ``RecordNotFound``, ``VersionConflict``, ``DuplicateId``, ``StateNotFound``,
  ``StateExists`` and ``CapacityError`` are reads of the state and are checked.
  ``LIST_STATES``, ``GET_SCHEMA`` and ``STATS`` are not checked (counted as unchecked).
  A *write* command without a model (a command added to the command table and not
  here) is never taken as "no effect": :func:`check` refuses the history
  (:class:`UnmodelledCommand`).
- ``SNAPSHOT`` is one operation: all its reads must be explained by one state at one
  point of its interval (a ``BATCH`` likewise applies all its commands at one point).
- Reads of unknown outcome say nothing and are dropped; writes of unknown outcome may
  take effect at any later point or never (porcupine's "return time +inf").

Failure reports: for each failing partition (up to :data:`REPORTED_FAILURES`), the
smallest failing sub-history found by delta debugging (the shortest failing prefix, then
chunks dropped together with the operations that observed their writes, keeping only
removals after which the search still gets stuck at the same operation for the same
kind of reason), as a timeline per process, and what the model allowed instead of each
operation it got stuck at. A partition longer than :data:`SHRINK_FROM_START_MAX` is
shrunk from the state the search reached at its deepest point (shown, with the writes
that produced it).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from stateengine import command_table, query
from stateengine.errors import BadRequest
from stateengine.protocol import order_records, parse_order_by, values_equal
from stateengine.testing.history import Operation, read_history

INF: Final = float("inf")
#: Slack between the writer's wall clock and CLOCK_MONOTONIC when judging lease expiry.
LEASE_SLACK_NS: Final = 100_000_000

#: Partitions up to this size are shrunk from the initial state; longer ones from the
#: deepest point of the failed search (shrinking a long history from its start is slow,
#: and its report would be long).
SHRINK_FROM_START_MAX: Final = 400

#: Failing partitions shrunk and reported in detail (the others are named).
REPORTED_FAILURES: Final = 3

#: Error types that are reads of the state: the model must explain them.
CHECKED_ERRORS: Final = frozenset(
    {
        "RecordNotFound",
        "VersionConflict",
        "DuplicateId",
        "StateNotFound",
        "StateExists",
        "CapacityError",
    }
)
# The command sets come from the command table (stateengine/command_table.py), read
# live by the search so that a command registered later (a test's dummy) is judged too;
# these constants are the table as imported, for readers of the checker.
RECORD_COMMANDS: Final = frozenset(
    name for name, spec in command_table.COMMANDS.items() if spec.scope == "record"
)
TABLE_COMMANDS: Final = frozenset(
    name for name, spec in command_table.COMMANDS.items() if spec.scope == "table"
)
WRITE_COMMANDS: Final = command_table.writes()
#: Commands that replace or (re)create a table: its records cannot be checked apart.
#: (A model property, not the table's: a table-scope write may keep the records apart,
#: as CLAIM_RECORD does.)
RESHAPING_COMMANDS: Final = frozenset({"SET_STATE", "CREATE_STATE", "DELETE_STATE", "ALTER_STATE"})


def _writes(command: Any) -> bool:
    spec = command_table.COMMANDS.get(command) if isinstance(command, str) else None
    return spec is not None and spec.writes


def _table_scope(command: Any) -> bool:
    spec = command_table.COMMANDS.get(command) if isinstance(command, str) else None
    return spec is not None and spec.scope == "table"


class UnmodelledCommand(ValueError):
    """The history holds a write command the checker has no model for.

    Refused rather than taken as "no effect": a write the model does not apply would
    make every later read look stale, or hide a real anomaly. Give it a model
    (:func:`modelled`, or an entry in :data:`MODELS`) first.
    """


# --- canonical, hashable values ------------------------------------------------------------


class _Tag:
    """Tags for frozen containers and bools (so that ``True`` and ``1`` stay apart)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_LIST: Final = _Tag("list")
_MAP: Final = _Tag("map")
_BOOL: Final = _Tag("bool")


def freeze(value: Any) -> Any:
    """A hashable value equal for values ``values_equal`` calls equal (``1 == 1.0``)."""
    t = type(value)
    if t is str or t is int or t is float or value is None or t is bytes:
        return value
    if t is bool:
        return (_BOOL, value)
    if t is list or t is tuple:
        return (_LIST, tuple(freeze(v) for v in value))
    if t is dict:
        return (_MAP, frozenset((k, freeze(v)) for k, v in value.items()))
    return (type(value).__name__, repr(value))


def _freeze_record(data: dict[str, Any]) -> frozenset[tuple[str, Any]]:
    return frozenset((k, freeze(v)) for k, v in data.items() if k != "_version")


# --- the model state -----------------------------------------------------------------------


class Lease:
    """A claim's lease: the values it overwrote and the interval it was granted in."""

    __slots__ = ("_key", "hi", "lo", "prior", "secs")

    def __init__(self, prior: dict[str, Any], lo: int, hi: float, secs: int) -> None:
        self.prior = prior
        self.lo = lo
        self.hi = hi
        self.secs = secs
        self._key = (_freeze_record(prior), lo, hi, secs)

    def may_expire_for(self, lo: int, hi: float) -> bool:
        return hi - self.lo >= self.secs - LEASE_SLACK_NS

    def may_live_for(self, lo: int, hi: float) -> bool:
        return lo - self.hi < self.secs + LEASE_SLACK_NS

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lease) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


class Entry:
    """One record: its fields (``id`` included, ``_version`` apart), version and lease.

    ``vers`` is the ``seq`` of its last write, or a placeholder <= 0 when that is unknown.
    """

    __slots__ = ("_hash", "_key", "data", "id", "lease", "vers")

    def __init__(self, rid: Any, data: dict[str, Any], vers: int, lease: Lease | None) -> None:
        self.id = rid
        self.data = data
        self.vers = vers
        self.lease = lease
        self._key = (rid, _freeze_record(data), vers, lease)
        self._hash = hash(self._key)

    def record(self) -> dict[str, Any]:
        return {**self.data, "_version": self.vers if self.vers > 0 else "?"}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and self._hash == other._hash and self._key == other._key

    def __hash__(self) -> int:
        return self._hash


class TableState:
    """One table as far as a partition knows it.

    ``partial``: only some records are in this partition (record-level checks), so size,
    order, version and counter are not known. ``version``/``next_id`` None: unknown.
    """

    __slots__ = (
        "_hash",
        "_index",
        "exists",
        "max_length",
        "next_id",
        "partial",
        "records",
        "version",
    )

    def __init__(
        self,
        exists: bool,
        version: int | None = 0,
        next_id: int | None = 1,
        max_length: int | None = None,
        records: tuple[Entry, ...] = (),
        partial: bool = False,
    ) -> None:
        self.exists = exists
        self.version = version
        self.next_id = next_id
        self.max_length = max_length
        self.records = records
        self.partial = partial
        self._index: dict[Any, int] | None = None
        self._hash = hash((exists, version, next_id, max_length, records, partial))

    def find(self, rid: Any) -> int:
        """The position of record *rid*, or -1."""
        if self._index is None:
            self._index = {(type(e.id), e.id): i for i, e in enumerate(self.records)}
        return self._index.get((type(rid), rid), -1)

    def get(self, rid: Any) -> Entry | None:
        i = self.find(rid)
        return None if i < 0 else self.records[i]

    def replace(self, **changes: Any) -> TableState:
        args: dict[str, Any] = {
            "exists": self.exists,
            "version": self.version,
            "next_id": self.next_id,
            "max_length": self.max_length,
            "records": self.records,
            "partial": self.partial,
        }
        args.update(changes)
        return TableState(**args)

    def bump(self) -> int | None:
        return None if self.version is None else self.version + 1

    def put(self, entry: Entry) -> TableState:
        """The table with *entry* written (in place if it exists, else appended)."""
        i = self.find(entry.id)
        if i < 0:
            records = (*self.records, entry)
        else:
            records = (*self.records[:i], entry, *self.records[i + 1 :])
        return self.replace(records=records, version=self.bump())

    def remove(self, rid: Any) -> TableState:
        i = self.find(rid)
        return self.replace(records=self.records[:i] + self.records[i + 1 :], version=self.bump())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TableState)
            and self._hash == other._hash
            and self.exists == other.exists
            and self.version == other.version
            and self.next_id == other.next_id
            and self.max_length == other.max_length
            and self.records == other.records
            and self.partial == other.partial
        )

    def __hash__(self) -> int:
        return self._hash


NO_TABLE: Final = TableState(False)


class State:
    """The model state of one partition: the tables it touches, and the highest ``seq``
    of a write linearized so far (writes commit in ``seq`` order)."""

    __slots__ = ("_hash", "seq", "tables")

    def __init__(self, tables: dict[str, TableState], seq: int = 0) -> None:
        self.tables = tables
        self.seq = seq
        self._hash = hash((frozenset(tables.items()), seq))

    def table(self, name: Any) -> TableState:
        return self.tables.get(name, NO_TABLE) if isinstance(name, str) else NO_TABLE

    def with_table(self, name: str, table: TableState) -> State:
        tables = dict(self.tables)
        tables[name] = table
        return State(tables, self.seq)

    def with_seq(self, seq: int) -> State:
        return State(self.tables, seq)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State) or self._hash != other._hash:
            return False
        return self.seq == other.seq and self.tables == other.tables

    def __hash__(self) -> int:
        return self._hash


# --- outcomes and the sequential model ---------------------------------------------------

#: ``("ok", kind, value)`` or ``("err", type)``; kinds say how to compare with a reply.
Outcome = tuple[Any, ...]


@dataclass(frozen=True)
class Ctx:
    """What one application of an operation knows besides the state."""

    seq: int  # the seq its write gets (a placeholder <= 0 when unknown)
    lo: int  # invocation time
    hi: float  # completion time (INF when unknown)
    known_seqs: frozenset[int]


def _err(kind: str) -> Outcome:
    return ("err", kind)


def _preconditions(
    table: TableState, entry: Entry | None, req: dict[str, Any], ctx: Ctx
) -> list[str | None]:
    """Possible precondition verdicts: None (all hold) and/or "VersionConflict"."""
    verdicts: set[str | None] = {None}
    expected = req.get("expected_version")
    if expected is not None:
        if table.version is not None and table.version != expected:
            return ["VersionConflict"]
        if table.version is None:
            verdicts.add("VersionConflict")
    if entry is not None:
        if_version = req.get("if_version")
        if if_version is not None:
            if entry.vers > 0:
                if entry.vers != if_version:
                    return ["VersionConflict"]
            elif if_version in ctx.known_seqs or if_version <= 0:
                return ["VersionConflict"]
            else:
                verdicts.add("VersionConflict")
        if_match = req.get("if_match")
        if isinstance(if_match, dict):
            try:
                holds = query.matches(entry.data, if_match)
            except BadRequest:
                return ["BadRequest"]
            if not holds:
                return ["VersionConflict"]
    return sorted(verdicts, key=lambda v: v is not None)


def _strip_id(fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "id"} if isinstance(fields, dict) else {}


def _lease_ns(req: dict[str, Any]) -> int | None:
    secs = req.get("lease_seconds")
    return None if secs is None else int(float(secs) * 1e9)


Branches = list[tuple[Outcome, State]]


def _get_record(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    table = state.table(req.get("state"))
    if not table.exists:
        return [(_err("StateNotFound"), state)]
    entry = table.get(req.get("id"))
    if entry is None:
        return [(_err("RecordNotFound"), state)]
    return [(("ok", "record", entry), state)]


def _write_record(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    """SET_RECORD, PATCH_RECORD, DELETE_RECORD, INCREMENT."""
    name = req.get("state")
    table = state.table(name)
    if not table.exists:
        return [(_err("StateNotFound"), state)]
    rid = req.get("id")
    entry = table.get(rid)
    if entry is None:
        return [(_err("RecordNotFound"), state)]
    assert isinstance(name, str)
    out: Branches = []
    for verdict in _preconditions(table, entry, req, ctx):
        if verdict is not None:
            out.append((_err(verdict), state))
            continue
        command = req["command"]
        lease = entry.lease
        if command == "DELETE_RECORD":
            out.append((("ok", "none", None), state.with_table(name, table.remove(rid))))
        elif command == "SET_RECORD":
            data = {"id": rid, **_strip_id(req.get("record"))}
            new = Entry(rid, data, ctx.seq, None)
            out.append((("ok", "record", new), state.with_table(name, table.put(new))))
        elif command == "PATCH_RECORD":
            patch = _strip_id(req.get("fields"))
            secs = _lease_ns(req)
            if secs is not None:
                if lease is None:
                    out.append((_err("BadRequest"), state))
                    continue
                lease = Lease(lease.prior, ctx.lo, ctx.hi, secs)
            elif lease is not None and any(k in lease.prior for k in patch):
                lease = None  # rule 4: a claimed field changed: the lease is complete
            new = Entry(rid, {**entry.data, **patch}, ctx.seq, lease)
            out.append((("ok", "record", new), state.with_table(name, table.put(new))))
        else:  # INCREMENT
            fname = req.get("field")
            by = req.get("by", 1)
            current = entry.data.get(fname)  # type: ignore[arg-type]
            if type(current) not in (int, float) or type(by) not in (int, float):
                out.append((_err("SchemaError"), state))
                continue
            value = current + by
            if lease is not None and fname in lease.prior:
                lease = None
            new = Entry(rid, {**entry.data, fname: value}, ctx.seq, lease)  # type: ignore[dict-item]
            out.append((("ok", "value", value), state.with_table(name, table.put(new))))
    return out


def _create_record(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    name = req.get("state")
    if not isinstance(name, str):
        return []
    table = state.table(name)
    if not table.exists:
        table = TableState(True, 0, 1, None, (), table.partial)
    raw = req.get("record")
    raw = raw if isinstance(raw, dict) else {}
    out: Branches = []
    for verdict in _preconditions(table, None, req, ctx):
        if verdict is not None:
            out.append((_err(verdict), state))
            continue
        if (
            not table.partial
            and table.max_length is not None
            and len(table.records) >= table.max_length
        ):
            out.append((_err("CapacityError"), state))
            continue
        if "id" in raw:
            rid = raw["id"]
            if table.get(rid) is not None:
                out.append((_err("DuplicateId"), state))
                continue
            next_id = table.next_id
            if next_id is not None and type(rid) is int and rid >= next_id:
                next_id = rid + 1
        else:
            if table.next_id is None:
                continue  # counter unknown: the effect cannot be modelled (documented)
            rid = table.next_id
            next_id = rid + 1
        new = Entry(rid, {"id": rid, **_strip_id(raw)}, ctx.seq, None)
        put = table.put(new).replace(next_id=next_id)
        out.append((("ok", "record", new), state.with_table(name, put)))
    return out


def _list_records(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    table = state.table(req.get("state"))
    if not table.exists:
        return [(_err("StateNotFound"), state)]
    try:
        where = query.compile_where(req.get("where"))[1]
    except BadRequest:
        return [(_err("BadRequest"), state)]
    entries = [e for e in table.records if where(e.data)]
    keys = parse_order_by(req.get("order_by"))
    if keys:
        entries = order_records(entries, keys, get=lambda e: e.data)
    offset = req.get("offset") or 0
    limit = req.get("limit")
    end = None if limit is None else offset + limit
    return [(("ok", "records", tuple(entries[offset:end])), state)]


def _is_increment(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and "$inc" in value


def _incremented(patch: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A claim's fields with each ``{"$inc": n}`` replaced by the old value plus n (a
    field that holds no number keeps the map: the server refuses such a claim, and the
    recorded reply says so)."""
    out = dict(patch)
    for name, value in patch.items():
        if _is_increment(value):
            current, amount = old.get(name), value["$inc"]
            if type(current) in (int, float) and type(amount) in (int, float):
                out[name] = current + amount
    return out


def _claim_record(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    name = req.get("state")
    table = state.table(name)
    if not table.exists:
        return [(_err("StateNotFound"), state)]
    assert isinstance(name, str)
    out: Branches = []
    for verdict in _preconditions(table, None, req, ctx):
        if verdict is not None:
            out.append((_err(verdict), state))
            continue
        try:
            where = query.compile_where(req.get("where"))[1]
        except BadRequest:
            out.append((_err("BadRequest"), state))
            continue
        # (view, entry, may be skipped as live-leased)
        candidates: list[tuple[dict[str, Any], Entry, bool]] = []
        for entry in table.records:
            held = entry.lease
            if held is None:
                view, maybe_live = entry.data, False
            else:
                if not held.may_expire_for(ctx.lo, ctx.hi):
                    continue  # rule 1: certainly live
                view = {**entry.data, **held.prior}
                maybe_live = held.may_live_for(ctx.lo, ctx.hi)
            if where(view):
                candidates.append((view, entry, maybe_live))
        keys = parse_order_by(req.get("order_by"))
        if keys:
            candidates = order_records(candidates, keys, get=lambda c: c[0])
        patch = _strip_id(req.get("fields"))
        secs = _lease_ns(req)
        for _, entry, maybe_live in candidates:
            old = entry.data
            lease: Lease | None = None
            if secs is not None:
                prior = {k: old.get(k) for k in patch if not _is_increment(patch[k])}
                if entry.lease is not None:
                    prior.update(entry.lease.prior)
                lease = Lease(prior, ctx.lo, ctx.hi, secs)
            data = {**old, **_incremented(patch, old)}
            new = Entry(entry.id, data, ctx.seq, lease)
            out.append((("ok", "record", new), state.with_table(name, table.put(new))))
            if not maybe_live:
                break  # every later candidate would come after this one
        else:
            out.append((("ok", "none", None), state))
    return out


def _set_state(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    name = req.get("state")
    if not isinstance(name, str):
        return []
    table = state.table(name)
    if not table.exists:
        table = TableState(True, 0, 1)
    out: Branches = []
    for verdict in _preconditions(table, None, req, ctx):
        if verdict is not None:
            out.append((_err(verdict), state))
            continue
        raws = [r for r in req.get("records") or [] if isinstance(r, dict)]
        if table.max_length is not None:
            raws = raws[: table.max_length]
        next_id = table.next_id
        for raw in raws:
            rid = raw.get("id")
            if next_id is not None and type(rid) is int and rid >= next_id:
                next_id = rid + 1
        entries: list[Entry] = []
        for raw in raws:
            if "id" in raw:
                rid = raw["id"]
            elif next_id is None:
                return out  # counter unknown (documented)
            else:
                rid, next_id = next_id, next_id + 1
            entries.append(Entry(rid, {"id": rid, **_strip_id(raw)}, ctx.seq, None))
        new = table.replace(
            exists=True, version=table.bump(), next_id=next_id, records=tuple(entries)
        )
        out.append((("ok", "value", len(entries)), state.with_table(name, new)))
    return out


def _create_state(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    name = req.get("state")
    if not isinstance(name, str):
        return []
    if state.table(name).exists:
        return [(_err("StateExists"), state)]
    new = TableState(True, 0, 1, req.get("max_length"))
    return [(("ok", "info", new), state.with_table(name, new))]


def _delete_state(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    name = req.get("state")
    if not state.table(name).exists:
        return [(_err("StateNotFound"), state)]
    assert isinstance(name, str)
    return [(("ok", "none", None), state.with_table(name, NO_TABLE))]


def _alter_state(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    name = req.get("state")
    table = state.table(name)
    if not table.exists:
        return [(_err("StateNotFound"), state)]
    assert isinstance(name, str)
    out: Branches = []
    for verdict in _preconditions(table, None, req, ctx):
        if verdict is not None:
            out.append((_err(verdict), state))
            continue
        add = req.get("add") or {}
        drop = set(req.get("drop") or [])
        defaults = {k: (v or {}).get("default") for k, v in add.items()}
        entries = []
        for e in table.records:
            data = {k: v for k, v in e.data.items() if k not in drop}
            data.update(defaults)
            lease = e.lease
            if lease is not None:
                prior = {k: v for k, v in lease.prior.items() if k not in drop}
                lease = Lease(prior, lease.lo, lease.hi, lease.secs)
            entries.append(Entry(e.id, data, ctx.seq, lease))
        new = table.replace(version=table.bump(), records=tuple(entries))
        out.append((("ok", "info", new), state.with_table(name, new)))
    return out


def _get_state_info(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    table = state.table(req.get("state"))
    if not table.exists:
        return [(_err("StateNotFound"), state)]
    return [(("ok", "info", table), state)]


def _batch(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    branches: list[tuple[list[Outcome], State]] = [([], state)]
    errors: list[str] = []
    for sub in req.get("commands") or []:
        nxt: list[tuple[list[Outcome], State]] = []
        for results, st in branches:
            # A command the model does not know (LIST_STATES, GET_SCHEMA) reads only.
            for outcome, st2 in apply(st, sub, ctx) or [(("ok", "any", None), st)]:
                if outcome[0] == "err":
                    if outcome[1] not in errors:
                        errors.append(outcome[1])
                else:
                    nxt.append(([*results, outcome], st2))
        branches = nxt
    out: Branches = [(("ok", "batch", tuple(r)), st) for r, st in branches]
    out.extend((_err(e), state) for e in errors)
    return out


def _snapshot(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    results = []
    for read in req.get("reads") or []:
        branches = apply(state, read, ctx)
        results.append(branches[0][0] if branches else ("ok", "any", None))
    return [(("ok", "snapshot", tuple(results)), state)]


#: A command's sequential model: every outcome it allows on a state, with the next state.
Model = Callable[[State, dict[str, Any], Ctx], Branches]

#: command → model. A read without one is not checked (``LIST_STATES``, ``GET_SCHEMA``,
#: ``STATS``, counted as unchecked); a write without one makes :func:`check` refuse the
#: history (:class:`UnmodelledCommand`). ``SNAPSHOT`` is the history's own.
MODELS: Final[dict[str, Model]] = {
    "GET_RECORD": _get_record,
    "SET_RECORD": _write_record,
    "PATCH_RECORD": _write_record,
    "DELETE_RECORD": _write_record,
    "INCREMENT": _write_record,
    "CREATE_RECORD": _create_record,
    "LIST_RECORDS": _list_records,
    "CLAIM_RECORD": _claim_record,
    "SET_STATE": _set_state,
    "CREATE_STATE": _create_state,
    "DELETE_STATE": _delete_state,
    "ALTER_STATE": _alter_state,
    "GET_STATE_INFO": _get_state_info,
    "BATCH": _batch,
    "SNAPSHOT": _snapshot,
}


def apply(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    """Every outcome the sequential model allows for *req* on *state*, with the next state.

    More than one branch only where the model cannot know (a lease that may or may not
    have run out, an unknown table version or record version).
    """
    handler = MODELS.get(req.get("command", ""))
    return [] if handler is None else handler(state, req, ctx)


@contextmanager
def modelled(command: str, model: Model) -> Iterator[None]:
    """Give *command* a model for the block (a command added to the table, in a test).

    :raises ValueError: *command* has a model already.
    """
    if command in MODELS:
        raise ValueError(f"{command} has a model already")
    MODELS[command] = model
    try:
        yield
    finally:
        MODELS.pop(command, None)


def _unmodelled_writes(req: dict[str, Any]) -> Iterator[str]:
    """The write commands in *req* (a BATCH's included) that have no model."""
    command = req.get("command")
    if command in ("BATCH", "SNAPSHOT"):
        for sub in req.get("commands" if command == "BATCH" else "reads") or []:
            if isinstance(sub, dict):
                yield from _unmodelled_writes(sub)
    elif _writes(command) and command not in MODELS:
        yield str(command)


def refuse_unmodelled(operations: Iterable[Operation]) -> None:
    """Refuse a history with a write command the checker cannot model.

    :raises UnmodelledCommand: naming the commands and how many operations hold them.
    """
    counts: dict[str, int] = {}
    for op in operations:
        for command in _unmodelled_writes(op.request()):
            counts[command] = counts.get(command, 0) + 1
    if counts:
        found = ", ".join(f"{c} ({n} operations)" for c, n in sorted(counts.items()))
        raise UnmodelledCommand(
            f"the history holds write commands the checker has no model for: {found}; "
            "a write it cannot model cannot be taken as 'no effect'. Add a model "
            "(stateengine.testing.checker.MODELS, or modelled() in a test) first."
        )


# --- comparing outcomes with replies --------------------------------------------------------


def _record_matches(entry: Entry, observed: Any, known_seqs: frozenset[int]) -> bool:
    if not isinstance(observed, dict):
        return False
    if "_version" in observed:
        got = observed["_version"]
        if entry.vers > 0:
            if got != entry.vers:
                return False
        elif type(got) is not int or got in known_seqs:
            return False
    data = entry.data
    if len(observed) != len(data) + ("_version" in observed):
        return False
    for name, value in data.items():
        if name not in observed:
            return False
        got = observed[name]
        if got is not value and not values_equal(value, got):
            return False
    return True


def outcome_matches(
    outcome: Outcome, ok: bool, result: Any, error: Any, known_seqs: frozenset[int]
) -> bool:
    """Whether the model's *outcome* explains a reply (``ok``, ``result``/``error``)."""
    if outcome[0] == "err":
        return not ok and error == outcome[1]
    if not ok:
        return False
    kind, value = outcome[1], outcome[2]
    if kind == "record":
        return _record_matches(value, result, known_seqs)
    if kind == "none":
        return result is None
    if kind == "value":
        return type(result) is not bool and values_equal(value, result)
    if kind == "records":
        return (
            isinstance(result, list)
            and len(result) == len(value)
            and all(_record_matches(e, r, known_seqs) for e, r in zip(value, result, strict=True))
        )
    if kind == "info":
        return _info_matches(value, result)
    if kind == "batch":
        return (
            isinstance(result, list)
            and len(result) == len(value)
            and all(
                outcome_matches(o, True, r, None, known_seqs)
                for o, r in zip(value, result, strict=True)
            )
        )
    if kind == "snapshot":
        if not isinstance(result, list) or len(result) != len(value):
            return False
        for o, r in zip(value, result, strict=True):
            if not isinstance(r, dict):
                return False
            r_ok = bool(r.get("ok"))
            r_err = r.get("error")
            if isinstance(r_err, dict):
                r_err = r_err.get("type")
            if not r_ok and r_err not in CHECKED_ERRORS:
                continue  # a read that failed for a state-independent reason says nothing
            if not outcome_matches(o, r_ok, r.get("result"), r_err, known_seqs):
                return False
        return True
    return True  # "any"


def _info_matches(table: TableState, result: Any) -> bool:
    if not isinstance(result, dict):
        return False
    if table.version is not None and "version" in result and result["version"] != table.version:
        return False
    if not table.partial and "size" in result and result["size"] != len(table.records):
        return False
    if table.next_id is not None and "next_id" in result and result["next_id"] != table.next_id:
        return False
    return True


def describe_outcome(outcome: Outcome) -> str:
    if outcome[0] == "err":
        return f"error {outcome[1]}"
    kind, value = outcome[1], outcome[2]
    if kind == "record":
        return f"ok {value.record()!r}"
    if kind == "records":
        return f"ok [{', '.join(repr(e.record()) for e in value)}]"
    if kind == "info":
        return f"ok info(version={value.version}, size={len(value.records)})"
    if kind in ("batch", "snapshot"):
        return f"ok [{'; '.join(describe_outcome(o) for o in value)}]"
    return f"ok {value!r}"


def step(
    state: State, op: Operation, ctx: Ctx, request: dict[str, Any] | None = None
) -> list[State]:
    """The states after *op* (known outcome) that explain its reply.

    A write with a known ``seq`` must also come after every write already linearized
    with a higher one: the writer commits in ``seq`` order.
    """
    if ctx.seq > 0 and ctx.seq <= state.seq:
        return []
    out = []
    for outcome, nxt in apply(state, op.request() if request is None else request, ctx):
        if outcome_matches(outcome, bool(op.ok), op.result, op.error, ctx.known_seqs):
            out.append(nxt.with_seq(ctx.seq) if ctx.seq > 0 else nxt)
    return out


# --- partitions ------------------------------------------------------------------------------


def _checked(op: Operation) -> bool:
    """Whether *op* says something the model can check (else: no effect, not checked)."""
    if op.command not in MODELS:
        return False
    if not op.known:
        return _writes(op.command)
    if op.ok:
        return True
    return op.error in CHECKED_ERRORS


def _touches(req: dict[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """``(table, id, whole_table)`` for every part of the state *req* reads or writes."""
    command = req.get("command")
    if command in ("BATCH", "SNAPSHOT"):
        for sub in req.get("commands" if command == "BATCH" else "reads") or []:
            if isinstance(sub, dict):
                yield from _touches(sub)
        return
    table = req.get("state")
    if not isinstance(table, str):
        return
    if _table_scope(command) or req.get("expected_version") is not None:
        yield table, None, True
    elif command == "CREATE_RECORD":
        record = req.get("record")
        if isinstance(record, dict) and "id" in record:
            yield table, record["id"], False
        else:
            yield table, None, True
    else:
        yield table, req.get("id"), False


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        parent = self.parent
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _node(table: str, rid: Any, whole: bool) -> tuple[Any, ...]:
    return ("T", table) if whole else ("R", table, type(rid).__name__, rid)


@dataclass
class Partition:
    """Operations that can only be checked together, and the state they start from."""

    ops: list[Operation]
    initial: State
    label: str


def _partition(ops: Sequence[Operation], start: State) -> list[Partition]:
    touches = {id(op): list(_touches(op.request())) for op in ops}
    whole_tables: set[str] = set()
    for op in ops:
        for name, _, whole in touches[id(op)]:
            if whole:
                whole_tables.add(name)
        if op.command in RESHAPING_COMMANDS:
            whole_tables.add(str(op.args.get("state")))
    for name in {t for op in ops for t, _, _ in touches[id(op)]}:
        table = start.table(name)
        if not table.exists or table.partial:
            whole_tables.add(name)
        elif table.max_length is not None:
            whole_tables.add(name)  # CREATE_RECORD's CapacityError depends on the size
    uf = _UnionFind()
    first_node: list[Any] = []
    for op in ops:
        touched = [_node(t, rid, whole or t in whole_tables) for t, rid, whole in touches[id(op)]]
        if not touched:
            first_node.append(None)
            continue
        for n in touched[1:]:
            uf.union(touched[0], n)
        first_node.append(touched[0])
    groups: dict[Any, list[Operation]] = {}
    for op, node in zip(ops, first_node, strict=True):
        if node is not None:
            groups.setdefault(uf.find(node), []).append(op)
    parts: list[Partition] = []
    for group in groups.values():
        nodes = {
            _node(t, rid, whole or t in whole_tables)
            for op in group
            for t, rid, whole in touches[id(op)]
        }
        tables: dict[str, TableState] = {}
        labels = []
        for n in sorted(nodes, key=repr):
            if n[0] == "T":
                tables[n[1]] = start.table(n[1])
                labels.append(f"table {n[1]!r}")
        for n in sorted(nodes, key=repr):
            if n[0] == "R" and n[1] not in tables:
                labels.append(f"{n[1]!r} id {n[3]!r}")
        for n in nodes:
            if n[0] == "R" and n[1] not in whole_tables:
                full = start.table(n[1])
                part = tables.get(n[1])
                if part is None:
                    part = TableState(True, None, None, full.max_length, (), partial=True)
                entry = full.get(n[3])
                if entry is not None:
                    part = part.replace(records=(*part.records, entry))
                tables[n[1]] = part
        parts.append(Partition(group, State(tables, start.seq), ", ".join(labels[:4])))
    return parts


# --- the search ------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """One partition's operations, ready for the search."""

    known: list[Operation]  # sorted by invocation
    unknown: list[Operation]
    inv: list[int]
    ret: list[float]
    ctx: list[Ctx]
    uctx: list[Ctx]
    req: list[dict[str, Any]]
    ureq: list[dict[str, Any]]
    known_seqs: frozenset[int]


def _seq_of(op: Operation) -> int | None:
    if not op.known or not op.ok or not _writes(op.command):
        return None
    if op.command == "CLAIM_RECORD" and op.result is None:
        return None  # a claim that found nothing wrote nothing
    if op.command == "BATCH" and all(
        isinstance(c, dict) and not _writes(c.get("command")) for c in op.args.get("commands") or []
    ):
        return None  # a batch of reads wrote nothing
    if isinstance(op.seq, int) and op.seq > 0:
        return op.seq
    if isinstance(op.result, dict) and type(op.result.get("_version")) is int:
        return int(op.result["_version"])
    return None


def _ctx(op: Operation, index: int, known_seqs: frozenset[int]) -> Ctx:
    seq = _seq_of(op)
    return Ctx(
        seq if seq is not None else -index - 1,
        op.invoke,
        INF if op.complete is None else op.complete,
        known_seqs,
    )


def _prepare(
    ops: Sequence[Operation], known_seqs: frozenset[int], ids: dict[int, int]
) -> _Prepared:
    known = sorted((o for o in ops if o.known), key=lambda o: o.invoke)
    unknown = sorted((o for o in ops if not o.known), key=lambda o: o.invoke)
    return _Prepared(
        known,
        unknown,
        [o.invoke for o in known],
        [float(o.complete) for o in known],  # type: ignore[arg-type]
        [_ctx(o, ids[id(o)], known_seqs) for o in known],
        [_ctx(o, ids[id(o)], known_seqs) for o in unknown],
        [o.request() for o in known],
        [o.request() for o in unknown],
        known_seqs,
    )


@dataclass
class SearchResult:
    ok: bool | None  # None: out of time
    explored: int
    #: The deepest point reached: the state and the operations that could come next.
    stuck_state: State | None = None
    stuck_ops: list[Operation] = field(default_factory=list)
    stuck_linearized: list[Operation] = field(default_factory=list)
    #: Every operation not linearized at the deepest point (they fail from stuck_state).
    rest: list[Operation] = field(default_factory=list)
    depth: int = 0


_FREE: dict[frozenset[int], Callable[[int, float], list[int] | None]] = {}

#: Beyond this many candidate seqs, an unknown write takes a placeholder version instead.
MAX_SEQ_CHOICES: Final = 8


def _free_seqs(known_seqs: frozenset[int]) -> Callable[[int, float], list[int] | None]:
    """``free(a, b)``: the seqs in ``(a, b)`` that no recorded write has (None: too many).

    ``seq`` is dense (one per committed write), so a write of unknown outcome that took
    effect has one of those free numbers: it can only be linearized where the recorded
    writes leave one, and it gets that number as its ``_version``, so that a read shows
    which of several such writes it saw. Past the last recorded seq any number is free.
    """
    cached = _FREE.get(known_seqs)
    if cached is not None:
        return cached
    ordered = sorted(known_seqs)
    lo = ordered[0] if ordered else 1
    hi = ordered[-1] if ordered else 0
    free = [g for g in range(lo, hi + 1) if g not in known_seqs]

    def between(a: int, b: float) -> list[int] | None:
        if a + 1 < lo or b > hi + 1:
            return None  # before the first or past the last recorded write: unbounded
        i = bisect.bisect_right(free, a)
        j = bisect.bisect_left(free, b)
        return free[i:j] if j - i <= MAX_SEQ_CHOICES else None

    _FREE.clear()  # one history at a time
    _FREE[known_seqs] = between
    return between


class _Deadline(Exception):
    pass


def _search(prep: _Prepared, initial: State, deadline: float) -> SearchResult:
    """Wing & Gong / Lowe: DFS over minimal operations, memoized on (linearized set, state).

    A node is ``(k, window, unk, state)``: known operations ``< k`` are linearized, bit
    ``i`` of ``window`` says whether known operation ``k + i`` is, bit ``u`` of ``unk``
    whether unknown-outcome operation ``u`` is (those may also never be).
    """
    m = len(prep.known)
    inv, ret, ctxs, reqs = prep.inv, prep.ret, prep.ctx, prep.req
    free_seqs = _free_seqs(prep.known_seqs)
    part_seqs = sorted(c.seq for c in ctxs if c.seq > 0)
    uinv = [o.invoke for o in prep.unknown]
    known_ops, unknown_ops = prep.known, prep.unknown
    memo: set[tuple[int, int, int, State]] = set()
    explored = 0
    best_depth = -1
    best: tuple[int, int, int, State] = (0, 0, 0, initial)
    # Trail of linearized op ids down the current path, for the report.
    path: list[Operation] = []
    best_path: list[Operation] = []
    track = m <= 2000  # copying the path is quadratic: only for small partitions

    def children(k: int, window: int, unk: int, state: State) -> Iterator[tuple[Any, ...]]:
        cands: list[int] = []
        bound = INF
        z = ~window
        while True:
            low = z & -z
            j = k + low.bit_length() - 1
            if j >= m or inv[j] > bound:
                break
            cands.append(j)
            if ret[j] < bound:
                bound = ret[j]
            z ^= low
        cands.sort(key=ret.__getitem__)
        steps: dict[int, list[State]] = {}
        for j in cands:
            nxts = steps[j] = step(state, known_ops[j], ctxs[j], reqs[j])
            if len(nxts) == 1 and nxts[0] is state:
                # A read explained by this state: any explanation from here can be
                # rearranged to take it first (nothing must precede it and it changes
                # nothing), so it is the only child worth trying.
                yield from known_children(k, window, unk, state, [j], steps)
                return
        if unknown_ops:
            # An unknown write that took effect has a free seq: between the last recorded
            # write linearized here and the next one (commits come in seq order).
            i = bisect.bisect_right(part_seqs, state.seq)
            nxt_seq = part_seqs[i] if i < len(part_seqs) else INF
            seqs = free_seqs(state.seq, nxt_seq)
            if seqs is None or seqs:
                # A free seq among the recorded ones says some write of unknown outcome
                # took effect right there: try those first.
                if seqs is None:
                    yield from known_children(k, window, unk, state, cands, steps)
                # Most recent first: a request lost on the way is usually an old one.
                for u in range(len(unknown_ops) - 1, -1, -1):
                    if unk >> u & 1 or uinv[u] > bound:
                        continue
                    base = prep.uctx[u]
                    for g in seqs if seqs is not None else [0]:
                        ctx = base if g == 0 else dataclasses.replace(base, seq=g)
                        for outcome, nxt in apply(state, prep.ureq[u], ctx):
                            if outcome[0] == "ok" and nxt is not state:
                                g2 = g or state.seq + 1
                                yield k, window, unk | 1 << u, nxt.with_seq(g2), unknown_ops[u]
                if seqs is None:
                    return
        yield from known_children(k, window, unk, state, cands, steps)

    def known_children(
        k: int,
        window: int,
        unk: int,
        state: State,
        cands: list[int],
        steps: dict[int, list[State]],
    ) -> Iterator[tuple[Any, ...]]:
        for j in cands:
            op = known_ops[j]
            for nxt in steps[j]:
                bit = 1 << (j - k)
                w = window | bit
                nk = k
                if bit == 1:
                    t = (~w & (w + 1)).bit_length() - 1  # trailing ones
                    nk, w = k + t, w >> t
                yield nk, w, unk, nxt, op

    stack: list[Iterator[tuple[Any, ...]]] = [children(0, 0, 0, initial)]
    if m == 0:
        return SearchResult(True, 0)
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            if path:
                path.pop()
            continue
        key = item[:4]
        if key in memo:
            continue
        memo.add(key)
        explored += 1
        if explored & 1023 == 0 and time.monotonic() > deadline:
            raise _Deadline
        path.append(item[4])
        k = item[0]
        if k >= m:
            return SearchResult(True, explored)
        depth = k + item[1].bit_count()
        if depth > best_depth:
            best_depth, best = depth, key
            if track:
                best_path = list(path)
        stack.append(children(*key))
    k, window, unk, state = best if best_depth >= 0 else (0, 0, 0, initial)
    rest = [known_ops[j] for j in range(k, m) if not window >> (j - k) & 1]
    rest += [op for u, op in enumerate(unknown_ops) if not unk >> u & 1]
    stuck = []
    bound = INF
    for j in range(k, m):
        if window >> (j - k) & 1:
            continue
        if inv[j] > bound:
            break
        stuck.append(known_ops[j])
        bound = min(bound, ret[j])
    return SearchResult(False, explored, state, stuck, best_path, rest, max(best_depth, 0))


# --- results and reports ---------------------------------------------------------------------


@dataclass
class PartitionFailure:
    """A partition that could not be linearized (or ran out of time)."""

    label: str
    ops: int
    timed_out: bool
    #: The smallest failing sub-history found, its search result and the shrink time.
    sub_history: list[Operation]
    search: SearchResult | None
    shrink_seconds: float
    known_seqs: frozenset[int]
    #: When the sub-history starts from the state the search reached (large partitions):
    #: that state, how many operations led to it, and the operations of the partition.
    start_state: State | None = None
    start_depth: int = 0
    context: list[Operation] = field(default_factory=list)


@dataclass
class CheckResult:
    """The verdict on a history; ``report()`` explains it."""

    ok: bool
    operations: int
    checked: int
    unchecked: int
    unknown_outcome: int
    partitions: int
    explored: int
    seconds: float
    failures: list[PartitionFailure]
    start_time: int
    timed_out: bool = False

    def report(self) -> str:
        """A readable verdict: counts, then each failing partition's smallest sub-history."""
        verdict = "linearizable" if self.ok else "NOT linearizable"
        if self.timed_out and not any(not f.timed_out for f in self.failures):
            verdict = "UNKNOWN (time limit reached)"
        lines = [
            f"history: {verdict}",
            f"  {self.operations} operations ({self.checked} checked, {self.unchecked} not "
            f"checkable, {self.unknown_outcome} of unknown outcome), {self.partitions} "
            f"partitions, {self.explored} states explored, {self.seconds:.3f} s",
        ]
        for failure in self.failures[:REPORTED_FAILURES]:
            lines.extend(self._failure_lines(failure))
        more = self.failures[REPORTED_FAILURES:]
        if more:
            lines.append("")
            lines.append(
                f"... and {len(more)} more failing partitions: "
                + ", ".join(f.label for f in more[:20])
            )
        return "\n".join(lines)

    def _failure_lines(self, f: PartitionFailure) -> list[str]:
        if f.timed_out:
            return [f"partition {f.label}: {f.ops} operations, out of time (no verdict)"]
        lines = [
            "",
            f"partition {f.label}: NOT linearizable ({f.ops} operations)",
            f"  smallest failing sub-history found: {len(f.sub_history)} operations "
            f"(shrunk in {f.shrink_seconds:.2f} s); times in ms from the history's start, "
            "'?' = unknown outcome:",
        ]
        if f.start_state is not None:
            lines.append(
                f"  starting from the state reached by linearizing the first {f.start_depth} "
                "operations (no explanation got further):"
            )
            lines.extend(_format_state(f.start_state, f.sub_history, f.context, self.start_time))
        lines.extend(format_timeline(f.sub_history, self.start_time))
        s = f.search
        if s is not None and s.stuck_state is not None:
            if s.stuck_linearized:
                done = ", ".join(f"{o.process}#{o.op}" for o in s.stuck_linearized)
                lines.append(f"  the longest explanation found linearizes: {done}")
                lines.append("  and then none of these can come next:")
            else:
                lines.append("  none of these can come first:")
            for op in s.stuck_ops:
                outs = apply(s.stuck_state, op.request(), _ctx(op, 0, f.known_seqs))
                said = "; ".join(describe_outcome(o) for o, _ in outs) or "(nothing)"
                got = f"ok {op.result!r}" if op.ok else f"error {op.error}"
                lines.append(f"    {op.process}#{op.op} {op.command}: observed {got}")
                lines.append(f"      the model allows only: {said}")
        return lines


def _format_state(
    state: State, sub: Sequence[Operation], context: Sequence[Operation], start: int
) -> list[str]:
    """The records *sub* touches (all of a table it reads whole), and who wrote them."""
    writers = {s: op for op in context if (s := _seq_of(op)) is not None}
    wanted: dict[str, set[Any] | None] = {}
    for op in sub:
        for t, rid, whole in _touches(op.request()):
            if whole:
                wanted[t] = None
            elif wanted.get(t, set()) is not None:
                wanted.setdefault(t, set()).add(rid)  # type: ignore[union-attr]
    lines = []
    for name, ids in wanted.items():
        table = state.table(name)
        if not table.exists:
            lines.append(f"    table {name!r} does not exist")
            continue
        lines.append(f"    table {name!r} (version {table.version}):")
        shown = [e for e in table.records if ids is None or e.id in ids]
        for e in shown[:12]:
            w = writers.get(e.vers)
            by = "" if w is None else f"  <- written by {w.process} {format_op(w, start)}"
            lease = "" if e.lease is None else " (leased)"
            lines.append(f"      {_short(e.record())}{lease}{by}")
        if len(shown) > 12:
            lines.append(f"      ... {len(shown) - 12} more")
    return lines


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_op(op: Operation, start: int) -> str:
    args = " ".join(f"{k}={_short(v, 80)}" for k, v in op.args.items())
    begin = (op.invoke - start) / 1e6
    if op.complete is None:
        span, out = f"[{begin:10.3f} ..          ?]", "-> ? (unknown outcome)"
    else:
        end = (op.complete - start) / 1e6
        span = f"[{begin:10.3f} .. {end:10.3f}]"
        out = f"-> ok {_short(op.result)}" if op.ok else f"-> error {op.error}"
    return f"{span} #{op.op} {op.command} {args} {out}"


def format_timeline(ops: Iterable[Operation], start: int) -> list[str]:
    """One block per process, its operations in invocation order."""
    by_process: dict[str, list[Operation]] = {}
    for op in sorted(ops, key=lambda o: o.invoke):
        by_process.setdefault(op.process, []).append(op)
    lines = []
    for process, pops in by_process.items():
        lines.append(f"    process {process}:")
        lines.extend(f"      {format_op(op, start)}" for op in pops)
    return lines


# --- shrinking -------------------------------------------------------------------------------


def _dependents(ops: Sequence[Operation]) -> dict[int, list[int]]:
    """op index → indices of ops that observed its write (a ``_version``/``if_version``).

    Dropping a write drops those too, so that a shrunk history never blames a read for
    a value whose write was cut away.
    """
    writer: dict[int, int] = {}
    for i, op in enumerate(ops):
        s = _seq_of(op)
        if s is not None:
            writer[s] = i
    deps: dict[int, list[int]] = {}

    def observed(value: Any, out: set[int]) -> None:
        if isinstance(value, dict):
            v = value.get("_version")
            if type(v) is int:
                out.add(v)
            for x in value.values():
                if isinstance(x, (dict, list)):
                    observed(x, out)
        elif isinstance(value, list):
            for x in value:
                observed(x, out)

    for i, op in enumerate(ops):
        seen: set[int] = set()
        observed(op.result, seen)
        observed(op.args, seen)
        for req in [op.args, *(op.args.get("commands") or []), *(op.args.get("reads") or [])]:
            if isinstance(req, dict) and type(req.get("if_version")) is int:
                seen.add(req["if_version"])
        for s in seen:
            w = writer.get(s)
            if w is not None and w != i:
                deps.setdefault(w, []).append(i)
    return deps


def _signature(res: SearchResult, known_seqs: frozenset[int]) -> set[tuple[int, frozenset[str]]]:
    """Where a failed search got stuck: (operation, what the model allowed it: ok/errors)."""
    if res.stuck_state is None:
        return set()
    sig = set()
    for op in res.stuck_ops:
        outs = apply(res.stuck_state, op.request(), _ctx(op, 0, known_seqs))
        sig.add((id(op), frozenset(o[0] if o[0] == "ok" else f"err:{o[1]}" for o, _ in outs)))
    return sig


def _shrink(
    part: Partition,
    known_seqs: frozenset[int],
    ids: dict[int, int],
    budget: float,
    culprits: set[tuple[int, frozenset[str]]],
) -> tuple[list[Operation], SearchResult | None]:
    """Delta debugging: the shortest failing prefix, then drop chunks while it still fails.

    "Fails" means: still not linearizable, and still stuck at one of the *culprits* (see
    :func:`_signature`) for the same kind of reason, so that a removal that makes some
    operation unexplainable in a new way (a read whose write was dropped, a write whose
    table was never created) is not taken for progress.
    """
    t_end = time.monotonic() + budget
    ops = sorted(part.ops, key=lambda o: o.invoke)
    last: dict[str, SearchResult] = {}

    def fails(sub: list[Operation]) -> bool:
        now = time.monotonic()
        if now > t_end:
            return False
        try:
            res = _search(_prepare(sub, known_seqs, ids), part.initial, min(t_end, now + 2.0))
        except _Deadline:
            return False
        if res.ok is False and _signature(res, known_seqs) & culprits:
            last["r"] = res
            return True
        return False

    # 1. the shortest failing prefix (linearizability is prefix-closed)
    lo, hi = 1, len(ops)
    while lo < hi and time.monotonic() < t_end:
        mid = (lo + hi) // 2
        if fails(ops[:mid]):
            hi = mid
        else:
            lo = mid + 1
    ops = ops[:hi]
    # 2. drop chunks (with whatever observed them), large chunks first
    chunk = max(1, len(ops) // 2)
    while time.monotonic() < t_end:
        deps = _dependents(ops)
        i, removed_any = 0, False
        while i < len(ops) and time.monotonic() < t_end:
            drop = set(range(i, min(i + chunk, len(ops))))
            todo = list(drop)
            while todo:
                for d in deps.get(todo.pop(), []):
                    if d not in drop:
                        drop.add(d)
                        todo.append(d)
            if len(drop) < len(ops):
                candidate = [o for j, o in enumerate(ops) if j not in drop]
                if fails(candidate):
                    ops, removed_any = candidate, True
                    deps = _dependents(ops)
                    continue
            i += chunk
        if chunk == 1 and not removed_any:
            break
        chunk = max(1, chunk // 2)
    try:
        final = _search(_prepare(ops, known_seqs, ids), part.initial, time.monotonic() + 5.0)
    except _Deadline:
        return ops, last.get("r")
    return ops, final if final.ok is False and final.stuck_ops else last.get("r")


# --- the entry point ---------------------------------------------------------------------------


def _initial_state(initial: dict[str, dict[Any, dict[str, Any]]] | None) -> State:
    tables: dict[str, TableState] = {}
    for name, records in (initial or {}).items():
        entries = []
        for rid, rec in records.items():
            vers = rec.get("_version")
            data = {k: v for k, v in rec.items() if k != "_version"}
            data["id"] = rid
            entries.append(Entry(rid, data, vers if type(vers) is int else 0, None))
        ints = [e.id for e in entries if type(e.id) is int]
        tables[name] = TableState(True, None, max(ints, default=0) + 1, None, tuple(entries))
    return State(tables)


def _with_prefix(part: Partition, prefix: Sequence[Operation], state0: State) -> Partition:
    """*part* with the setup operations on its tables put back, from the initial state.

    So that a failure is reported with the writes that explain the state it starts from.
    """
    tables = {t for op in part.ops for t, _, _ in _touches(op.request())}
    pre = [o for o in prefix if any(t in tables for t, _, _ in _touches(o.request()))]
    start = State({t: state0.tables[t] for t in tables if t in state0.tables}, state0.seq)
    return Partition([*pre, *part.ops], start, part.label)


def check(
    operations: Iterable[Operation],
    *,
    initial: dict[str, dict[Any, dict[str, Any]]] | None = None,
    time_limit: float | None = None,
    shrink_time: float = 10.0,
) -> CheckResult:
    """Check a history for linearizability (and snapshot consistency of ``SNAPSHOT`` reads).

    :param initial: tables that exist before the history, ``{table: {id: record}}``;
        anything else starts nonexistent (or comes from the history's setup operations).
    :param time_limit: seconds for the whole search; past it the verdict is unknown
        (``ok`` False, ``timed_out`` True).
    :param shrink_time: seconds spent shrinking each failing partition.
    :raises UnmodelledCommand: the history holds a write command without a model.
    """
    operations = list(operations)
    refuse_unmodelled(operations)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the memo holds many small objects and no cycles: collections only cost
    try:
        return _check(operations, initial, time_limit, shrink_time)
    finally:
        if gc_was_enabled:
            gc.enable()


def _check(
    operations: Iterable[Operation],
    initial: dict[str, dict[Any, dict[str, Any]]] | None,
    time_limit: float | None,
    shrink_time: float,
) -> CheckResult:
    t0 = time.monotonic()
    deadline = INF if time_limit is None else t0 + time_limit
    all_ops = sorted(operations, key=lambda o: (o.invoke, o.process, o.op))
    start_time = all_ops[0].invoke if all_ops else 0
    ids = {id(o): i for i, o in enumerate(all_ops)}
    ops = [o for o in all_ops if _checked(o)]
    known_seqs = frozenset(s for s in map(_seq_of, ops) if s is not None)
    state = state0 = _initial_state(initial)
    failures: list[PartitionFailure] = []
    # The sequential prefix: operations that overlap nothing after them.
    n_prefix = 0
    first_invoke_after = [INF] * (len(ops) + 1)
    for i in range(len(ops) - 1, -1, -1):
        first_invoke_after[i] = min(first_invoke_after[i + 1], ops[i].invoke)
    for i, op in enumerate(ops):
        if not op.known or op.complete is None or op.complete >= first_invoke_after[i + 1]:
            break
        ctx = _ctx(op, ids[id(op)], known_seqs)
        fits = list(dict.fromkeys(step(state, op, ctx)))
        if len(fits) != 1:
            break  # ambiguous or unexplained: the search takes it from here
        state = fits[0]
        n_prefix = i + 1
    explored = 0
    parts: list[Partition] = []
    timed_out = False
    if not failures:
        parts = _partition(ops[n_prefix:], state)
        parts.sort(key=lambda p: len(p.ops))
        for part in parts:
            try:
                if time.monotonic() > deadline:
                    raise _Deadline
                res = _search(_prepare(part.ops, known_seqs, ids), part.initial, deadline)
            except _Deadline:
                timed_out = True
                failures.append(
                    PartitionFailure(part.label, len(part.ops), True, [], None, 0.0, known_seqs)
                )
                break
            explored += res.explored
            if res.ok is False and len(failures) >= REPORTED_FAILURES:
                failures.append(
                    PartitionFailure(part.label, len(part.ops), False, [], res, 0.0, known_seqs)
                )
            elif res.ok is False:
                t_shrink = time.monotonic()
                whole = _with_prefix(part, ops[:n_prefix], state0)
                context = whole.ops  # the partition with its setup operations
                culprits = _signature(res, known_seqs)
                start: State | None = None
                if len(whole.ops) > SHRINK_FROM_START_MAX and res.stuck_state is not None:
                    # Too long to shrink from the start: shrink what is left at the
                    # deepest point the search reached, from the state it reached there.
                    whole = Partition(res.rest, res.stuck_state, part.label)
                    start = res.stuck_state
                sub, sub_res = _shrink(whole, known_seqs, ids, shrink_time, culprits)
                failures.append(
                    PartitionFailure(
                        part.label,
                        len(context),
                        False,
                        sub,
                        sub_res or res,
                        time.monotonic() - t_shrink,
                        known_seqs,
                        start,
                        res.depth,
                        context,
                    )
                )
    return CheckResult(
        ok=not failures,
        operations=len(all_ops),
        checked=len(ops),
        unchecked=len(all_ops) - len(ops),
        unknown_outcome=sum(1 for o in all_ops if not o.known),
        partitions=len(parts) + (1 if n_prefix else 0),
        explored=explored + n_prefix,
        seconds=time.monotonic() - t0,
        failures=failures,
        start_time=start_time,
        timed_out=timed_out,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stateengine.testing.checker FILE...``: exit 0 linearizable, 1 not, 2
    refused (a write command the checker has no model for)."""
    parser = argparse.ArgumentParser(
        prog="python -m stateengine.testing.checker",
        description="Check recorded stateengine histories for linearizability.",
    )
    parser.add_argument("files", nargs="+", help="history files (msgpack streams)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds")
    parser.add_argument("--shrink-time", type=float, default=10.0, help="seconds per failure")
    args = parser.parse_args(argv)
    try:
        result = check(
            read_history(*args.files), time_limit=args.time_limit, shrink_time=args.shrink_time
        )
    except UnmodelledCommand as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
