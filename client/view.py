"""The arena as a client sees it: one view per client, its snapshot, read-your-writes.

One home for what both clients (and the gateway, through the asyncio client) do to read
from the shared-memory arena instead of the socket:

* :class:`ArenaView` attaches the running server's arena from ``server.json``, re-attaches
  after a restart (checked at most once a second) and after ``fork``.
* **Read-your-writes.** A client remembers the highest ``seq`` its writes produced
  (``seen_seq``, kept by :func:`stateengine.protocol.reply_outcome`); a read may use the
  arena only once the arena shows that ``seq``. :func:`reader_for` is the fast check (no
  system call, no shared-memory read); :func:`catch_up` (blocking) and
  :func:`catch_up_async` (asyncio) wait, bounded, for the arena to catch up, and return
  None (read over the socket) when it does not.
* ``arena_get`` / ``arena_list`` / ``arena_info`` / ``arena_states`` answer one read from
  an arena, or None when the server must answer (a miss, an argument only the server may
  judge, an expired snapshot, an indexed query on a large table: ``ARENA_SCAN_LIMIT``).
* :class:`ClientSnapshot`: several reads at one arena version (``Client.snapshot()``).

Inlined copies: ``Client.get_record`` inlines :func:`reader_for` and :func:`arena_get`
(the hot read; each Python call layer costs ~60 ns of a ~1.2 µs get), with
:func:`reader_for`'s test and the get in one C call, ``ArenaReader._get_for``; on the
compiled path the whole method is C (``ClientCore._get_record_c``, which reads this
view's ``reader`` and ``deadline`` as members of its C base). The copy is marked there and
``tests/cross_process/test_arena_reads.py::test_inlined_get_record_matches_the_view``
checks it answers as these functions do.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any, Final

import msgpack

from stateengine.client.commands import Id, Record
from stateengine.client.history import RECORDED_READS, snapshot_read
from stateengine.errors import (
    RecordNotFound,
    ServerUnavailable,
    SnapshotExpired,
    StateEngineError,
    StateNotFound,
)
from stateengine.protocol import order_records, parse_order_by, sort_key
from stateengine.query import compile_where, match_all, plan_query
from stateengine.runtime import discovery as paths
from stateengine.shm import ArenaReader, Snapshot
from stateengine.shm.blocks import ViewBase

__all__ = [
    "ARENA_SCAN_LIMIT",
    "ArenaView",
    "ClientSnapshot",
    "RemoteSnapshot",
    "arena_get",
    "arena_info",
    "arena_list",
    "arena_states",
    "catch_up",
    "catch_up_async",
    "reader_for",
    "remote_snapshot",
]

log = logging.getLogger("stateengine.client")

_monotonic = time.monotonic

#: Every live ArenaView, for the fork hook.
_VIEWS: weakref.WeakSet[ArenaView] = weakref.WeakSet()


def _views_after_fork_in_child() -> None:
    for view in list(_VIEWS):
        view._forked = True
        view.deadline = 0.0  # the child's next read takes the slow path: current()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_views_after_fork_in_child)


class ArenaView(ViewBase):
    """The running server's arena as one worker sees it.

    Attached lazily from ``server.json``; re-attached when the server restarted (a new
    arena), checked at most once a second; after ``fork`` the child attaches its own.
    When the server is gone, the last arena stays attached: its snapshot stays readable.

    ``reader`` may be used as is while ``time.monotonic() < deadline``; else call
    :meth:`current`. A fork (``os.register_at_fork``) and :meth:`recheck_soon` set
    ``deadline`` to 0, so a read path needs no ``os.getpid()`` (a system call) per read.
    On the compiled path ``reader`` and ``deadline`` are members of the C base (ViewCore,
    shm/_speedups.c), which ``Client.get_record`` reads without an attribute lookup.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.reader: ArenaReader | None = None
        self.name: str | None = None
        self.deadline = 0.0  # time.monotonic() of the next server.json check
        self._forked = False
        self._pid = os.getpid()
        _VIEWS.add(self)

    def current(self) -> ArenaReader | None:
        if self._forked or self._pid != os.getpid():
            # The parent's reader is the parent's: close the child's copy of it (its slot
            # is not ours, so close() leaves it alone) and attach our own.
            self._forked, self._pid = False, os.getpid()
            old, self.reader, self.name = self.reader, None, None
            if old is not None:
                old.close()
        now = _monotonic()
        if self.reader is None or now >= self.deadline:
            self.deadline = now + 1.0
            self._attach()
        return self.reader

    def recheck_soon(self) -> None:
        self.deadline = 0.0

    def _attach(self) -> None:
        try:
            info = paths.read_server_file(self.data_dir)
        except ServerUnavailable:
            return  # the server is gone: keep reading its last snapshot
        name = info.get("arena")
        if name == self.name and self.reader is not None:
            return
        self.close()
        self.name = name
        if not name:
            return
        try:
            self.reader = ArenaReader.attach(name)
        except (OSError, ValueError, StateEngineError) as exc:
            log.warning("cannot attach arena %s (%s); reading over the socket", name, exc)
            self.name = None

    def close(self) -> None:
        if self.reader is not None and self._pid == os.getpid():
            self.reader.close()
        self.reader = None


def reader_for(view: ArenaView | None, seen_seq: int) -> ArenaReader | None:
    """The view's reader if a read may use it at once: attached, no re-check due, and its
    index at or past ``seen_seq`` (read-your-writes). None: take the slow path (attach,
    re-check, wait), which may still find a reader. No system call, no shared memory."""
    if view is None:
        return None
    reader = view.reader
    if reader is not None and _monotonic() < view.deadline and reader._seq >= seen_seq:
        return reader
    return None


def catch_up(view: ArenaView, seen_seq: int, timeout: float) -> ArenaReader | None:
    """The blocking client's slow path when :func:`reader_for` says no: attach or re-check
    the view, then wait (at most ``min(timeout, 1)`` s) until its arena shows *seen_seq*.
    None: read over the socket (no arena, or a restarted server's new arena)."""
    try:
        reader = view.current()
        if reader is not None and reader.version < seen_seq:
            # Normally the arena is ahead (publish precedes the reply); behind means a
            # restarted server with a new arena, or a publish still in flight.
            view.recheck_soon()
            reader = view.current()
        if reader is not None and reader.version < seen_seq:
            reader.wait_for(seen_seq, min(timeout, 1.0))
    except TimeoutError:
        view.recheck_soon()  # a restarted server: a new arena
        return None
    except SnapshotExpired:
        # superseded: a restarted server runs (its server.json may not name its new
        # arena yet): the socket answers until the view re-attaches
        view.recheck_soon()
        return None
    return reader


async def catch_up_async(
    view: ArenaView | None, seen_seq: int, timeout: float
) -> ArenaReader | None:
    """:func:`catch_up` for asyncio: the wait yields to the loop (backing off from 0.5 ms
    to 20 ms) instead of blocking it; the same bound, ``min(timeout, 1)`` s."""
    import asyncio  # here, not at the top: the blocking client never pays for it

    reader = view.current() if view is not None else None
    if reader is None:
        return None
    delay = 0.0005
    deadline = asyncio.get_running_loop().time() + min(timeout, 1.0)
    while reader.version < seen_seq:
        if asyncio.get_running_loop().time() > deadline:
            assert view is not None
            view.recheck_soon()
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
    return reader


def _gone(record: Record, now: float) -> bool:
    """Whether *record*'s TTL had passed at *now* (the writer's expiry commit may not be
    published yet: README "Record TTL")."""
    expires = record.get("_expires")
    return expires is not None and expires <= now


def arena_get(reader: ArenaReader, state: str, id: Any) -> Record | None:
    """GET_RECORD from the arena; None: ask the server (a miss, an id it must judge, or a
    record whose TTL has passed: the server commits its expiry before answering)."""
    if type(id) is not int and type(id) is not str:
        return None  # 1 == 1.0 == True as dict keys: only the server may judge these
    now = time.time()
    try:
        record = reader.get(state, id)
    except SnapshotExpired:
        return None
    return None if record is None or _gone(record, now) else record


def arena_list(
    reader: ArenaReader,
    state: str,
    where: dict[str, Any] | None,
    order_by: str | list[str] | None,
    offset: int | None,
    limit: int | None,
) -> list[Record] | None:
    now = time.time()
    try:
        with reader.snapshot() as snap:
            return _select(snap, state, where, order_by, offset, limit, now, indexed_to_writer=True)
    except SnapshotExpired:
        return None


#: Past this many records, a list that an index of the table fits goes to the writer: an
#: arena scan decodes every record (10k records: 63 ms) where the writer's index answers
#: in one round trip (~0.12 ms at any size; shm/DESIGN.md "Indexed queries").
ARENA_SCAN_LIMIT: Final = 128


def arena_info(reader: ArenaReader, state: str) -> dict[str, Any] | None:
    try:
        with reader.snapshot() as snap:
            meta = snap.meta(state)
    except SnapshotExpired:
        return None
    return None if meta is None else msgpack.unpackb(meta)


def arena_states(reader: ArenaReader) -> list[str] | None:
    try:
        with reader.snapshot() as snap:
            return snap.tables()
    except SnapshotExpired:
        return None


def _select(
    snap: Snapshot | RemoteSnapshot,
    state: str,
    where: dict[str, Any] | None,
    order_by: str | list[str] | None,
    offset: int | None,
    limit: int | None,
    now: float,
    indexed_to_writer: bool = False,
) -> list[Record] | None:
    """LIST_RECORDS on a snapshot opened at *now* (records whose TTL had passed then are
    left out); None when the server must answer (to raise its error, or, with
    *indexed_to_writer*, because an index answers a large table's query faster)."""
    meta = snap.meta(state)
    if meta is None:
        return None
    info = msgpack.unpackb(meta)
    fields = set(info["schema"]) | {"_version", "_expires"}
    try:
        keys = parse_order_by(order_by)
    except StateEngineError:
        return None
    if not isinstance(where or {}, dict) or any(
        name not in fields for name in [*(where or {}), *(k for k, _ in keys)]
    ):
        return None
    if not all(type(x) is int and x >= 0 for x in (offset, limit) if x is not None):
        return None
    try:
        conditions, predicate = compile_where(where)
    except StateEngineError:
        return None
    indexes = info.get("indexes")
    if (
        indexed_to_writer
        and indexes
        and info.get("size", 0) > ARENA_SCAN_LIMIT
        and plan_query([tuple(i) for i in indexes], conditions, keys, sort_key) is not None
    ):
        return None
    records = [r for _, r in snap.items(state) if not _gone(r, now)]
    if predicate is not match_all:
        records = [r for r in records if predicate(r)]
    if keys:
        order_records(records, keys)
    start = offset or 0
    return records[start : None if limit is None else start + limit]


class RemoteSnapshot:
    """Every table at one ``seq``, fetched in one atomic ``BATCH`` of reads: what
    ``Client.snapshot()`` reads when there is no arena (a remote client, ``--no-arena``).

    The shape of the arena's :class:`~stateengine.shm.Snapshot` that
    :class:`ClientSnapshot` uses (``get``, ``meta``, ``items``, ``tables``, ``version``),
    so both answer the same. It copies the whole state: meant for small states or
    ``tables=`` a few; a reply over the server's limit raises ``PayloadTooLarge``.
    """

    def __init__(self, seq: int, tables: dict[str, tuple[dict[str, Any], list[Record]]]) -> None:
        self.version = seq
        self._meta = {name: msgpack.packb(info) for name, (info, _) in tables.items()}
        self._records = {
            name: {r["id"]: r for r in records} for name, (_, records) in tables.items()
        }

    def get(self, table: str, rid: Any) -> Any:
        return self._records.get(table, {}).get(rid)

    def meta(self, table: str) -> bytes | None:
        return self._meta.get(table)

    def items(self, table: str) -> list[tuple[Any, Any]]:
        return list(self._records.get(table, {}).items())

    def tables(self) -> list[str]:
        return sorted(self._meta)


def remote_snapshot(
    execute: Any, tables: list[str] | None = None, attempts: int = 5
) -> RemoteSnapshot:
    """Read *tables* (default: all) at one ``seq`` through *execute* (a client's raw
    request call): ``LIST_STATES`` and every table's info and records in one ``BATCH``,
    which the writer applies as one commit, so every read sees the same ``seq``.

    A table created or dropped between choosing the tables and the batch makes the batch
    disagree with itself; it is retried (at most *attempts* times).

    :raises StateEngineError: the batch failed (e.g. ``PayloadTooLarge``: ask for fewer
        tables), or the tables kept changing.
    """
    from stateengine.errors import from_wire

    wanted = tables
    for _ in range(attempts):
        names = (
            wanted
            if wanted is not None
            else list(execute({"command": "LIST_STATES"})["result"] or [])
        )
        reads: list[dict[str, Any]] = [{"command": "LIST_STATES"}]
        for name in names:
            reads.append({"command": "GET_STATE_INFO", "state": name})
            reads.append({"command": "LIST_RECORDS", "state": name})
        reply = execute({"command": "BATCH", "commands": reads})
        if not reply.get("ok"):
            error = from_wire(reply.get("error"))
            if isinstance(error, StateNotFound) and wanted is None:
                continue  # a table dropped meanwhile
            raise error
        results = reply["result"]
        if wanted is None and sorted(results[0]) != sorted(names):
            continue  # a table created meanwhile
        got = {name: (results[1 + 2 * i], results[2 + 2 * i]) for i, name in enumerate(names)}
        return RemoteSnapshot(int(reply["seq"]), got)
    raise StateEngineError(f"the tables kept changing; no snapshot after {attempts} attempts")


class ClientSnapshot:
    """Reads at one arena version: ``get_record``, ``list_records``, ``get_state_info``."""

    def __init__(self, snap: Snapshot | RemoteSnapshot, reads: list[Any] | None = None) -> None:
        self._snap = snap
        self._reads = reads
        #: The wall clock at opening: a record whose TTL had passed then is absent from
        #: every read, so the snapshot stays one version (README "Record TTL").
        self.opened = time.time()
        if reads is not None:  # a recording client: log every read (per instance: free when off)
            for name in ("get_record", "list_records", "get_state_info", "list_states"):
                wrapped = snapshot_read(RECORDED_READS[name])(getattr(type(self), name))
                setattr(self, name, functools.partial(wrapped, self))

    @property
    def version(self) -> int:
        """The ``seq`` this snapshot shows. Raises nothing."""
        return self._snap.version

    def get_record(self, state: str, id: Id) -> Record:
        """:raises StateNotFound: :raises RecordNotFound:."""
        record = self._snap.get(state, id) if type(id) in (int, str) else None
        if record is not None and _gone(record, self.opened):
            record = None
        if record is None:
            if self._snap.meta(state) is None:
                raise StateNotFound(f"no state named {state!r}")
            raise RecordNotFound(f"no record with id {id!r} in {state!r}")
        return record  # type: ignore[no-any-return]

    def list_records(
        self,
        state: str,
        where: dict[str, Any] | None = None,
        order_by: str | list[str] | None = None,
        offset: int | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """``LIST_RECORDS`` at this snapshot's version.

        :raises StateNotFound: :raises StateEngineError: an argument a snapshot read
            cannot judge (ask the client instead: the server names the error).
        :raises SnapshotExpired: the snapshot was held past the arena's expiry.
        """
        out = _select(self._snap, state, where, order_by, offset, limit, self.opened)
        if out is None:
            if self._snap.meta(state) is None:
                raise StateNotFound(f"no state named {state!r}")
            raise StateEngineError("invalid where/order_by/offset/limit for a snapshot read")
        return out

    def get_state_info(self, state: str) -> dict[str, Any]:
        """The table's info at this version; :raises StateNotFound: :raises SnapshotExpired:."""
        meta = self._snap.meta(state)
        if meta is None:
            raise StateNotFound(f"no state named {state!r}")
        return msgpack.unpackb(meta)  # type: ignore[no-any-return]

    def list_states(self) -> list[str]:
        """The table names at this version; :raises SnapshotExpired:."""
        return self._snap.tables()
