"""The table engine: named, schema-enforced tables of records, owned by the writer.

One entry point, :meth:`TableEngine.execute`, takes a request map and returns a reply
map of exactly the wire shape (README "Wire protocol"), so the network layer is a thin
shell. :meth:`TableEngine.apply` is the same without the reply wrapping; it raises the
classes of :mod:`stateengine.errors`.

Atomicity. Every command handler validates everything before it mutates anything, so a
single command that raises has changed nothing. A ``BATCH`` runs its commands with a
journal of what each mutation replaced and, on the first failure, rolls the journal back.
(Copy-on-write of whole tables was the rejected alternative: it makes every write O(table
size).)

Changes. Each commit leaves the set of records and tables it touched in
:attr:`TableEngine.changes`, for the server to publish to the arena and to persist.

Time. The engine reads no clock of its own accord: a lease's deadline is the caller's
clock (:attr:`TableEngine.clock`) plus ``lease_seconds``, and deadlines take effect only
through :meth:`TableEngine.expire_due`, the one commit that no request drives (README
"Leases": expiry is a commit). The server runs it before the requests of every pass and
when the next deadline comes; the in-process ``Engine`` before every command. So the
state at a given ``seq`` never depends on when it is read.

Not thread-safe: the writer calls it from one thread.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import operator
import os
import time
from collections.abc import Callable, Collection, Iterable, KeysView
from dataclasses import dataclass, field
from typing import Any, Final, cast

from stateengine import command_table
from stateengine.errors import (
    BadRequest,
    CapacityError,
    DuplicateId,
    ImmutableId,
    InternalError,
    PayloadTooLarge,
    RecordNotFound,
    SchemaError,
    StateEngineError,
    StateExists,
    StateNotFound,
    UnknownCommand,
    VersionConflict,
)
from stateengine.limits import (
    ID_MAX,
    ID_MIN,
    MAX_CLAIM_WAIT,
    MAX_ID_BYTES,
    MAX_RECORD_BYTES,
    check_id,
    check_table_name,
    check_text,
)
from stateengine.protocol import (
    INT_MAX,
    INT_MIN,
    UNCHANGED_FIELDS,
    accepts_unchanged,
    check_field,
    check_type_name,
    check_value,
    conform,
    copy_value,
    describe,
    order_records,
    parse_order_by,
    sort_key,
)
from stateengine.query import (
    Condition,
    Plan,
    Predicate,
    compile_where,
    is_increment,
    match_all,
    plan_query,
)
from stateengine.server.indexes import MAX_INDEXES, TableIndexes, parse_indexes
from stateengine.shm.blocks import (
    flat_apply,
    flat_create_args,
    flat_ids,
    flat_merge,
    flat_patch_args,
)
from stateengine.shm.codec import record_encoder

Id = int | str
Record = dict[str, Any]
#: ``(["id", field, ...], {field: type name})``: field order and types.
Schema = tuple[list[str], dict[str, str]]

RESERVED_FIELD: Final = "_version"
#: Where a record with a TTL keeps its deadline (wall-clock seconds): stored, published
#: to the arena (a reader judges it by its own clock) and persisted with the record.
EXPIRES_FIELD: Final = "_expires"
#: Fields the engine writes and a client never does.
_RESERVED: Final = frozenset({RESERVED_FIELD, EXPIRES_FIELD})
_MISSING: Final = object()
_NO_KEYS: Final[frozenset[Any]] = frozenset()
#: The keys of a PATCH_RECORD that :meth:`TableEngine._flat_patch` may take.
_PLAIN_PATCH: Final = frozenset({"command", "state", "id", "fields", "req_id"})
#: The arguments :meth:`TableEngine._check_preconditions` reads: a request with none of
#: them skips the call (one C set test against a call and four lookups).
_PRECONDITIONS: Final = frozenset({"expected_version", "if_version", "if_match"})
#: The id types every int id in range conforms to (:meth:`TableEngine._existing`).
_INT_ID_TYPES: Final = frozenset({"any", "integer"})


@dataclass
class Lease:
    """A claim's lease: when it runs out, the field values the claim overwrote, and, with
    ``max_attempts``, what its expiry writes instead of those once the claim's attempt
    counter reached it: ``(counter field, max_attempts, dead-letter fields)``."""

    expires: float
    prior: dict[str, Any]
    dead: tuple[str, int, dict[str, Any]] | None = None


#: How an expiry commit ended a record's lease or life, per record (the feed's ``expired``
#: events): the pre-claim values put back, the dead-letter fields set, or a TTL delete.
Expiry = str  # "lease" | "dead" | "ttl"


#: A compiled query: ``(types, index_defs, conditions, predicate, order keys, plan)``,
#: valid while the table holds those very ``types`` and ``index_defs`` objects (both are
#: replaced, never changed in place, by every schema or index change and its rollback).
_Query = tuple[
    "dict[str, str] | None",
    "list[tuple[str, ...]]",
    "list[Condition]",
    "Predicate",
    "list[tuple[str, bool]]",
    "Plan | None",
]
#: Most compiled queries a table keeps; a full cache is emptied (a worker pool asks a
#: handful of shapes; a client sending endless distinct ones costs one insert each).
QUERY_CACHE_SIZE: Final = 64
#: Test-only fault switch (never set it outside tests): ``stale_queries`` lets a table's
#: cached queries outlive a change of its schema or indexes, so that the tests that must
#: catch a stale cache can show they do.
FAULTS: Final = frozenset(os.environ.get("STATEENGINE_QUERY_FAULTS", "").split(",")) - {""}


@dataclass
class Table:
    name: str
    #: ``["id", field, ...]`` in schema order, or None before the first record.
    fields: list[str] | None = None
    #: field → type name; all ``any`` unless declared.
    types: dict[str, str] | None = None
    declared: bool = False
    version: int = 0
    next_id: int = 1
    max_length: int | None = None
    #: id → record; each record holds ``id``, the schema fields and ``_version``.
    records: dict[Id, Record] = field(default_factory=dict)
    leases: dict[Id, Lease] = field(default_factory=dict)
    #: Declared indexes, each a tuple of field names (``CREATE_STATE``/``ALTER_STATE``).
    index_defs: list[tuple[str, ...]] = field(default_factory=list)
    #: Their sorted entries, built on the first indexed query (server/indexes.py).
    ix: TableIndexes | None = field(default=None, compare=False, repr=False)
    #: Compiled queries by ``where`` and ``order_by`` (:meth:`TableEngine._query`).
    queries: dict[Any, _Query] = field(default_factory=dict, compare=False, repr=False)

    def schema(self) -> Schema | None:
        if self.fields is None or self.types is None:
            return None
        return self.fields, self.types

    def meta(self) -> tuple[Any, ...]:
        return (self.fields, self.types, self.declared, self.version, self.next_id, self.max_length)

    def restore_meta(self, meta: tuple[Any, ...]) -> None:
        (self.fields, self.types, self.declared, self.version, self.next_id, self.max_length) = meta

    def state(self) -> dict[str, Any]:
        """Everything but the records and leases, as plain msgpack-able values."""
        return {
            "fields": self.fields,
            "types": self.types,
            "declared": self.declared,
            "version": self.version,
            "next_id": self.next_id,
            "max_length": self.max_length,
            "indexes": [list(f) for f in self.index_defs] if self.index_defs else [],
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        self.fields = state["fields"]
        self.types = state["types"]
        self.declared = state["declared"]
        self.version = state["version"]
        self.next_id = state["next_id"]
        self.max_length = state["max_length"]
        self.index_defs = [tuple(f) for f in state.get("indexes", ())]  # absent before indexes
        self.ix = None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema": list(self.fields or []),
            "types": dict(self.types) if self.types is not None else None,
            "version": self.version,
            "size": len(self.records),
            "max_length": self.max_length,
            "next_id": self.next_id,
            "indexes": [list(fields) for fields in self.index_defs],
        }


#: A command's handler: validates its request, applies it, returns its ``result``.
Command = Callable[["TableEngine", dict[str, Any]], Any]

#: What a request inside a BATCH may carry besides its command's arguments.
_NESTED: Final = frozenset({"command"})


#: Arguments whose type is checked at dispatch, before a handler looks at any state.
_SHAPES: Final = (
    ("record", dict),
    ("fields", dict),
    ("where", dict),
    ("if_match", dict),
    ("dead_letter", dict),
    ("add", dict),
    ("schema", dict),
    ("records", list),
    ("drop", list),
)


def _flat_fields(types: dict[str, str], fields: dict[str, Any]) -> bool:
    """Whether a patch's *fields* are known, not the id, and scalars their types take as
    they are (:meth:`TableEngine._validate_patch` would return them unchanged): the
    flat patch paths' test, one home for :meth:`TableEngine._flat_merge` and
    :meth:`TableEngine._flat_patches`."""
    if "id" in fields or not fields.keys() <= types.keys():
        return False
    for name, value in fields.items():
        if (type(value), types[name]) not in UNCHANGED_FIELDS:
            return False
    return True


#: The command table (a dict the tests add to: never rebound, so bound here once).
_COMMANDS: Final = command_table.COMMANDS

#: command name → :func:`_plan` of its spec (rebuilt when the spec object changes:
#: tests register commands).
_PLANS: dict[str, tuple[Any, ...]] = {}


def _plan(spec: command_table.CommandSpec) -> tuple[Any, ...]:
    """What :meth:`TableEngine._lookup` checks of a command, computed once: ``(spec,
    allowed keys, allowed keys in a BATCH, required keys, the shapes of its arguments
    as (key, type, required))``. A shape of an argument the command does not take can
    never fail (the key is refused first, or absent), so it is left out."""
    shapes = tuple((key, kind, key in spec.required) for key, kind in _SHAPES if key in spec.args)
    return (spec, spec.allowed, spec.args | _NESTED, frozenset(spec.required), shapes)


class TableEngine:
    """Every table and the global commit sequence; the writer's single source of truth.

    :param clock: wall-clock seconds for lease deadlines (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        #: Copy records into results. The server turns it off: it encodes each reply
        #: before the next command runs, so the stored dicts cannot change under it.
        self.copy_results = True
        #: The request maps given to :meth:`execute` are the engine's to keep and change.
        #: The server turns it on: it decodes each request from its body and drops it
        #: after the reply, so a bulk load's records are stored as they came, stamped
        #: in place, not copied (:meth:`_flat_set_state`).
        self.owns_requests = False
        self.tables: dict[str, Table] = {}
        self.seq = 0
        #: (table, id) of every record written or deleted by the last commit, and the
        #: names of tables created, dropped or altered; reset at each commit.
        self.changes: dict[tuple[str, Id], None] = {}
        self.table_changes: set[str] = set()
        #: (table, id) of records deleted by the last commit (a re-created one moved to
        #: the end of its table's order: replay must delete, then put).
        self.removed: set[tuple[str, Id]] = set()
        #: The server's own ``STATS`` figures (requests, store, arena), merged into the
        #: engine's; None in one process (``stateengine.Engine``).
        self.stats_hook: Callable[[], dict[str, Any]] | None = None
        self._journal: list[tuple[Any, ...]] | None = None
        #: One heap of every deadline: ``(when, tick, table, id, lease)`` for a lease and
        #: ``(when, tick, table, id, None)`` for a record's TTL. An entry is checked on
        #: use (the same lease object still held, the same ``_expires`` still set), so a
        #: completed, renewed or rolled-back one is dropped when it comes up, never acted on.
        self.deadlines: list[tuple[float, int, str, Id, Lease | None]] = []
        self._tick = itertools.count()
        #: (table, id) → how the last commit expired it, when it was an expiry commit,
        #: and the clock reading it was made at.
        self.expired: dict[tuple[str, Id], Expiry] = {}
        self.expired_at = 0.0
        self._order_saved: set[str] = set()
        self._wrote = False
        #: :meth:`_flat_rows`' verdicts for one schema (the last one asked about).
        self._rows_schema: Schema | None = None
        self._rows: dict[tuple[type, ...], bool] = {}
        #: :meth:`_accepts`' answer for one schema (the last one asked about).
        self._accepts_schema: Schema | None = None
        self._accepts_of: tuple[tuple[type, ...], ...] = ()

    # --- the entry points ------------------------------------------------------------------

    def execute(self, request: Any) -> dict[str, Any]:
        """Apply one request map and return its reply map (never raises)."""
        req_id = request.get("req_id", _MISSING) if isinstance(request, dict) else _MISSING
        try:
            result, version = self.apply(request)
            reply: dict[str, Any] = {
                "ok": True,
                "result": result,
                "version": version,
                "seq": self.seq,
            }
        except StateEngineError as exc:
            reply = {"ok": False, "error": exc.to_wire()}
        except Exception as exc:  # a bug must not take the writer down
            reply = {"ok": False, "error": InternalError(f"{describe(exc)}: {exc}").to_wire()}
        if req_id is not _MISSING:
            reply["req_id"] = req_id
        return reply

    def apply(self, request: Any) -> tuple[Any, int | None]:
        """Apply one request; return ``(result, table version or None)``.

        :raises StateEngineError: the subclass named by the wire error type; the state is
            then exactly as before the call.
        """
        # Fresh containers only where the last commit left something: the server takes
        # each commit's changes and resets them, so a request allocates none of them.
        if self.changes:
            self.changes = {}
        if self.table_changes:
            self.table_changes = set()
        if self.removed:
            self.removed = set()
        if self.expired:
            self.expired = {}
        self._wrote = False
        handler = self._lookup(request, nested=False)
        if handler is _BATCH:
            return self._batch(request), None
        result = handler(self, request)
        if self._wrote:  # _commit, inline: one call less a request
            self.seq += 1
        name = request.get("state")  # the version of the table the request names
        table = self.tables.get(name) if isinstance(name, str) else None
        return result, table.version if table is not None else None

    # --- dispatch --------------------------------------------------------------------------

    def _lookup(self, request: Any, nested: bool) -> Command:
        if not isinstance(request, dict):
            raise BadRequest(f"a request must be a map, not a {describe(request)}")
        name = request.get("command")
        if not isinstance(name, str):
            raise BadRequest("the request has no 'command' (a string naming the action)")
        spec = _COMMANDS.get(name)
        handler = HANDLERS.get(name)
        if spec is None or handler is None:
            raise UnknownCommand(f"unknown command {name!r:.80}")
        if nested and handler is _BATCH:
            raise BadRequest("a BATCH cannot contain a BATCH")
        plan = _PLANS.get(name)
        if plan is None or plan[0] is not spec:
            plan = _PLANS[name] = _plan(spec)
        # The common request (known arguments, the required ones there) is told by two
        # set comparisons in C; the loops below then only name what is wrong. Checking
        # every key and all nine shapes in Python was ~2.5 µs of a BATCH's ~13 µs
        # sub-command (issue 17, cProfile of 1000-CREATE_RECORD BATCHes).
        keys = request.keys()
        if not (keys <= (plan[2] if nested else plan[1]) and keys >= plan[3]):
            allowed = plan[2] if nested else plan[1]
            for key in request:
                if key not in allowed:
                    takes = ", ".join(sorted(spec.args)) or "no arguments"
                    raise BadRequest(f"{name} takes no argument {key!r:.80}; it takes {takes}")
            for key in spec.required:
                if key not in request:
                    raise BadRequest(f"{name} requires '{key}'")
        for key, kind, required in plan[4]:  # malformed: refused before any precondition
            value = request.get(key)
            if value is None and not required:
                continue  # an optional argument given as null is absent
            if not isinstance(value, kind):
                raise BadRequest(f"'{key}' must be a {kind.__name__}, not a {describe(value)}")
        return handler

    def _commit(self) -> None:
        if self._wrote:
            self.seq += 1

    def _batch(self, request: dict[str, Any]) -> list[Any]:
        commands = request["commands"]
        if not isinstance(commands, list):
            raise BadRequest(f"BATCH 'commands' must be a list, not a {describe(commands)}")
        self._journal = []
        self._order_saved = set()
        results = []
        try:
            flat = self._flat_creates(commands)
            if flat is None:
                flat = self._flat_patches(commands)
            if flat is not None:
                self._commit()
                return flat
            for index, sub in enumerate(commands):
                try:
                    handler = self._lookup(sub, nested=True)
                    results.append(handler(self, sub))
                except StateEngineError as exc:
                    exc.message = f"commands[{index}]: {exc.message}"
                    exc.args = (exc.message,)
                    raise
        except BaseException:
            self._rollback()
            raise
        finally:
            self._journal = None
        self._commit()
        return results

    def _flat_creates(self, commands: list[Any]) -> list[Any] | None:
        """A ``BATCH`` of nothing but ``CREATE_RECORD``s of flat records with new explicit
        ids into one table (the bulk load of ``bench``'s "BATCH of 1000"), applied as
        the sub-commands one by one would: the same records, results, table version and
        counter, journal (one meta entry: a rollback restores the first) and changes.
        None, having changed nothing, for any other batch (then they run one by one).

        The records are judged by :meth:`_flat_set_state`'s C loops: a sub-command cost
        ~8 µs of dispatch and per-record checks in Python, this ~2.5 (issue 17, engine
        CPU a record of 100 BATCHes of 1000, in-process).
        """
        n = len(commands)
        first = commands[0] if n else None
        if type(first) is not dict or len(first) != 3:
            return None
        name = first.get("state")
        if type(name) is not str:
            return None
        table = self.tables.get(name)
        if table is None or table.ix is not None:
            return None
        try:  # the first sub-command's arguments (all must have the same three keys)
            if self._lookup(first, nested=True) is not TableEngine._create_record:
                return None
        except StateEngineError:
            return None
        if table.max_length is not None and len(table.records) + n > table.max_length:
            return None
        # every command exactly these three keys, CREATE_RECORD, one state: one C pass
        # (shm/blocks.py flat_create_args; five map passes were ~0.24 µs a record)
        records = flat_create_args(commands, name)
        if records is None:
            return None
        schema = table.schema()
        if schema is None:  # the first record proposes it, as the first create would
            try:
                _, schema = self._validate_record(table, records[0], "record")
            except StateEngineError:
                return None
        flat = self._flat_set_state(
            records,
            schema,
            table.types.get("id", "any") if table.types else "any",
            self._next_seq,
            table.records.keys(),  # DuplicateId: the general path names it
        )
        if flat is None:
            return None
        ids, recs = flat
        assert self._journal is not None
        self._journal.append(("meta", table, table.meta()))
        self._journal.extend(  # C loops: a generator of these tuples took ~0.1 µs a record
            zip(
                itertools.repeat("rec"),
                itertools.repeat(table),
                ids,
                itertools.repeat(_MISSING),
                itertools.repeat(_MISSING),
                itertools.repeat(None),
            )
        )
        table.version += n
        self._wrote = True
        self._apply_schema(table, schema)
        if type(ids[0]) is int:  # all ints (_flat_set_state)
            table.next_id = max(table.next_id, max(cast(list[int], ids)) + 1)
        table.records.update(zip(ids, recs, strict=True))
        self.changes.update(dict.fromkeys(zip(itertools.repeat(name), ids)))
        return list(map(copy_value, recs)) if self.copy_results else recs

    def _flat_patches(self, commands: list[Any]) -> list[Any] | None:
        """A ``BATCH`` of nothing but plain ``PATCH_RECORD``s (``command``, ``state``,
        ``id``, ``fields``: no precondition, lease or TTL) of int ids in one table without
        index structures, whose every patch :meth:`_flat_merge` takes (the bench's "BATCH
        of 100"), applied as the sub-commands one by one would: the same records (a
        later patch of an id sees the earlier ones), results, version, leases completed
        (rule 4), deadlines, journal and changes. None, having changed nothing, for any
        other batch or any patch the general path must judge (a missing record, ...).

        Every patch is merged before any is applied, so nothing needs undoing when one
        is not flat. One sub-command of ``_lookup``, ``_patch_record`` and
        ``_flat_patch`` cost ~3.2 µs of engine CPU, here ~1.4 (issue 17, in-process,
        BATCHes of 100 two-field patches, medians of 7), ~0.5 with its checks, merge and
        apply loops in C (``shm/blocks.py`` flat_patch_args, flat_merge, flat_apply).
        """
        n = len(commands)
        if not n or type(commands[0]) is not dict:
            return None
        name = commands[0].get("state")
        if type(name) is not str:
            return None
        table = self.tables.get(name)
        if table is None or table.ix is not None or table.types is None:
            return None
        if table.types.get("id", "any") not in _INT_ID_TYPES:
            return None
        # every command exactly these four keys, one state, int ids in range, dict fields:
        # one C pass (shm/blocks.py flat_patch_args; eight map passes were ~0.42 µs a patch)
        args = flat_patch_args(commands, name)
        if args is None:
            return None
        ids, patches = args
        records = table.records
        # _flat_merge's field checks (_flat_fields: by the value types each field's type
        # takes unchanged), each patch merged onto the record as the earlier ones left it,
        # in one C call (shm/blocks.py flat_merge): the loop in Python was ~0.93 µs a patch
        # (issue 17, thread CPU, BATCHes of 100); and one encode for all the merged
        # records (the ints' range and the text; a total within the limit bounds each).
        types = table.types
        accepts = {field: _UNCHANGED_BY_TYPE.get(tn, ()) for field, tn in types.items()}
        out = flat_merge(ids, patches, records, accepts)
        if out is None:
            return None  # RecordNotFound, a field to check: the general path names it
        try:
            size = len(_packb(out))
        except Exception:  # an int past 64 bits, a lone surrogate: named by the checks
            return None
        if size > MAX_RECORD_BYTES and any(len(_packb(r)) > MAX_RECORD_BYTES for r in out):
            return None
        journal = self._journal
        assert journal is not None
        journal.append(("meta", table, table.meta()))
        table.version += n
        self._wrote = True
        version = self.seq + 1
        leases = table.leases
        changes = self.changes
        if not leases:  # one C call (blocks.flat_apply): the loop below was ~0.37 µs a patch
            timed = flat_apply(
                ids,
                out,
                records,
                changes,
                journal,
                table,
                name,
                version,
                _MISSING,
                RESERVED_FIELD,
                EXPIRES_FIELD,
            )
            for i in timed:  # in the order the loop pushed them
                expires = out[i][EXPIRES_FIELD]
                heapq.heappush(self.deadlines, (expires, next(self._tick), name, ids[i], None))
            return list(map(copy_value, out)) if self.copy_results else out
        for rid, fields, record in zip(ids, patches, out, strict=True):
            journal.append(("rec", table, rid, records[rid], leases.get(rid, _MISSING), None))
            record[RESERVED_FIELD] = version
            records[rid] = record
            changes[(name, rid)] = None
            expires = record.get(EXPIRES_FIELD)
            if expires is not None:
                heapq.heappush(self.deadlines, (expires, next(self._tick), name, rid, None))
            if leases:
                lease = leases.get(rid)
                if lease is not None and any(f in lease.prior for f in fields):
                    del leases[rid]  # rule 4: a claimed field changed: completed
        return list(map(copy_value, out)) if self.copy_results else out

    # --- mutation primitives (journaled inside a batch) -------------------------------------

    @property
    def _next_seq(self) -> int:
        return self.seq + 1

    def _touch_table(self, table: Table) -> None:
        """Note a write to *table*; call once per write command, before mutating."""
        if self._journal is not None:
            self._journal.append(("meta", table, table.meta()))
        table.version += 1
        self._wrote = True

    def _put(self, table: Table, rid: Id, record: Record) -> None:
        ix = table.ix
        if self._journal is not None:
            self._journal.append(
                (
                    "rec",
                    table,
                    rid,
                    table.records.get(rid, _MISSING),
                    table.leases.get(rid, _MISSING),
                    ix.positions.get(rid) if ix is not None else None,
                )
            )
        record[RESERVED_FIELD] = self.seq + 1  # _next_seq, inline: once per write
        if ix is not None:
            ix.put(rid, table.records.get(rid), record)
        table.records[rid] = record
        self.changes[(table.name, rid)] = None
        expires = record.get(EXPIRES_FIELD)
        if expires is not None:
            heapq.heappush(self.deadlines, (expires, next(self._tick), table.name, rid, None))

    def _remove(self, table: Table, rid: Id) -> None:
        if self._journal is not None:
            if table.name not in self._order_saved:
                self._order_saved.add(table.name)
                self._journal.append(("order", table, list(table.records)))
            self._journal.append(
                (
                    "rec",
                    table,
                    rid,
                    table.records[rid],
                    table.leases.get(rid, _MISSING),
                    table.ix.positions.get(rid) if table.ix is not None else None,
                )
            )
        if table.ix is not None:
            table.ix.remove(rid, table.records[rid])
        del table.records[rid]
        table.leases.pop(rid, None)
        self.changes[(table.name, rid)] = None
        self.removed.add((table.name, rid))

    def _set_lease(self, table: Table, rid: Id, lease: Lease | None) -> None:
        # The record's own journal entry (from _put/_remove) restores the lease.
        if lease is None:
            table.leases.pop(rid, None)
        else:
            table.leases[rid] = lease
            heapq.heappush(
                self.deadlines, (lease.expires, next(self._tick), table.name, rid, lease)
            )

    def _replace_table(self, name: str, table: Table | None) -> None:
        if self._journal is not None:
            self._journal.append(("table", name, self.tables.get(name)))
        if table is None:
            del self.tables[name]
        else:
            self.tables[name] = table
        self.table_changes.add(name)
        self._wrote = True

    def _replace_records(self, table: Table, records: dict[Id, Record]) -> None:
        if self._journal is not None:
            self._journal.append(("records", table, table.records, table.leases, table.ix))
        # Republished whole: the order of ids may change, and an empty SET_STATE on an
        # empty table still bumps its version.
        self.table_changes.add(table.name)
        table.records = records
        table.leases = {}
        table.ix = None  # rebuilt by the next indexed query

    def _rollback(self) -> None:
        assert self._journal is not None
        for entry in reversed(self._journal):
            kind = entry[0]
            if kind == "meta":
                entry[1].restore_meta(entry[2])
            elif kind == "rec":
                _, table, rid, old, lease, position = entry
                if table.ix is not None:
                    table.ix.restore(
                        rid, table.records.get(rid), None if old is _MISSING else old, position
                    )
                if old is _MISSING:
                    table.records.pop(rid, None)
                else:
                    table.records[rid] = old
                if lease is _MISSING:
                    table.leases.pop(rid, None)
                else:
                    table.leases[rid] = lease
            elif kind == "order":
                _, table, order = entry
                table.records = {rid: table.records[rid] for rid in order}
            elif kind == "records":
                _, table, records, leases, ix = entry
                table.records, table.leases, table.ix = records, leases, ix
            elif kind == "indexes":
                _, table, definitions = entry
                table.index_defs = definitions
            elif kind == "table":
                _, name, old_table = entry
                if old_table is None:
                    self.tables.pop(name, None)
                else:
                    self.tables[name] = old_table
        self.changes = {}
        self.table_changes = set()
        self.removed = set()
        self._wrote = False

    def _out(self, record: Record) -> Record:
        return copy_value(record) if self.copy_results else record

    # --- argument helpers -------------------------------------------------------------------

    def _table(self, request: dict[str, Any], create: bool = False) -> Table:
        name = request["state"]
        table = self.tables.get(name) if type(name) is str else None
        if table is None:
            name = check_table_name(name)  # only a name not taken yet can be malformed
            if not create:
                raise StateNotFound(f"no state named {name!r}")
            table = Table(name)
            self._replace_table(name, table)
        return table

    @staticmethod
    def _id(value: Any, table: Table, where: str = "id") -> Id:
        check_id(value, where)  # what every store and the arena can key (stateengine.limits)
        id_type = table.types.get("id", "any") if table.types else "any"
        if id_type != "any":
            conform(value, id_type, where)
        return value  # type: ignore[no-any-return]

    def _existing(self, table: Table, request: dict[str, Any]) -> tuple[Id, Record]:
        rid = request["id"]
        # An int id in range on a table whose ids are ints or any: what _id says of it,
        # without its two calls (every record command of issue 17's write rows).
        types = table.types
        if not (
            type(rid) is int
            and ID_MIN <= rid <= ID_MAX
            and (types is None or types.get("id", "any") in _INT_ID_TYPES)
        ):
            rid = self._id(rid, table)
        record = table.records.get(rid)
        if record is None:
            raise RecordNotFound(f"no record with id {rid!r} in {table.name!r}")
        return rid, record

    @staticmethod
    def _int_arg(
        request: dict[str, Any], key: str, default: int | None = None, minimum: int = 0
    ) -> int | None:
        value = request.get(key, default)
        if value is None:
            return default
        if type(value) is not int or not minimum <= value <= INT_MAX:
            raise BadRequest(f"'{key}' must be an integer >= {minimum}, not {value!r:.60}")
        return value

    @staticmethod
    def _map_arg(request: dict[str, Any], key: str, required: bool = True) -> dict[str, Any]:
        value = request.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise BadRequest(f"'{key}' must be a map, not a {describe(value)}")
        for k in value:
            if not isinstance(k, str):
                raise BadRequest(f"'{key}': field names are strings, not {describe(k)}")
            if not k.isascii():
                check_text(k, f"'{key}' (a field name)")
        return value

    @staticmethod
    def wait_arg(request: dict[str, Any], nested: bool = False) -> float | None:
        """A claim's ``wait`` (seconds), checked; the server parks such a claim when it
        finds nothing (README "Blocking claims"); the engine answers it as any claim.

        :raises BadRequest: not a number in [0, MAX_CLAIM_WAIT], or inside a ``BATCH``.
        """
        value = request.get("wait")
        if value is None:
            return None
        if nested:
            raise BadRequest("'wait' is for a CLAIM_RECORD on its own, not inside a BATCH")
        if type(value) not in (int, float) or not 0 <= value <= MAX_CLAIM_WAIT:
            raise BadRequest(
                f"'wait' must be a number of seconds from 0 to {MAX_CLAIM_WAIT:g}, "
                f"not {value!r:.60}"
            )
        return float(value)

    # --- time: the expiry commit -------------------------------------------------------

    def _live(self, entry: tuple[float, int, str, Id, Lease | None]) -> bool:
        """Whether a deadline entry still stands (see :attr:`deadlines`)."""
        when, _, name, rid, lease = entry
        table = self.tables.get(name)
        if table is None:
            return False
        if lease is not None:
            return table.leases.get(rid) is lease
        record = table.records.get(rid)
        return record is not None and record.get(EXPIRES_FIELD) == when

    def rebuild_deadlines(self, ttl_tables: Collection[str] | None = None) -> None:
        """Rebuild :attr:`deadlines` from the leases and TTLs held (after a recovery that
        loaded tables directly). *ttl_tables*: the only tables whose records may hold a
        TTL, when the caller knows (``RecoveryReport.ttl_tables``); None scans them all."""
        tick = self._tick
        self.deadlines = [
            (lease.expires, next(tick), name, rid, lease)
            for name, table in self.tables.items()
            for rid, lease in table.leases.items()
        ]
        self.deadlines += [
            (record[EXPIRES_FIELD], next(tick), name, rid, None)
            for name, table in self.tables.items()
            if ttl_tables is None or name in ttl_tables
            for rid, record in table.records.items()
            if EXPIRES_FIELD in record
        ]
        heapq.heapify(self.deadlines)

    def next_deadline(self) -> float | None:
        """When the next lease or TTL runs out (stale entries on top are dropped)."""
        heap = self.deadlines
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire_due(self, now: float) -> bool:
        """Commit every expiry whose deadline is ``<= now``, as one commit; whether any.

        A lease that ran out gets the values its claim overwrote put back (an ``$inc``
        counter excepted), or, when its claim's counter reached ``max_attempts``, the
        dead-letter fields; its lease ends. A record whose TTL ran out is deleted. Every
        record written gets this commit's ``seq`` as ``_version`` and each table touched
        rises by one version. :attr:`expired` says what happened to each record.
        """
        heap = self.deadlines
        self.expired = {}
        if not heap or heap[0][0] > now:
            return False
        self.changes = {}
        self.table_changes = set()
        self.removed = set()
        self.expired_at = now
        self._wrote = False
        touched: set[str] = set()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            _, _, name, rid, lease = entry
            table = self.tables[name]
            if name not in touched:
                touched.add(name)
                self._touch_table(table)
            if lease is None:
                self._remove(table, rid)
                self.expired[(name, rid)] = "ttl"
                continue
            record = {**table.records[rid], **lease.prior}
            how = "lease"
            if lease.dead is not None:
                counter, most, dead_fields = lease.dead
                count = table.records[rid].get(counter)
                if isinstance(count, (int, float)) and count >= most:
                    record.update(dead_fields)
                    how = "dead"
            del record[RESERVED_FIELD]
            table.leases.pop(rid, None)
            self._put(table, rid, record)
            self.expired[(name, rid)] = how
        self._commit()
        return self._wrote

    @staticmethod
    def _ttl_arg(request: dict[str, Any]) -> float | None:
        value = request.get("ttl")
        if value is None:
            return None
        if type(value) not in (int, float) or not 0 < value < 10**9:
            raise BadRequest(f"'ttl' must be a positive number of seconds, not {value!r:.60}")
        return float(value)

    @staticmethod
    def _lease_arg(request: dict[str, Any]) -> float | None:
        value = request.get("lease_seconds")
        if value is None:
            return None
        if type(value) not in (int, float) or not 0 < value < 10**9:
            raise BadRequest(f"'lease_seconds' must be a positive number, not {value!r:.60}")
        return float(value)

    def _check_expected_version(self, table: Table, request: dict[str, Any]) -> None:
        expected = request.get("expected_version")
        if expected is None:
            return
        if type(expected) is not int or not INT_MIN <= expected <= INT_MAX:
            raise BadRequest(f"'expected_version' must be a 64-bit integer, not {expected!r:.60}")
        if expected != table.version:
            raise VersionConflict(
                f"{table.name!r} is at version {table.version}, expected {expected}"
            )

    def _check_preconditions(
        self, table: Table, request: dict[str, Any], rid: Id, record: Record
    ) -> None:
        self._check_expected_version(table, request)
        if_version = request.get("if_version")
        if if_version is not None:
            if type(if_version) is not int or not INT_MIN <= if_version <= INT_MAX:
                raise BadRequest(f"'if_version' must be a 64-bit integer, not {if_version!r:.60}")
            if record[RESERVED_FIELD] != if_version:
                raise VersionConflict(
                    f"record {rid!r} has _version {record[RESERVED_FIELD]}, expected {if_version}"
                )
        if request.get("if_match") is not None:
            if_match = self._map_arg(request, "if_match")
            self._where(table, request, "if_match")  # refuses bad fields and operators first
            for name, value in if_match.items():
                if not compile_where({name: value}, "if_match")[1](record):
                    raise VersionConflict(
                        f"record {rid!r}: {name} is {record.get(name)!r:.60}, "
                        f"if_match wants {value!r:.60}"
                    )

    # --- schema -----------------------------------------------------------------------------

    @staticmethod
    def _known_field(table: Table, name: Any, where: str) -> None:
        if name in _RESERVED:
            return
        if table.fields is None or name not in table.types:  # type: ignore[operator]
            raise SchemaError(f"{where}: unknown field {name!r:.80} in {table.name!r}")

    def _validate_record(
        self, table: Table, raw: Any, where: str, schema: Schema | None = None
    ) -> tuple[Record, Schema]:
        """Validate a whole record; return it (copied, cast) and the schema it fits.

        On a table without a schema the record proposes one (returned, not applied).
        """
        if not isinstance(raw, dict):
            raise BadRequest(f"{where} must be a map, not a {describe(raw)}")
        if schema is None:
            schema = table.schema()
        if schema is not None and type(raw) is dict:
            flat = self._flat_record(raw, schema)
            if flat is not None:
                return flat, schema
        # Names all in the schema were checked when it was made: one set comparison
        # instead of four tests a name (~0.6 µs of a 6-field record, issue 17).
        known = schema is not None and raw.keys() <= schema[1].keys()
        for name in () if known else raw:
            if not isinstance(name, str) or not name:
                raise SchemaError(f"{where}: field names are non-empty strings, not {name!r:.60}")
            if not name.isascii():
                check_text(name, f"{where} (a field name)")
            if name == RESERVED_FIELD:
                raise SchemaError(
                    f"{where}: '_version' is reserved and never written; "
                    "use if_version for compare-and-set"
                )
            if name == EXPIRES_FIELD:
                raise SchemaError(f"{where}: '_expires' is reserved; give 'ttl' instead")
        if schema is None:
            names = ["id", *(n for n in raw if n != "id")]
            schema = (names, dict.fromkeys(names, "any"))
        fields, types = schema
        record: Record = {}
        for name in fields:
            if name == "id":
                continue
            if name not in raw:
                raise SchemaError(f"{where}: missing field {name!r} (schema: {fields})")
            record[name] = check_field(raw[name], types[name], where, name)
        for name in () if known else raw:
            if name != "id" and name not in types:
                raise SchemaError(f"{where}: unknown field {name!r} (schema: {fields})")
        return record, schema

    def _flat_rows(self, rows: Iterable[tuple[type, ...]], schema: Schema) -> bool:
        """Whether records whose values have these exact types, keys in *schema*'s order
        (``id`` first), pass :meth:`_validate_record` unchanged once their ints are in
        range and their text is valid (what one encode tells, :meth:`_flat_record`).

        The ``id`` is not judged here (:meth:`_id` is, by the callers); every other value
        must be a scalar its field's type takes without a cast (``protocol.accepts_unchanged``).
        """
        fields, types = schema
        cached = self._rows_schema  # Table.schema() makes a new tuple: compare its parts
        if cached is None or cached[0] is not fields or cached[1] is not types:
            self._rows_schema, self._rows = schema, {}
        verdicts = self._rows
        for row in rows:
            ok = verdicts.get(row)
            if ok is None:
                ok = (
                    len(row) == len(fields)
                    and fields[0] == "id"
                    and all(
                        accepts_unchanged(t, types[name])
                        for t, name in zip(row[1:], fields[1:], strict=True)
                    )
                )
                if len(verdicts) < 1024:  # a bound: values of many kinds of "any" field
                    verdicts[row] = ok
            if not ok:
                return False
        return True

    def _accepts(self, schema: Schema) -> tuple[tuple[type, ...], ...]:
        """Per field of *schema* (none for the id), the value types its field takes
        unchanged (``protocol.accepts_unchanged``): :func:`flat_ids`' *accepts*, made
        once per schema (the last one asked about)."""
        fields, types = schema
        cached = self._accepts_schema  # Table.schema() makes a new tuple: compare its parts
        if cached is None or cached[0] is not fields or cached[1] is not types:
            self._accepts_schema = schema
            self._accepts_of = (
                (),
                *(
                    tuple(t for t in _SCALAR_TYPES if accepts_unchanged(t, types[name]))
                    for name in fields[1:]
                ),
            )
        return self._accepts_of

    def _flat_record(self, raw: dict[str, Any], schema: Schema) -> Record | None:
        """*raw* validated as :meth:`_validate_record` would, without its id, or None when
        it is not a flat record in schema order (then the general checks run).

        A 6-field record: ~0.8 µs here against ~3.5 field by field (issue 17, python -m
        timeit): its keys compared to the schema as one list, its value types judged once
        per combination (:meth:`_flat_rows`), its ints and text by one C encode.
        """
        fields = schema[0]
        keys = list(raw)
        if keys == fields:  # with its id (not judged here: see _flat_rows)
            row = tuple(map(type, raw.values()))
        elif keys == fields[1:]:  # without: an auto-increment id
            row = (object, *map(type, raw.values()))
        else:
            return None
        if not self._flat_rows((row,), schema):
            return None
        try:
            _packb(raw)  # ints past 64 bits, lone surrogates: the general checks name them
        except Exception:
            return None
        record = raw.copy()
        if row[0] is not object:
            del record["id"]
        return record

    def _flat_set_state(
        self,
        records: list[Any],
        schema: Schema,
        id_type: str,
        seq: int,
        taken: KeysView[Id] | None = None,
    ) -> tuple[list[Id], list[Record]] | None:
        """The ids and the stored records (``_version`` *seq*) of a ``SET_STATE`` whose
        every record is flat, in schema order with its id, as :meth:`_set_state`'s checks
        would make them; None when one is not, or an id is in *taken* (then those checks
        run and name it), having changed nothing.

        Every step is one C loop over all records: 100,000 bench records took ~6 µs a
        record of checks in Python; here 0.7 (issue 17, bench.writepath --bulk).
        """
        fields = schema[0]
        n = len(records)
        if fields[0] != "id":
            return None
        # Keys in schema order, values of types their fields take unchanged, ids all ints
        # or all strs: one C pass (shm/blocks.py flat_ids; its twin: C-level maps).
        ids = flat_ids(records, tuple(fields), self._accepts(schema))
        if ids is None:
            return None
        id_types = {type(ids[0])}  # all of one type (flat_ids)
        if id_types == {int} and id_type in ("any", "integer"):
            if not (ID_MIN <= min(ids) and max(ids) <= ID_MAX):
                return None
        elif id_types == {str} and id_type in ("any", "string"):
            if max(map(len, ids)) > MAX_ID_BYTES // 4 or not all(map(str.isascii, ids)):
                return None
        else:
            return None
        if len(set(ids)) != n:
            return None
        try:
            _packb(records)
        except Exception:
            return None
        if taken is not None and not taken.isdisjoint(ids):
            return None
        if self.owns_requests:
            # The request's own maps, stamped in place: a copy of each was ~0.3 µs a
            # record of a 10^5-record SET_STATE (issue 17, thread CPU, in-process).
            collections.deque(
                map(
                    operator.setitem,
                    records,
                    itertools.repeat(RESERVED_FIELD),
                    itertools.repeat(seq),
                ),
                0,
            )
            return ids, records
        return ids, list(map(functools.partial(dict, **{RESERVED_FIELD: seq}), records))

    def _apply_schema(self, table: Table, schema: Schema) -> None:
        if table.fields is None:
            table.fields, table.types = schema

    def _validate_patch(
        self, table: Table, fields: dict[str, Any], rid: Id, where: str
    ) -> dict[str, Any]:
        patch = {}
        for name, value in fields.items():
            if name == "id":
                if not (type(value) is type(rid) and value == rid):
                    raise ImmutableId(f"{where}: cannot change id {rid!r} to {value!r:.60}")
                continue
            if name in _RESERVED:
                raise SchemaError(f"{where}: {name!r} is reserved and never written")
            self._known_field(table, name, where)
            patch[name] = check_field(value, table.types[name], where, name)  # type: ignore[index]
        return patch

    def _assign_id(self, table: Table, raw: dict[str, Any], taken: Iterable[Id], where: str) -> Id:
        """The id for a new record: its explicit ``id`` or the next auto-increment one."""
        if "id" in raw:
            rid = self._id(raw["id"], table, f"{where}.id")
            if rid in taken:
                raise DuplicateId(f"{where}: id {rid!r} already exists in {table.name!r}")
            return rid
        id_type = table.types.get("id", "any") if table.types else "any"
        if id_type.removesuffix("?") == "string":
            raise SchemaError(f"{where}: {table.name!r} has string ids; give an explicit 'id'")
        return _auto_id(table.next_id, where)  # past every integer id: explicit ones move it

    @staticmethod
    def _advance_counter(table: Table, rid: Id) -> None:
        if type(rid) is int and rid >= table.next_id:
            table.next_id = rid + 1

    # --- commands: table management ------------------------------------------------------

    def _create_state(self, request: dict[str, Any]) -> dict[str, Any]:
        name = check_table_name(request["state"])
        if name in self.tables:
            raise StateExists(f"a state named {name!r} exists")
        max_length = self._int_arg(request, "max_length", minimum=1)
        table = Table(name, max_length=max_length)
        schema = request.get("schema")
        if schema is not None:
            schema = self._map_arg(request, "schema")
            types = {"id": "any"}
            for fname, tname in schema.items():
                if not fname:
                    raise SchemaError("schema: field names are non-empty strings")
                if fname in _RESERVED:
                    raise SchemaError(f"schema: {fname!r} is reserved")
                check_type_name(tname, f"schema.{fname}")
                if fname == "id" and tname.removesuffix("?") not in ("integer", "string", "any"):
                    raise SchemaError("schema.id: an id is 'integer' or 'string'")
                types[fname] = tname.removesuffix("?") if fname == "id" else tname
            table.fields = ["id", *(f for f in schema if f != "id")]
            table.types = {f: types[f] for f in table.fields}
            table.declared = True
        if request.get("indexes") is not None:
            if table.fields is None:
                raise SchemaError("indexes: declare a schema for the fields they cover")
            table.index_defs = self._new_indexes(table, [], request["indexes"], table.fields)
        self._replace_table(name, table)
        return table.info()

    @staticmethod
    def _new_indexes(
        table: Table, existing: list[tuple[str, ...]], value: Any, fields: list[str]
    ) -> list[tuple[str, ...]]:
        """*existing* plus the indexes *value* declares, each over known *fields*."""
        out = list(existing)
        for i, index in enumerate(parse_indexes(value, "indexes")):
            for name in index:
                if name not in fields:
                    raise SchemaError(f"indexes[{i}]: unknown field {name!r:.80} in {table.name!r}")
            if index in out:
                raise SchemaError(
                    f"indexes[{i}]: {list(index)} is already an index of {table.name!r}"
                )
            out.append(index)
        if len(out) > MAX_INDEXES:
            raise BadRequest(f"indexes: a table has at most {MAX_INDEXES} indexes")
        return out

    def _delete_state(self, request: dict[str, Any]) -> None:
        table = self._table(request)
        self._replace_table(table.name, None)
        return None

    def _list_states(self, request: dict[str, Any]) -> list[str]:
        return sorted(self.tables)

    def _get_state_info(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._table(request).info()

    def _get_schema(self, request: dict[str, Any]) -> list[str]:
        return list(self._table(request).fields or [])

    def _stats(self, request: dict[str, Any]) -> dict[str, Any]:
        """``STATS``: per table records, version and leases, then :attr:`stats_hook`'s."""
        tables = {
            name: {"records": len(t.records), "version": t.version, "leases": len(t.leases)}
            for name, t in sorted(self.tables.items())
        }
        result: dict[str, Any] = {"seq": self.seq, "tables": tables}
        if self.stats_hook is not None:
            result.update(self.stats_hook())
        return result

    def _sync(self, request: dict[str, Any]) -> None:
        """``SYNC``: null. One engine has applied every write it acknowledged; a cluster
        node answers it before the engine sees it (server/cluster.py)."""
        return None

    def _alter_state(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request)
        self._check_expected_version(table, request)
        add = self._map_arg(request, "add", required=False)
        drop = request.get("drop")
        drop = [] if drop is None else drop
        if not isinstance(drop, list):
            raise BadRequest(f"'drop' must be a list of field names, not a {describe(drop)}")
        for name in drop:
            if not isinstance(name, str):
                raise BadRequest(f"'drop' must hold field names (strings), not a {describe(name)}")
        add_indexes = request.get("add_indexes")
        drop_indexes = parse_indexes(request.get("drop_indexes") or [], "drop_indexes")
        if not add and not drop and add_indexes is None and not drop_indexes:
            raise BadRequest("ALTER_STATE needs 'add', 'drop', 'add_indexes' or 'drop_indexes'")
        fields = list(table.fields or ["id"])
        types = dict(table.types or {"id": "any"})
        for name in drop:
            if name == "id":
                raise SchemaError("drop: 'id' cannot be dropped")
            if name not in types:
                raise SchemaError(f"drop: unknown field {name!r:.80} in {table.name!r}")
            fields.remove(name)
            del types[name]
        defaults = {}
        for name, spec in add.items():
            if not name or name in _RESERVED:
                raise SchemaError(f"add: {name!r} is not a valid field name")
            if name in types:
                raise SchemaError(f"add: field {name!r} exists in {table.name!r}")
            if not isinstance(spec, dict):
                raise BadRequest(f"add.{name} must be a map {{type?, default?}}")
            for key in spec:
                if key not in ("type", "default"):
                    raise BadRequest(f"add.{name} takes no key {key!r:.60}")
            tname = check_type_name(spec.get("type", "any"), f"add.{name}.type")
            default = check_value(spec.get("default"), f"add.{name}.default")
            defaults[name] = conform(default, tname, f"add.{name}.default")
            fields.append(name)
            types[name] = tname
        index_defs = list(table.index_defs)
        for i, index in enumerate(drop_indexes):
            if index not in index_defs:
                raise SchemaError(
                    f"drop_indexes[{i}]: {list(index)} is not an index of {table.name!r}"
                )
            index_defs.remove(index)
        for index in index_defs:
            gone = [name for name in index if name not in types]
            if gone:
                raise SchemaError(
                    f"drop: {gone[0]!r} is in the index {list(index)}; drop the index too "
                    "(drop_indexes)"
                )
        if add_indexes is not None:
            index_defs = self._new_indexes(table, index_defs, add_indexes, fields)
        self._touch_table(table)
        if self._journal is not None:
            self._journal.append(("records", table, table.records, table.leases, table.ix))
            self._journal.append(("indexes", table, table.index_defs))
        table.index_defs = index_defs
        table.ix = None  # rebuilt by the next indexed query
        new_records = {}
        for rid, record in table.records.items():
            new = {
                name: copy_value(defaults[name]) if name in defaults else record[name]
                for name in fields
            }
            if EXPIRES_FIELD in record:
                new[EXPIRES_FIELD] = record[EXPIRES_FIELD]
            new_records[rid] = new
        table.records = new_records
        table.leases = {
            rid: Lease(
                lease.expires,
                {k: v for k, v in lease.prior.items() if k not in drop},
                lease.dead if lease.dead is None or lease.dead[0] not in drop else None,
            )
            for rid, lease in table.leases.items()
        }
        for rid, lease in table.leases.items():  # new lease objects: new heap entries
            heapq.heappush(
                self.deadlines, (lease.expires, next(self._tick), table.name, rid, lease)
            )
        for rid, record in new_records.items():
            record[RESERVED_FIELD] = self._next_seq
            self.changes[(table.name, rid)] = None
        table.fields, table.types = fields, types
        self.table_changes.add(table.name)
        return table.info()

    # --- commands: records ---------------------------------------------------------------------

    def _set_state(self, request: dict[str, Any]) -> int:
        records = request["records"]
        if not isinstance(records, list):
            raise BadRequest(f"'records' must be a list, not a {describe(records)}")
        name = check_table_name(request["state"])
        existing = self.tables.get(name)
        probe = existing or Table(name)
        self._check_expected_version(probe, request)  # a table to create is at version 0
        schema = probe.schema()
        if records and type(records[0]) is dict:
            flat = self._flat_set_state_of(probe, records, schema)
            if flat is not None:
                return self._set_state_flat(request, probe, *flat)
        validated: list[tuple[Id | None, Record]] = []
        explicit: set[Id] = set()
        for i, raw in enumerate(records):
            record, schema = self._validate_record(probe, raw, f"records[{i}]", schema)
            rid: Id | None = None
            if "id" in raw:
                rid = self._id(raw["id"], probe, f"records[{i}].id")
                if rid in explicit:
                    raise DuplicateId(f"records[{i}]: id {rid!r} appears twice in the input")
                explicit.add(rid)
            validated.append((rid, record))
        if probe.max_length is not None:
            validated = validated[: probe.max_length]
        # Auto ids start past every explicit id kept, so none collides.
        next_id = probe.next_id
        for rid, _ in validated:
            if type(rid) is int and rid >= next_id:
                next_id = rid + 1
        id_type = probe.types.get("id", "any") if probe.types else "any"
        new: dict[Id, Record] = {}
        for i, (rid, record) in enumerate(validated):
            if rid is None:
                if id_type.removesuffix("?") == "string":
                    raise SchemaError(f"records[{i}]: string ids; give an explicit 'id'")
                rid = _auto_id(next_id, f"records[{i}]")
                next_id += 1
            new[rid] = {"id": rid, **record}
        table = self._table(request, create=True)
        self._touch_table(table)
        if schema is not None:
            self._apply_schema(table, schema)
        table.next_id = next_id
        self._replace_records(table, new)
        for record in new.values():
            record[RESERVED_FIELD] = self._next_seq
        return len(new)

    def _flat_set_state_of(
        self, probe: Table, records: list[Any], schema: Schema | None
    ) -> tuple[Schema, list[Id], list[Record]] | None:
        """:meth:`_flat_set_state` with the schema the records fit: the table's, or the
        one its first record proposes."""
        if schema is None:
            try:
                _, schema = self._validate_record(probe, records[0], "records[0]")
            except StateEngineError:
                return None  # the general checks raise it, in their order
        id_type = probe.types.get("id", "any") if probe.types else "any"
        flat = self._flat_set_state(records, schema, id_type, self._next_seq)
        return None if flat is None else (schema, *flat)

    def _set_state_flat(
        self,
        request: dict[str, Any],
        probe: Table,
        schema: Schema,
        ids: list[Id],
        recs: list[Record],
    ) -> int:
        """The rest of :meth:`_set_state` for what :meth:`_flat_set_state` made."""
        if probe.max_length is not None:
            ids, recs = ids[: probe.max_length], recs[: probe.max_length]
        next_id = probe.next_id
        if ids and type(ids[0]) is int:  # all ints (_flat_set_state)
            next_id = max(next_id, max(cast(list[int], ids)) + 1)
        table = self._table(request, create=True)
        self._touch_table(table)
        self._apply_schema(table, schema)
        table.next_id = next_id
        self._replace_records(table, dict(zip(ids, recs, strict=True)))
        return len(recs)

    def _create_record(self, request: dict[str, Any]) -> Record:
        raw = request["record"]
        name = request["state"]
        table = self.tables.get(name) if type(name) is str else None
        if table is None:
            name = check_table_name(name)  # only a name not taken yet can be malformed
        probe = table or Table(name)
        # A missing table is created at version 0: expected_version must say 0.
        if "expected_version" in request:
            self._check_expected_version(probe, request)
        record, schema = self._validate_record(probe, raw, "record")
        ttl = self._ttl_arg(request) if "ttl" in request else None
        if probe.max_length is not None and len(probe.records) >= probe.max_length:
            raise CapacityError(f"{probe.name!r} is full: max_length {probe.max_length} reached")
        rid = self._assign_id(probe, raw, probe.records, "record")
        if table is None:
            table = self._table(request, create=True)
        self._touch_table(table)
        if table.fields is None:  # _apply_schema and _advance_counter, inline
            table.fields, table.types = schema
        if type(rid) is int and rid >= table.next_id:
            table.next_id = rid + 1
        record = {"id": rid, **record}
        if ttl is not None:
            record[EXPIRES_FIELD] = self.clock() + ttl
        self._put(table, rid, record)
        return self._out(record)

    def _set_record(self, request: dict[str, Any]) -> Record:
        table = self._table(request)
        rid, old = self._existing(table, request)
        if not request.keys().isdisjoint(_PRECONDITIONS):
            self._check_preconditions(table, request, rid, old)
        raw = request["record"]
        if isinstance(raw, dict) and "id" in raw:
            given = raw["id"]
            if not (type(given) is type(rid) and given == rid):
                raise ImmutableId(f"record: cannot change id {rid!r} to {given!r:.60}")
        record, _ = self._validate_record(table, raw, "record")
        ttl = self._ttl_arg(request)
        self._touch_table(table)
        record = {"id": rid, **record}
        if ttl is not None:  # a replaced record loses its TTL unless given one (Redis SET)
            record[EXPIRES_FIELD] = self.clock() + ttl
        self._put(table, rid, record)
        self._set_lease(table, rid, None)
        return self._out(record)

    def _patch_record(self, request: dict[str, Any]) -> Record:
        table = self._table(request)
        rid, old = self._existing(table, request)
        if request.keys() <= _PLAIN_PATCH:
            record = self._flat_patch(table, request["fields"], rid, old)
            if record is not None:
                return record
        self._check_preconditions(table, request, rid, old)
        fields = self._map_arg(request, "fields")
        patch = self._validate_patch(table, fields, rid, "fields")
        lease_seconds = self._lease_arg(request)
        ttl = self._ttl_arg(request)
        lease = table.leases.get(rid)
        if lease_seconds is not None and lease is None:
            raise BadRequest(f"record {rid!r} holds no lease to renew")
        record = {**old, **patch}
        if ttl is not None:
            record[EXPIRES_FIELD] = self.clock() + ttl
        _check_record_size(record, rid)
        self._touch_table(table)
        self._put(table, rid, record)
        if lease_seconds is not None and lease is not None:
            renewed = Lease(self.clock() + lease_seconds, dict(lease.prior), lease.dead)
            self._set_lease(table, rid, renewed)
        elif lease is not None and any(name in lease.prior for name in patch):
            self._set_lease(table, rid, None)  # rule 4: a claimed field changed: completed
        return self._out(record)

    def _flat_patch(
        self, table: Table, fields: dict[str, Any], rid: Id, old: Record
    ) -> Record | None:
        """A ``PATCH_RECORD`` with no precondition, lease or TTL whose fields pass
        :meth:`_flat_merge`, applied as the general path applies it; None, having
        changed nothing, for any other (then that path runs and names what is wrong).

        With the cuts in :meth:`apply`, the bench's 2-field patch: 4.2 -> 3.45 µs of
        engine CPU (issue 17, in-process, thread CPU, medians of three interleaved runs).
        """
        record = self._flat_merge(table, fields, old)
        if record is None:
            return None
        lease = table.leases.get(rid)
        self._touch_table(table)
        self._put(table, rid, record)
        if lease is not None and any(name in lease.prior for name in fields):
            self._set_lease(table, rid, None)  # rule 4: a claimed field changed: completed
        return self._out(record)

    @staticmethod
    def _flat_merge(table: Table, fields: dict[str, Any], old: Record) -> Record | None:
        """``{**old, **fields}`` when *fields* are known, not the id, and scalars their
        types take as they are, so that :meth:`_validate_patch` would return them
        unchanged, and the record is within the size limit; None when not (then the
        general checks run and name what is wrong).

        The ints' range and the text are judged by the encode the record's size check
        makes anyway (:func:`_check_record_size`).
        """
        types = table.types
        if types is None or not _flat_fields(types, fields):
            return None
        record = {**old, **fields}
        try:
            size = len(_packb(record))
        except Exception:  # an int past 64 bits, a lone surrogate: named by the checks
            return None
        return record if size <= MAX_RECORD_BYTES else None

    def _expire_record(self, request: dict[str, Any]) -> Record:
        """``EXPIRE_RECORD``: set (``ttl`` seconds from now) or clear (``ttl`` null) a
        record's TTL; the record is otherwise unchanged and gets a new ``_version``."""
        table = self._table(request)
        rid, old = self._existing(table, request)
        if not request.keys().isdisjoint(_PRECONDITIONS):
            self._check_preconditions(table, request, rid, old)
        ttl = self._ttl_arg(request)
        record = {k: v for k, v in old.items() if k != EXPIRES_FIELD}
        if ttl is not None:
            record[EXPIRES_FIELD] = self.clock() + ttl
        self._touch_table(table)
        self._put(table, rid, record)
        return self._out(record)

    def _delete_record(self, request: dict[str, Any]) -> None:
        table = self._table(request)
        rid, old = self._existing(table, request)
        if not request.keys().isdisjoint(_PRECONDITIONS):
            self._check_preconditions(table, request, rid, old)
        self._touch_table(table)
        self._remove(table, rid)
        return None

    def _get_record(self, request: dict[str, Any]) -> Record:
        table = self._table(request)
        _, record = self._existing(table, request)
        return self._out(record)

    def _order(self, table: Table, request: dict[str, Any]) -> list[tuple[str, bool]]:
        keys = parse_order_by(request.get("order_by"))
        for name, _ in keys:
            self._known_field(table, name, "order_by")
        return keys

    def _where(
        self, table: Table, request: dict[str, Any], key: str = "where"
    ) -> tuple[list[Condition], Predicate]:
        """The compiled ``where`` (or ``if_match``): known fields, valid operators.

        Compiled from checked copies of its maps and lists (``check_value``'s), never the
        request's own: :meth:`_query` keeps the result past the request, whose objects
        the caller may change afterwards.
        """
        where = self._map_arg(request, key, required=False)
        checked = {}
        for name, value in where.items():
            self._known_field(table, name, key)
            checked[name] = check_value(value, f"{key}.{name}")
        return compile_where(checked, key)

    def _query(
        self, table: Table, request: dict[str, Any]
    ) -> tuple[list[Condition], Predicate, list[tuple[str, bool]], Plan | None]:
        """The request's compiled ``where``, its ``order_by`` keys and the index plan, as
        :meth:`_where`, :meth:`_order` and :func:`plan_query` make them (raising what they
        raise, in that order), from the table's cache when it holds this ``where`` and
        ``order_by`` for the table's current schema and indexes.

        A hit is exact: the key holds every ``where`` value with its type (``1``, ``1.0``
        and ``True`` are three keys), so the cached checks and plan are the ones the
        request would get. Only queries that pass their checks are cached.
        """
        where = request.get("where")
        order_by = request.get("order_by")
        queries = table.queries
        key: Any = None
        if where is None or type(where) is dict:  # anything else: _where names it
            # Values and their types, so that 1, 1.0 and True are three keys (no where
            # means what {} means). The claim rows' query: 0.56 µs a hit, against 5.3
            # for the checks, the compile and the plan (in-process, process time, best
            # of 5 x 20,000, median of 3).
            items = where.items() if where is not None else ()
            key = (tuple(items), tuple(map(type, where.values())) if where else (), order_by)
            try:
                entry = queries.get(key)
            except TypeError:  # a map or a list among the values, or an order_by list
                key = _query_key(where or {}, order_by)
                entry = queries.get(key) if key is not None else None
            if entry is not None and (
                (entry[0] is table.types and entry[1] is table.index_defs)
                or (FAULTS and "stale_queries" in FAULTS)
            ):
                return entry[2], entry[3], entry[4], entry[5]
        conditions, predicate = self._where(table, request)
        keys = self._order(table, request) if order_by is not None else []
        defs = table.index_defs
        plan = plan_query(defs, conditions, keys, sort_key) if defs else None
        if key is not None:
            if len(queries) >= QUERY_CACHE_SIZE:
                queries.clear()
            queries[key] = (table.types, defs, conditions, predicate, keys, plan)
        return conditions, predicate, keys, plan

    def _indexes(self, table: Table) -> TableIndexes | None:
        """The table's index structures, built now if it declares indexes (never inside a
        BATCH: a rollback must find them as the batch began)."""
        if table.ix is None and table.index_defs and self._journal is None:
            table.ix = TableIndexes(table.index_defs, table.records)
        return table.ix

    def _list_records(self, request: dict[str, Any]) -> list[Record]:
        table = self._table(request)
        _, where, keys, plan = self._query(table, request)
        offset = self._int_arg(request, "offset", 0) or 0
        limit = self._int_arg(request, "limit")
        end = None if limit is None else offset + limit
        ix = self._indexes(table) if plan is not None else None
        if plan is not None and ix is not None:
            rows = table.records
            found = (rows[rid] for rid in ix.scan(plan))
            found = (r for r in found if where(r))
            if plan.ordered:
                return [self._out(r) for r in itertools.islice(found, offset, end)]
            matched = sorted(found, key=lambda r: ix.positions[r["id"]])  # insertion order
            matched = order_records(matched, keys)
            return [self._out(r) for r in matched[offset:end]]
        records: Iterable[Record] = table.records.values()
        if where is not match_all:
            records = (r for r in records if where(r))
        if not keys:  # insertion order: stop as soon as the page is full
            return [self._out(r) for r in itertools.islice(records, offset, end)]
        matched = order_records(list(records), keys)
        return [self._out(r) for r in matched[offset:end]]

    def _claim_record(self, request: dict[str, Any]) -> Record | None:
        table = self._table(request)
        # (Each optional argument's check is skipped when the argument is absent: it
        # would pass. Four calls less for the common claim, issue 17.)
        if "expected_version" in request:
            self._check_expected_version(table, request)
        _, where, keys, plan = self._query(table, request)
        fields = self._map_arg(request, "fields")
        if "id" in fields:
            raise ImmutableId("fields: a claim cannot change a record's id")
        # (No map among the values: no increment; a lease only when asked for. Two calls
        # less for the common claim.)
        increments = self._increments(fields) if dict in map(type, fields.values()) else {}
        lease_seconds = self._lease_arg(request) if "lease_seconds" in request else None
        dead = None
        if "max_attempts" in request or "dead_letter" in request:
            dead = self._dead_letter_arg(table, request, increments, lease_seconds)
        if "wait" in request:
            self.wait_arg(request, nested=self._journal is not None)
        ix = (table.ix or self._indexes(table)) if plan is not None else None
        if plan is not None and ix is not None:
            candidates = self._indexed_candidates(table, ix, plan, where)
        else:
            candidates = self._scanned_candidates(table, where, keys)
        if not candidates:
            # Validate the patch anyway so a bad request is an error, not a silent null.
            self._validate_patch(table, {**fields, **increments}, 0, "fields")
            return None
        if keys and len(candidates) > 1:
            candidates = order_records(candidates, keys, get=lambda item: item[0])
        _, rid = candidates[0]
        old = table.records[rid]
        if increments:
            fields = {**fields, **self._added(table, rid, old, increments)}
        flat = self._flat_merge(table, fields, old)
        if flat is not None:
            patch, record = fields, flat
        else:
            patch = self._validate_patch(table, fields, rid, "fields")
            record = {**old, **patch}
            _check_record_size(record, rid)
        self._touch_table(table)
        self._put(table, rid, record)
        if lease_seconds is not None:
            # A counter the claim increments is not put back: attempts survive a lease.
            prior = {name: old[name] for name in patch if name not in increments}
            self._set_lease(table, rid, Lease(self.clock() + lease_seconds, prior, dead))
        elif rid in table.leases:  # (never for a record a claim found: rule 1)
            self._set_lease(table, rid, None)
        return self._out(record)

    @staticmethod
    def _increments(fields: dict[str, Any]) -> dict[str, int | float]:
        """The ``{"$inc": n}`` values of a claim's *fields*, as ``{field: n}``.

        :raises BadRequest: an amount that is not an int or a float (bool excluded).
        """
        out: dict[str, int | float] = {}
        for name, value in fields.items():
            if is_increment(value):
                amount = value["$inc"]
                if type(amount) not in (int, float) or (
                    type(amount) is int and not INT_MIN <= amount <= INT_MAX
                ):
                    raise BadRequest(f"fields.{name}.$inc: an int or a float, not {amount!r:.60}")
                out[name] = amount
        return out

    @staticmethod
    def _added(
        table: Table, rid: Id, old: Record, increments: dict[str, int | float]
    ) -> dict[str, int | float]:
        """The increments applied to the claimed record's values (as INCREMENT does).

        :raises SchemaError: a field that holds no number, or a sum past 64 bits.
        """
        out = {}
        for name, amount in increments.items():
            current = old.get(name)
            if not isinstance(current, (int, float)) or isinstance(current, bool):
                raise SchemaError(
                    f"fields.{name}.$inc: record {rid!r} holds a {describe(current)}, not a number"
                )
            value = current + amount
            if type(value) is int and not INT_MIN <= value <= INT_MAX:
                raise SchemaError(f"fields.{name}.$inc: {value} overflows the 64-bit range")
            out[name] = value
        return out

    @staticmethod
    def _indexed_candidates(
        table: Table, ix: TableIndexes, plan: Plan, where: Predicate
    ) -> list[tuple[Record, Any]]:
        """The claim's candidates from the index: the first (when the index yields the
        claim's order) or every unleased match in its range, in insertion order. A lease
        that ran out was ended by its expiry commit, so no lease here is claimable."""
        records, leases = table.records, table.leases
        if plan.ordered:  # rule 1: a record under a lease is not claimable
            rid = ix.first(plan, records, leases, where)
            return [] if rid is None else [(records[rid], rid)]
        found: list[tuple[Record, Any]] = []
        for rid in ix.scan(plan):
            if rid in leases:
                continue  # rule 1: a record under a lease is not claimable
            record = records[rid]
            if where(record):
                found.append((record, rid))
        if len(found) > 1:
            found.sort(key=lambda item: ix.positions[item[1]])
        return found

    @staticmethod
    def _scanned_candidates(
        table: Table, where: Predicate, keys: list[tuple[str, bool]]
    ) -> list[tuple[Record, Any]]:
        candidates: list[tuple[Record, Any]] = []
        leases = table.leases
        for rid, record in table.records.items():
            if rid in leases:
                continue  # rule 1: a record under a lease is not claimable
            if where(record):
                candidates.append((record, rid))
                if not keys:
                    break
        return candidates

    def _dead_letter_arg(
        self,
        table: Table,
        request: dict[str, Any],
        increments: dict[str, int | float],
        lease_seconds: float | None,
    ) -> tuple[str, int, dict[str, Any]] | None:
        """A claim's ``max_attempts`` and ``dead_letter``: the lease's expiry sets the
        dead-letter fields instead of the pre-claim values once the claim's one ``$inc``
        counter has reached ``max_attempts`` (README "Leases").

        :raises BadRequest: one given without the other, without a lease or a counter.
        """
        most = request.get("max_attempts")
        letter = request.get("dead_letter")
        if most is None and letter is None:
            return None
        if most is None or letter is None:
            raise BadRequest("'max_attempts' and 'dead_letter' go together")
        if type(most) is not int or not 1 <= most <= INT_MAX:
            raise BadRequest(f"'max_attempts' must be an integer >= 1, not {most!r:.60}")
        if lease_seconds is None:
            raise BadRequest("'max_attempts' needs 'lease_seconds': only a lease expires")
        if len(increments) != 1:
            raise BadRequest(
                "'max_attempts' needs exactly one attempt counter in 'fields' "
                '(a field set to {"$inc": 1})'
            )
        fields = self._map_arg(request, "dead_letter")
        if "id" in fields:
            raise ImmutableId("dead_letter: a dead letter cannot change a record's id")
        patch = self._validate_patch(table, fields, 0, "dead_letter")
        return next(iter(increments)), most, patch

    def _increment(self, request: dict[str, Any]) -> int | float:
        table = self._table(request)
        rid, old = self._existing(table, request)
        if not request.keys().isdisjoint(_PRECONDITIONS):
            self._check_preconditions(table, request, rid, old)
        name = request["field"]
        if name in ("id", RESERVED_FIELD) or not isinstance(name, str):
            raise SchemaError(f"field: {name!r:.60} cannot be incremented")
        self._known_field(table, name, "field")
        by = request.get("by", 1)
        if type(by) not in (int, float):
            raise BadRequest(f"'by' must be an int or a float, not a {describe(by)}")
        if type(by) is int and not INT_MIN <= by <= INT_MAX:
            raise BadRequest(f"'by': integer {by} is outside the 64-bit range")
        current = old[name]
        if type(current) not in (int, float):
            raise SchemaError(
                f"field {name!r} of record {rid!r} holds a {describe(current)}, not a number"
            )
        declared = table.types[name].removesuffix("?")  # type: ignore[index]
        if declared == "integer" and type(by) is not int:
            raise SchemaError(f"field {name!r} is an integer; 'by' must be an int")
        value: int | float = current + by
        if type(value) is int and not INT_MIN <= value <= INT_MAX:
            raise SchemaError(f"field {name!r}: {value} overflows the 64-bit range")
        self._touch_table(table)
        self._put(table, rid, {**old, name: value})
        lease = table.leases.get(rid)
        if lease is not None and name in lease.prior:
            self._set_lease(table, rid, None)  # rule 4: a claimed field changed: completed
        return value

    # --- change sets: what the arena publishes and the log persists ---------------------

    def change_set(
        self,
        dirty_records: Iterable[tuple[str, Id]],
        dirty_tables: Iterable[str],
        removed: Iterable[tuple[str, Id]] = (),
    ) -> ChangeSet:
        """The current state of everything the given commits touched, at ``self.seq``.

        A table in *dirty_tables* (created, dropped, recreated or altered) is sent whole:
        dropped, then its meta and every record. Records are the stored dicts (not
        copies): encode them before the next command runs.
        """
        # One write's change set is built per pass one at a time: the lists made here and
        # handed to ChangeSet whole (its default factories cost a call each), a removal
        # looked up only when there was one. 1.33 -> 1.05 µs for one PATCH_RECORD with
        # the slots and Table.state's cut (issue 17, thread CPU, in-process).
        tables = self.tables
        dropped: list[str] = []
        states: dict[str, dict[str, Any]] = {}
        puts: list[tuple[str, Id, Record, Lease | None]] = []
        deletes: list[tuple[str, Id]] = []
        whole = set(dirty_tables)
        removed = set(removed) if removed else _NO_KEYS
        for name in whole:
            dropped.append(name)
            table = tables.get(name)
            if table is not None:
                states[name] = table.state()
                records, leases = table.records, table.leases
                if leases:
                    puts.extend((name, rid, rec, leases.get(rid)) for rid, rec in records.items())
                else:  # a SET_STATE's table: C loops, 0.18 -> 0.07 µs a record (timeit)
                    puts.extend(
                        zip(
                            itertools.repeat(name),
                            records.keys(),
                            records.values(),
                            itertools.repeat(None),
                        )
                    )
        for name, rid in dirty_records:
            if name in whole:
                continue
            table = tables.get(name)
            if table is None:
                continue
            if name not in states:
                states[name] = table.state()
            record = table.records.get(rid)
            if record is None or (removed and (name, rid) in removed):
                deletes.append((name, rid))  # deleted, or deleted and re-created: moved
            if record is not None:
                puts.append((name, rid, record, table.leases.get(rid)))
        return ChangeSet(self.seq, dropped, states, puts, deletes)

    def full_change_set(self) -> ChangeSet:
        """Everything, as one change set: what a snapshot holds."""
        return self.change_set((), list(self.tables))

    def apply_change_set(self, cs: ChangeSet) -> None:
        """Replay a change set (recovery): tables, records, leases and ``seq`` as logged."""
        for name in cs.dropped:
            self.tables.pop(name, None)
        for name, state in cs.tables.items():
            table = self.tables.get(name)
            if table is None:
                table = self.tables[name] = Table(name)
            table.restore_state(state)  # drops its index structures: rebuilt on demand
        for name, rid in cs.deletes:
            table = self.tables[name]
            table.records.pop(rid, None)
            table.leases.pop(rid, None)
        push, tick, heap = heapq.heappush, self._tick, self.deadlines
        for name, rid, record, lease in cs.puts:
            table = self.tables[name]
            table.records[rid] = record
            if lease is None:
                table.leases.pop(rid, None)
            else:
                table.leases[rid] = lease
                push(heap, (lease.expires, next(tick), name, rid, lease))
            expires = record.get(EXPIRES_FIELD)
            if expires is not None:
                push(heap, (expires, next(tick), name, rid, None))
        self.seq = max(self.seq, cs.seq)


@dataclass(slots=True)  # one is made per pass: slots make that 0.29 -> 0.25 µs
class ChangeSet:
    """The effect of one or more commits, as state (not as commands), up to ``seq``.

    Replaying change sets in order rebuilds the engine exactly, without a clock: this is
    what the log stores and what the arena publishes. Order of application: ``dropped``,
    ``tables`` (meta of every touched table), ``deletes``, ``puts`` (a record deleted and
    re-created in one pass appears in both: it moves to the end of its table's order).
    """

    seq: int
    dropped: list[str] = field(default_factory=list)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    puts: list[tuple[str, Id, Record, Lease | None]] = field(default_factory=list)
    deletes: list[tuple[str, Id]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.dropped or self.tables or self.puts or self.deletes)


# The arena's encoder (validated values; byte-compatible with msgpack, so the same
# size): 0.16 µs a 6-field record against 0.31 for a reused msgpack Packer (issue 17,
# python -m timeit).
_packb = record_encoder()


#: field type name -> the value types it takes unchanged (``protocol.UNCHANGED_FIELDS``),
#: as ``_flat_fields`` judges them: :func:`flat_merge`'s *accepts* per field.
_UNCHANGED_BY_TYPE: Final = {
    name: tuple(t for t, n in UNCHANGED_FIELDS if n == name) for _, name in UNCHANGED_FIELDS
}
#: Every value type some field type takes unchanged (``protocol.UNCHANGED_FIELDS``).
_SCALAR_TYPES: Final = tuple(sorted({t for t, _ in UNCHANGED_FIELDS}, key=lambda t: t.__name__))


def _query_key(where: dict[str, Any], order_by: Any) -> Any:
    """The cache key of a query whose ``where`` holds operator maps, or whose ``order_by``
    is a list: every value with its type (an operator's argument too), so that it equals
    another query's key exactly when the two are the same values of the same types; None
    when a value cannot be keyed (a list such as ``$in``'s, or a map inside a map): such
    a query is compiled each time."""
    parts = []
    for name, value in where.items():
        kind = type(value)
        if kind is dict:  # an operator map or a stored map: the same checks either way
            value = tuple((op, type(arg), arg) for op, arg in value.items())
        parts.append((name, kind, value))
    ob = (list, *order_by) if type(order_by) is list else order_by
    key = (tuple(parts), ob)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _check_record_size(record: Record, rid: Id) -> None:
    """A patch may grow a record past what the arena stores: refuse it before any write
    (one encode per patch or claim).

    :raises PayloadTooLarge: over :data:`~stateengine.limits.MAX_RECORD_BYTES`.
    """
    size = len(_packb(record))
    if size > MAX_RECORD_BYTES:
        raise PayloadTooLarge(
            f"record {rid!r} would be {size} bytes, over the {MAX_RECORD_BYTES}-byte limit "
            "of a record; keep large values in fewer records"
        )


def _auto_id(next_id: int, where: str) -> int:
    """The next auto-increment id, if it is still a valid id (an explicit id of 2⁶³−1
    moves the counter past the signed 64-bit range)."""
    if next_id > ID_MAX:
        raise CapacityError(
            f"{where}: no auto-increment id left (an id of {ID_MAX} was used); "
            "give an explicit 'id'"
        )
    return next_id


def _batch_marker(engine: TableEngine, request: dict[str, Any]) -> None:
    raise AssertionError("BATCH is applied by TableEngine._batch")  # pragma: no cover


_BATCH: Final[Command] = _batch_marker

#: command name → handler: the dispatch. Its names are exactly those of
#: :data:`stateengine.command_table.COMMANDS`, which gives the arguments
#: (:func:`check_dispatch`, run at import).
HANDLERS: Final[dict[str, Command]] = {
    "CREATE_STATE": TableEngine._create_state,
    "DELETE_STATE": TableEngine._delete_state,
    "LIST_STATES": TableEngine._list_states,
    "GET_STATE_INFO": TableEngine._get_state_info,
    "GET_SCHEMA": TableEngine._get_schema,
    "ALTER_STATE": TableEngine._alter_state,
    "SET_STATE": TableEngine._set_state,
    "CREATE_RECORD": TableEngine._create_record,
    "SET_RECORD": TableEngine._set_record,
    "PATCH_RECORD": TableEngine._patch_record,
    "DELETE_RECORD": TableEngine._delete_record,
    "EXPIRE_RECORD": TableEngine._expire_record,
    "GET_RECORD": TableEngine._get_record,
    "LIST_RECORDS": TableEngine._list_records,
    "CLAIM_RECORD": TableEngine._claim_record,
    "INCREMENT": TableEngine._increment,
    "BATCH": _BATCH,
    "STATS": TableEngine._stats,
    "SYNC": TableEngine._sync,
}


def check_dispatch() -> None:
    """Check that the dispatch and the command table name the same commands.

    Run at import, so that a command added to one and not the other stops the writer
    from starting instead of answering ``UnknownCommand`` (or nothing) at run time.

    :raises RuntimeError: naming the commands without a handler, or without an entry.
    """
    described, handled = set(command_table.COMMANDS), set(HANDLERS)
    problems = []
    if described - handled:
        problems.append(f"no engine handler for {sorted(described - handled)}")
    if handled - described:
        problems.append(f"no command_table entry for {sorted(handled - described)}")
    if problems:
        raise RuntimeError(
            "server/engine.py HANDLERS and stateengine/command_table.py disagree: "
            + "; ".join(problems)
        )


check_dispatch()
