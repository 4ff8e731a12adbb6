"""Every command the server answers, described once and free of I/O.

What a command is — its name, its required and optional arguments, whether it writes,
and what it touches (one record, one table, or the server) — used to be written in six
places (the engine's dispatch, the checker's command sets and models, the client's
arena reads, the gateway's routes, two test lists), and a command the checker did not
know was silently taken as "no effect" (issue 15). Each of those now reads this table:

* the engine (:mod:`stateengine.server.engine`) checks at import that it has a handler
  for every entry and an entry for every handler, and validates argument names from it;
* the server answers the non-writing commands while writes are refused;
* the checker (:mod:`stateengine.testing.checker`) derives its record/table/write sets
  and refuses a history holding a write it has no model for;
* the clients' :meth:`call` sends any entry, and the arena reads are :func:`arena_reads`;
* the HTTP gateway generates ``POST /api/call/{COMMAND}`` for every entry;
* :func:`stateengine.testing.strategies.command_requests` draws requests for every entry.

Adding a command: an entry here, its handler in the engine, a method in
``client/commands.py``, a model in the checker (for a write), its README row, tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "COMMANDS",
    "PRECONDITIONS",
    "CommandSpec",
    "Scope",
    "arena_reads",
    "names",
    "registered",
    "spec",
    "writes",
]

#: What a command reads or writes: one record (its ``state`` and ``id``), a whole table
#: (its ``state``), or the server (no ``state``: the list of tables, figures, a batch).
Scope = Literal["record", "table", "server"]

#: The compare-and-set arguments of the record writes (README "Wire protocol").
PRECONDITIONS: Final = ("expected_version", "if_version", "if_match")

#: Arguments every top-level request may carry besides the command's own.
COMMON: Final = frozenset({"command", "req_id"})


@dataclass(frozen=True)
class CommandSpec:
    """One command: name, arguments, whether it writes, what it touches, one line of doc.

    :param arena: a read the client may answer from the shared-memory arena (the others
        go to the writer).
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    writes: bool = False
    scope: Scope = "table"
    doc: str = ""
    arena: bool = False
    #: ``required | optional``, and those plus ``command``/``req_id`` (validation is on
    #: the writer's hot path: computed once).
    args: frozenset[str] = field(init=False, repr=False, compare=False)
    allowed: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or not self.name.isupper():
            raise ValueError(f"a command name is UPPER_SNAKE_CASE, not {self.name!r}")
        both = set(self.required) & set(self.optional)
        if both:
            raise ValueError(f"{self.name}: {sorted(both)} both required and optional")
        if self.scope not in ("record", "table", "server"):
            raise ValueError(f"{self.name}: scope {self.scope!r} is not record/table/server")
        if self.arena and self.writes:
            raise ValueError(f"{self.name}: an arena read does not write")
        args = frozenset(self.required) | frozenset(self.optional)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "allowed", args | COMMON)

    @property
    def method(self) -> str:
        """The client method's name: the command in lower case."""
        return self.name.lower()


def _spec(
    name: str,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    *,
    writes: bool,
    scope: Scope,
    doc: str,
    arena: bool = False,
) -> tuple[str, CommandSpec]:
    return name, CommandSpec(name, required, optional, writes, scope, doc, arena)


#: name → spec, in the README's order. Mutated only by :func:`registered` (tests).
COMMANDS: Final[dict[str, CommandSpec]] = dict(
    [
        _spec(
            "CREATE_STATE",
            ("state",),
            ("max_length", "schema", "indexes"),
            writes=True,
            scope="table",
            doc="create a table, optionally with a schema, a maximum length and indexes",
        ),
        _spec(
            "DELETE_STATE",
            ("state",),
            writes=True,
            scope="table",
            doc="drop a table with its schema and counters",
        ),
        _spec(
            "LIST_STATES",
            (),
            writes=False,
            scope="server",
            doc="the table names, sorted",
            arena=True,
        ),
        _spec(
            "GET_STATE_INFO",
            ("state",),
            writes=False,
            scope="table",
            doc="a table's schema, types, version, size, max_length and next id",
            arena=True,
        ),
        _spec(
            "GET_SCHEMA",
            ("state",),
            writes=False,
            scope="table",
            doc="a table's field names in order",
            arena=True,
        ),
        _spec(
            "SET_STATE",
            ("state", "records"),
            ("expected_version",),
            writes=True,
            scope="table",
            doc="replace every record of a table atomically",
        ),
        _spec(
            "CREATE_RECORD",
            ("state", "record"),
            ("expected_version", "ttl"),
            writes=True,
            scope="record",  # with an auto id it touches the table's counter (the checker)
            doc="insert a record (an id inside it is explicit, else auto-increment)",
        ),
        _spec(
            "SET_RECORD",
            ("state", "id", "record"),
            (*PRECONDITIONS, "ttl"),
            writes=True,
            scope="record",
            doc="replace one record",
        ),
        _spec(
            "PATCH_RECORD",
            ("state", "id", "fields"),
            (*PRECONDITIONS, "lease_seconds", "ttl"),
            writes=True,
            scope="record",
            doc="change some fields of one record (and renew its lease, set its TTL)",
        ),
        _spec(
            "EXPIRE_RECORD",
            ("state", "id", "ttl"),
            PRECONDITIONS,
            writes=True,
            scope="record",
            doc="set a record's TTL (seconds from now) or clear it (null)",
        ),
        _spec(
            "DELETE_RECORD",
            ("state", "id"),
            PRECONDITIONS,
            writes=True,
            scope="record",
            doc="delete one record",
        ),
        _spec(
            "GET_RECORD",
            ("state", "id"),
            writes=False,
            scope="record",
            doc="one record",
            arena=True,
        ),
        _spec(
            "LIST_RECORDS",
            ("state",),
            ("where", "order_by", "offset", "limit"),
            writes=False,
            scope="table",
            doc="records matching where, ordered, paged",
            arena=True,
        ),
        _spec(
            "CLAIM_RECORD",
            ("state", "where", "fields"),
            (
                "order_by",
                "lease_seconds",
                "expected_version",
                "wait",
                "max_attempts",
                "dead_letter",
            ),
            writes=True,
            scope="table",
            doc="take the first claimable record matching where and patch it; with wait, "
            "park until one is claimable or the wait ends",
        ),
        _spec(
            "INCREMENT",
            ("state", "id", "field"),
            (*PRECONDITIONS, "by"),
            writes=True,
            scope="record",
            doc="add to a numeric field atomically",
        ),
        _spec(
            "ALTER_STATE",
            ("state",),
            ("add", "drop", "add_indexes", "drop_indexes", "expected_version"),
            writes=True,
            scope="table",
            doc="add and drop fields and indexes of a table",
        ),
        _spec(
            "BATCH",
            ("commands",),
            writes=True,  # may write: the server judges a batch of reads by its parts
            scope="server",
            doc="requests applied all-or-nothing as one commit",
        ),
        _spec(
            "STATS",
            (),
            writes=False,
            scope="server",
            doc="the server's figures: tables, requests, store, arena",
        ),
        _spec(
            "SYNC",
            (),
            writes=False,
            scope="server",
            doc="wait until every write acknowledged before it is applied here: a cluster "
            "node reads its stream to the end; a single server answers null at once",
        ),
    ]
)


def spec(name: str) -> CommandSpec | None:
    """The entry named *name*, or None."""
    return COMMANDS.get(name)


def names() -> frozenset[str]:
    """Every command's name."""
    return frozenset(COMMANDS)


def writes() -> frozenset[str]:
    """The commands that may change the state (``BATCH`` included)."""
    return frozenset(name for name, s in COMMANDS.items() if s.writes)


def arena_reads() -> tuple[CommandSpec, ...]:
    """The reads a client may answer from the arena (the others go to the writer)."""
    return tuple(s for s in COMMANDS.values() if s.arena)


@contextmanager
def registered(*specs: CommandSpec) -> Iterator[None]:
    """Add *specs* to the table for the block (tests: a dummy command end to end).

    Not thread-safe, and only this process sees them: a server or gateway process
    registers its own before it starts.

    :raises ValueError: a spec's name is taken.
    """
    taken = [s.name for s in specs if s.name in COMMANDS]
    if taken:
        raise ValueError(f"commands {taken} exist already")
    for s in specs:
        COMMANDS[s.name] = s
    try:
        yield
    finally:
        for s in specs:
            COMMANDS.pop(s.name, None)
