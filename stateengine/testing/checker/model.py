"""The sequential model: canonical values, the model state, each command's model
(``MODELS``), and comparing its outcomes with recorded replies.

Part of :mod:`stateengine.testing.checker` (its docstring describes the method).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from stateengine import command_table, query
from stateengine.errors import BadRequest
from stateengine.protocol import order_records, parse_order_by, values_equal
from stateengine.testing.history import Operation

INF: Final = float("inf")
#: Slack between the writer's wall clock and CLOCK_MONOTONIC: an expiry commit recorded
#: from the feed is taken to have started this long before its deadline, as converted.
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
    if command == EXPIRY:
        return True
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


#: The command of the server's own commits in a history: an expiry (leases and TTLs
#: that ran out), recorded from the change feed by :func:`~stateengine.testing.history.
#: record_server_commits` as ``{"command": EXPIRY, "commands": [{"state", "id", "how"}]}``
#: with, as its result, the record each part wrote (None for a TTL delete).
EXPIRY: Final = "EXPIRY"


# --- the model state -----------------------------------------------------------------------


class Lease:
    """A claim's lease: the values it overwrote, its dead-letter rule ``(counter,
    max_attempts, fields)``, and when it was granted (the invocation of the claim or
    renewal, ns) for how long (ns). It ends only by a write (rule 4, SET/DELETE) or by the
    server's expiry commit (:data:`EXPIRY`), which may not complete before the lease could
    have run out."""

    __slots__ = ("_key", "dead", "lo", "prior", "secs")

    def __init__(
        self,
        prior: dict[str, Any],
        dead: tuple[str, int, dict[str, Any]] | None = None,
        lo: int = 0,
        secs: int = 0,
    ) -> None:
        self.prior = prior
        self.dead = dead
        self.lo = lo
        self.secs = secs
        self._key = (
            _freeze_record(prior),
            None if dead is None else (dead[0], dead[1], _freeze_record(dead[2])),
            lo,
            secs,
        )

    def may_have_run_out_by(self, hi: float) -> bool:
        return hi - self.lo >= self.secs - LEASE_SLACK_NS

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lease) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


class Entry:
    """One record: its fields (``id`` included, ``_version`` apart), version, lease and
    whether it has a TTL (its ``_expires`` is the server's clock: not modelled, only
    whether it is there).

    ``vers`` is the ``seq`` of its last write, or a placeholder <= 0 when that is unknown.
    """

    __slots__ = ("_hash", "_key", "data", "id", "lease", "ttl", "vers")

    def __init__(
        self, rid: Any, data: dict[str, Any], vers: int, lease: Lease | None, ttl: bool = False
    ) -> None:
        self.id = rid
        self.data = data
        self.vers = vers
        self.lease = lease
        self.ttl = ttl
        self._key = (rid, _freeze_record(data), vers, lease, ttl)
        self._hash = hash(self._key)

    def record(self) -> dict[str, Any]:
        return {**self.data, "_version": self.vers if self.vers > 0 else "?"}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and self._hash == other._hash and self._key == other._key

    def __hash__(self) -> int:
        return self._hash


#: Entries per chunk of :class:`Records` (a write copies one chunk and the chunk list).
_CHUNK: Final = 64


class Records:
    """A table's entries in order, as a persistent chunked sequence.

    A history of one large table (10^4 tasks) puts one entry per write: a flat tuple
    would be copied and rehashed whole each time, and every state the search memoizes
    would hold a copy. Chunks are shared between versions and the hash is a sum over
    positions, updated by each write, so a write costs ``O(n / 64 + 64)``.
    """

    __slots__ = ("_hash", "_len", "chunks")

    def __init__(self, chunks: tuple[tuple[Entry, ...], ...], length: int, hashed: int) -> None:
        self.chunks = chunks
        self._len = length
        self._hash = hashed

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Records:
        if isinstance(entries, Records):
            return entries
        flat = tuple(entries)
        chunks = tuple(flat[i : i + _CHUNK] for i in range(0, len(flat), _CHUNK))
        hashed = sum(_at(i, e) for i, e in enumerate(flat)) & _MASK
        return cls(chunks, len(flat), hashed)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Entry]:
        for chunk in self.chunks:
            yield from chunk

    def __getitem__(self, i: int) -> Entry:
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self.chunks[i // _CHUNK][i % _CHUNK]

    def from_(self, start: int) -> Iterator[tuple[int, Entry]]:
        """``(position, entry)`` from *start* on."""
        c, off = divmod(start, _CHUNK)
        pos = c * _CHUNK
        for chunk in self.chunks[c:]:
            for e in chunk[off:] if off else chunk:
                yield pos + off, e
                off += 1
            pos, off = pos + _CHUNK, 0

    def set(self, i: int, entry: Entry) -> Records:
        c, off = divmod(i, _CHUNK)
        old = self.chunks[c]
        chunks = (*self.chunks[:c], (*old[:off], entry, *old[off + 1 :]), *self.chunks[c + 1 :])
        return Records(chunks, self._len, (self._hash - _at(i, old[off]) + _at(i, entry)) & _MASK)

    def append(self, entry: Entry) -> Records:
        n = self._len
        if n % _CHUNK:
            chunks = (*self.chunks[:-1], (*self.chunks[-1], entry))
        else:
            chunks = (*self.chunks, (entry,))
        return Records(chunks, n + 1, (self._hash + _at(n, entry)) & _MASK)

    def remove(self, i: int) -> Records:
        flat = list(self)
        del flat[i]
        return Records.of(flat)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Records):
            if self is other:
                return True
            return (
                self._hash == other._hash
                and self._len == other._len
                and (self.chunks == other.chunks)
            )
        if isinstance(other, (tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Records({list(self)!r})"


_MASK: Final = (1 << 64) - 1


def _at(i: int, entry: Entry) -> int:
    """An entry's share of the hash of the records it is at position *i* of."""
    return hash((i, entry._hash))


class TableState:
    """One table as far as a partition knows it.

    ``partial``: only some records are in this partition (record-level checks), so size,
    order, version and counter are not known. ``version``/``next_id`` None: unknown.
    The position index and the claim hints (per ``where``: no unleased record before
    that position matches) are caches, carried over to the table a write derives.
    """

    __slots__ = (
        "_hash",
        "_hints",
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
        records: Iterable[Entry] = (),
        partial: bool = False,
    ) -> None:
        self.exists = exists
        self.version = version
        self.next_id = next_id
        self.max_length = max_length
        self.records = Records.of(records)
        self.partial = partial
        self._index: dict[Any, int] | None = None
        self._hints: dict[Any, int] = {}
        self._hash = hash((exists, version, next_id, max_length, self.records, partial))

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
        new = TableState(**args)
        if new.records is self.records:  # same records: the caches hold
            new._index, new._hints = self._index, self._hints
        return new

    def bump(self) -> int | None:
        return None if self.version is None else self.version + 1

    def put(self, entry: Entry) -> TableState:
        """The table with *entry* written (in place if it exists, else appended)."""
        i = self.find(entry.id)
        index = self._index
        if i < 0:
            new = self.replace(records=self.records.append(entry), version=self.bump())
            i = len(self.records)
            if index is not None:
                index = dict(index)
                index[(type(entry.id), entry.id)] = i
        else:
            new = self.replace(records=self.records.set(i, entry), version=self.bump())
        new._index = index
        new._hints = {k: min(h, i) for k, h in self._hints.items()}
        return new

    def remove(self, rid: Any) -> TableState:
        i = self.find(rid)
        new = self.replace(records=self.records.remove(i), version=self.bump())
        new._hints = {k: min(h, i) for k, h in self._hints.items()}
        return new

    def first_claimable(self, key: Any, where: Callable[[dict[str, Any]], bool]) -> Entry | None:
        """The first record not under a lease that *where* (frozen as *key*) matches."""
        start = self._hints.get(key, 0)
        for i, e in self.records.from_(start):
            if e.lease is None and where(e.data):
                self._hints[key] = i
                return e
        self._hints[key] = len(self.records)
        return None

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
            new = Entry(rid, data, ctx.seq, None, req.get("ttl") is not None)
            out.append((("ok", "record", new), state.with_table(name, table.put(new))))
        elif command == "EXPIRE_RECORD":
            new = Entry(rid, entry.data, ctx.seq, lease, req.get("ttl") is not None)
            out.append((("ok", "record", new), state.with_table(name, table.put(new))))
        elif command == "PATCH_RECORD":
            patch = _strip_id(req.get("fields"))
            secs = _lease_ns(req)
            if secs is not None:
                if lease is None:
                    out.append((_err("BadRequest"), state))
                    continue
                lease = Lease(lease.prior, lease.dead, ctx.lo, secs)
            elif lease is not None and any(k in lease.prior for k in patch):
                lease = None  # rule 4: a claimed field changed: the lease is complete
            ttl = entry.ttl or req.get("ttl") is not None
            new = Entry(rid, {**entry.data, **patch}, ctx.seq, lease, ttl)
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
            data = {**entry.data, fname: value}  # type: ignore[dict-item]
            new = Entry(rid, data, ctx.seq, lease, entry.ttl)
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
        new = Entry(rid, {"id": rid, **_strip_id(raw)}, ctx.seq, None, req.get("ttl") is not None)
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


def _incremented(patch: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A claim's fields with each ``{"$inc": n}`` replaced by the old value plus n (a
    field that holds no number keeps the map: the server refuses such a claim, and the
    recorded reply says so)."""
    out = dict(patch)
    for name, value in patch.items():
        if query.is_increment(value):
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
        # rule 1: a record under a lease is not claimable (a lease that ran out was
        # ended by the server's expiry commit, an operation of the history)
        keys = parse_order_by(req.get("order_by"))
        first: Entry | None
        if keys:
            candidates = [e for e in table.records if e.lease is None and where(e.data)]
            candidates = order_records(candidates, keys, get=lambda e: e.data)
            first = candidates[0] if candidates else None
        else:  # table order: scan from where the last claim on this table found one
            first = table.first_claimable(freeze(req.get("where")), where)
        if first is None:
            out.append((("ok", "none", None), state))
            continue
        entry = first
        patch = _strip_id(req.get("fields"))
        old = entry.data
        lease: Lease | None = None
        secs = _lease_ns(req)
        if secs is not None:
            prior = {k: old.get(k) for k in patch if not query.is_increment(patch[k])}
            lease = Lease(prior, _dead_letter(req), ctx.lo, secs)
        data = {**old, **_incremented(patch, old)}
        new = Entry(entry.id, data, ctx.seq, lease, entry.ttl)
        out.append((("ok", "record", new), state.with_table(name, table.put(new))))
    return out


def _lease_ns(req: dict[str, Any]) -> int | None:
    secs = req.get("lease_seconds")
    return int(secs * 1e9) if isinstance(secs, (int, float)) else None


def _dead_letter(req: dict[str, Any]) -> tuple[str, int, dict[str, Any]] | None:
    """A claim's dead-letter rule: its one ``$inc`` counter, ``max_attempts`` and fields."""
    most, letter = req.get("max_attempts"), req.get("dead_letter")
    fields = req.get("fields")
    if most is None or not isinstance(letter, dict) or not isinstance(fields, dict):
        return None
    counters = [k for k, v in fields.items() if query.is_increment(v)]
    return (counters[0], most, _strip_id(letter)) if len(counters) == 1 else None


def _expiry(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    """The server's expiry commit: each lease put back (or dead-lettered), each TTL'd
    record deleted; each table touched rises by one version. No branch when some part
    is not possible here (no such lease or TTL)."""
    results: list[Outcome] = []
    versions: dict[str, int | None] = {}
    for sub in req.get("commands") or []:
        name, rid, how = sub.get("state"), sub.get("id"), sub.get("how")
        table = state.table(name)
        entry = table.get(rid) if table.exists else None
        if entry is None or not isinstance(name, str):
            return []
        versions.setdefault(name, table.version)
        if how == "ttl":
            if not entry.ttl:
                return []
            table = table.remove(rid)
            results.append(("ok", "none", None))
        else:
            lease = entry.lease
            if lease is None or not lease.may_have_run_out_by(ctx.hi):
                return []
            data = {**entry.data, **lease.prior}
            dead = False
            if lease.dead is not None:
                counter, most, fields = lease.dead
                count = entry.data.get(counter)
                dead = isinstance(count, (int, float)) and count >= most
                if dead:
                    data.update(fields)
            if dead != (how == "dead"):
                return []
            new = Entry(rid, data, ctx.seq, None, entry.ttl)
            table = table.put(new)
            results.append(("ok", "record", new))
        state = state.with_table(name, table)
    for name, version in versions.items():
        bumped = None if version is None else version + 1
        state = state.with_table(name, state.table(name).replace(version=bumped))
    return [(("ok", "batch", tuple(results)), state)]


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
                dead = lease.dead if lease.dead is None or lease.dead[0] not in drop else None
                lease = Lease(prior, dead, lease.lo, lease.secs)
            entries.append(Entry(e.id, data, ctx.seq, lease, e.ttl))
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
    "EXPIRE_RECORD": _write_record,
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
    EXPIRY: _expiry,
}


def apply(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    """Every outcome the sequential model allows for *req* on *state*, with the next state.

    More than one branch only where the model cannot know (an unknown table version or
    record version).
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
    if ("_expires" in observed) != entry.ttl:
        return False
    if len(observed) != len(data) + ("_version" in observed) + entry.ttl:
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
