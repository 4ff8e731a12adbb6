"""Durability: the stores that make a restart restore every table exactly (SPEC §6).

One small interface, :class:`Store`, and backends chosen by name in :func:`open_store`
from the registry in :mod:`.stores` (where a third party adds its own); the built-ins:

* ``log`` (default) — an append-only log plus compact snapshots in the data directory
  (:mod:`.persist_log`); fsync policy ``always`` | ``everysec`` | ``no`` as in Redis;
* ``sqlite`` — ``DATA_DIR/state.sqlite3`` through the standard library;
* ``postgres`` — three tables in a PostgreSQL schema, through psycopg 3 (optional);
* ``json`` — ``DATA_DIR/state.json``, human-readable, for small states.

Each restores exactly the same state: tables and their order, schemas, versions, id
counters, records and their order, leases, the global ``seq`` (and a generic ``extra``
section for stored manifest values).

The writer's pass (SPEC §6 order)::

    store = open_store(data_dir, "log", fsync="always")
    report = store.recover(engine, progress=...)     # once, at start
    ...apply the pass...
    store.write(engine.change_set(dirty_records, dirty_tables))   # then publish, reply
    store.maybe_snapshot(engine)                     # after the replies
    store.tick()                                     # when idle (poll timeout)
    store.close()

:func:`check` and :func:`repair` back ``stateengine check`` / ``stateengine repair``.
:func:`crash_point` is the test-only fault hook (``STATEENGINE_CRASH_AT=name[:n]``).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stateengine import defaults
from stateengine.runtime.discovery import write_private_file
from stateengine.server.engine import ChangeSet, TableEngine
from stateengine.server.persist_base import (
    FSYNC_POLICIES,
    CorruptStore,
    FileSystem,
    OsFileSystem,
    PersistenceError,
    Progress,
    RecoveryReport,
    StoreClosed,
    crash_point,
    decode_change_set,
    frames_after,
    scan_frames,
)
from stateengine.server.persist_log import (
    SNAPSHOT_NAME,
    SNAPSHOT_PREV,
    list_segments,
    load_snapshot,
)
from stateengine.server.stores import (
    DEFAULT_STORE,
    StoreBackend,
    StoreOption,
    get_store,
    register_store,
    store_backends,
    store_names,
)

__all__ = [
    "DEFAULT_STORE",
    "FSYNC_POLICIES",
    "CorruptStore",
    "FileSystem",
    "OsFileSystem",
    "PersistenceError",
    "RecoveryReport",
    "Store",
    "StoreBackend",
    "StoreClosed",
    "StoreOption",
    "check",
    "crash_point",
    "detect_backend",
    "open_store",
    "register_store",
    "repair",
    "repair_log",
    "store_backends",
    "store_names",
]


class Store(Protocol):
    """What the writer needs from a durable store. Used by one process, one thread."""

    backend: str

    def recover(self, engine: TableEngine, progress: Progress | None = None) -> RecoveryReport:
        """Load the stored state into *engine* (empty). Once, before any write.

        :raises CorruptStore: damaged data (a torn log tail is not damage: it is dropped
            and reported); the server must not start.
        """
        ...

    def write(self, cs: ChangeSet) -> None:
        """Persist one pass's change set; durable on return under ``always``.

        :raises PersistenceError: not stored, and nothing of it left in the store's files
            or state; the pass must not be acknowledged (the server undoes it with
            :meth:`reload`).
        """
        ...

    def reload(self, engine: TableEngine) -> None:
        """Replace *engine*'s state with the stored one, after :meth:`write` failed.

        The store has already put its files back as they were before the failed write
        (cut the partial log entry, rolled back the transaction), so *engine* ends up
        with every pass written before and nothing of the failed one.

        :raises CorruptStore: the stored state cannot be read back (the server stops).
        """
        ...

    def maybe_snapshot(self, engine: TableEngine, extra: dict[str, Any] | None = None) -> bool:
        """Compact if due (after the pass's replies); True if one started."""
        ...

    def tick(self) -> None:
        """Periodic work when idle (an ``everysec`` save, reaping a snapshot)."""
        ...

    def close(self) -> None:
        """Flush and release; idempotent."""
        ...


def detect_backend(data_dir: Path) -> str | None:
    """The backend whose files are in *data_dir* (``postgres`` leaves none), or None.

    Asks every registered backend's ``detect`` (:mod:`.stores`), the built-ins first.
    """
    data_dir = Path(data_dir)
    for backend in store_backends().values():
        if backend.detect is not None and backend.detect(data_dir):
            return backend.name
    return None


def open_store(
    data_dir: Path | str,
    backend: str = DEFAULT_STORE,
    fsync: str = defaults.FSYNC,
    **options: Any,
) -> Store:
    """Open the store for *data_dir* (which must exist; the server creates it 0700).

    :param backend: a registered name (:func:`~.stores.store_names`): ``log`` |
        ``sqlite`` | ``postgres`` | ``json`` or a third party's.
    :param fsync: ``always`` | ``everysec`` | ``no``.
    :param options: per backend — log: ``snapshot_bytes`` (int), ``snapshot_mode``
        (``fork``/``inline``), ``fs`` (test file layer); postgres: ``dsn``, ``schema``;
        json: ``fs``. Options not given take the backend's :class:`~.stores.StoreOption`
        defaults.
    :raises ValueError: unknown backend, policy or option.
    :raises PersistenceError: *data_dir* holds another backend's files (switching would
        start empty and silently hide the old state; move them away first), or the
        backend cannot be opened (psycopg missing, PostgreSQL unreachable, a third-party
        store that failed to load).
    """
    data_dir = Path(data_dir)
    entry = get_store(backend)
    if fsync not in FSYNC_POLICIES:
        raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
    present = detect_backend(data_dir)
    if present is not None and present != backend:
        raise PersistenceError(
            f"{data_dir} holds a {present!r} store; this server was asked for {backend!r}. "
            f"Start with --store {present}, or move the data directory aside."
        )
    return entry.open(data_dir, fsync, **options)


# --- check and repair --------------------------------------------------------------------------


def check(data_dir: Path | str, backend: str | None = None, **options: Any) -> dict[str, Any]:
    """Verify the stored state without changing anything; a report for humans and tests.

    Returns ``{"backend", "ok", "problems": [...], ...}``: for the log backend also
    ``snapshot`` (seq, records) and ``segments`` (file, bytes, entries, bad_offset,
    torn). A torn tail is reported but ``ok`` stays True (a start repairs it). Safe
    while a server runs (reads only), though a concurrent write can look like a tail.

    :raises ValueError: *backend* names no registered store.
    :raises PersistenceError: the store cannot be opened (unreachable, not damaged).
    """
    data_dir = Path(data_dir)
    backend = backend or detect_backend(data_dir) or DEFAULT_STORE
    report: dict[str, Any] = {"backend": backend, "data_dir": str(data_dir), "problems": []}
    entry = get_store(backend)
    entry.run_check(data_dir, report, {o.name: o.default for o in entry.options} | options)
    report["ok"] = not report["problems"]
    return report


@dataclass
class _Segment:
    """One log segment as ``repair`` sees it: its good entries and where it went bad."""

    base: int
    path: Path
    data: bytes
    seqs: list[int]
    good_end: int
    bad_offset: int = -1
    torn: bool = False
    reason: str = ""
    later: list[int] = field(default_factory=list)  # seqs of valid entries after the damage


def _read_segment(base: int, path: Path, last: bool) -> _Segment:
    data = path.read_bytes()
    scan = scan_frames(data)
    seg = _Segment(base, path, data, [], scan.good_end, scan.bad_offset, scan.torn, scan.reason)
    seg.torn = scan.torn and last
    after: list[bytes] = frames_after(data, scan.bad_offset + 1) if scan.bad_offset >= 0 else []
    for k, (payload, offset) in enumerate(zip(scan.payloads, scan.offsets, strict=True)):
        try:
            seg.seqs.append(decode_change_set(payload).seq)
        except (ValueError, TypeError, KeyError):
            seg.good_end = seg.bad_offset = offset
            seg.torn, seg.reason = False, "an entry with a valid checksum cannot be decoded"
            after = scan.payloads[k + 1 :] + after
            break
    for payload in after:
        try:
            seg.later.append(decode_change_set(payload).seq)
        except (ValueError, TypeError, KeyError):
            pass
    return seg


def repair(data_dir: Path | str, backend: str | None = None) -> dict[str, Any]:
    """``stateengine repair``: the backend's own repair (:class:`~.stores.StoreBackend`).

    :raises PersistenceError: the backend has no repair (use the database's own tools; a
        JSON file is a text file), or its repair failed.
    :raises ValueError: *backend* names no registered store.
    """
    data_dir = Path(data_dir)
    name = backend or detect_backend(data_dir) or DEFAULT_STORE
    entry = get_store(name)
    if entry.repair is None:
        raise PersistenceError(f"repair knows the log backend only, not {name!r}")
    return entry.repair(data_dir)


def repair_log(data_dir: Path | str) -> dict[str, Any]:
    """Make *data_dir* startable again, saving every acknowledged write that survives.

    Nothing is deleted: what is taken out goes to ``DATA_DIR/repair-<time>/``.

    * A damaged newest snapshot is rebuilt: the previous snapshot becomes the newest and
      the log (kept from the previous snapshot's seq, see :mod:`.persist_log`) replays
      from it at the next start, to the same state. With no previous snapshot, the log
      from seq 0 does the same. If neither remains, nothing is changed and the result
      says so (``startable`` False).
    * A damaged previous snapshot, or damage in the log before the newest snapshot, loses
      nothing acknowledged (the newest snapshot holds it all): the previous snapshot and
      the log before the newest are moved aside (the fallback is gone until the next
      snapshot).
    * Damage in the log the start needs (after the snapshot it starts from) is cut: the
      segment is truncated at the first bad entry; that entry, every later one in the
      segment and every later segment are moved aside, and ``lost`` counts the valid
      entries among them with their seq range. They are not kept: each change set is a
      diff against the state the damaged one produced, so replaying them without it
      would build a state no client ever saw. A torn tail is cut the same way and loses
      nothing that was acknowledged under ``fsync always``.

    Run only while no server uses *data_dir* (``stateengine repair`` takes its lock).

    :return: ``{"actions", "lost", "dropped_bytes", "startable", "exit_code", "check"}``;
        ``exit_code`` is 0 (startable, nothing acknowledged lost), 3 (startable, but
        ``lost`` lists what could not be saved) or 1 (still not startable: ``problems``).
    :raises OSError: a file could not be moved or truncated.
    """
    data_dir = Path(data_dir)
    aside = data_dir / time.strftime("repair-%Y%m%d-%H%M%S")
    actions: list[str] = []
    lost: list[str] = []
    problems: list[str] = []
    dropped = 0

    def move_aside(path: Path) -> None:
        aside.mkdir(mode=0o700, exist_ok=True)
        shutil.move(str(path), str(aside / path.name))
        actions.append(f"moved {path.name} to {aside.name}/")

    newest, prev = data_dir / SNAPSHOT_NAME, data_dir / SNAPSHOT_PREV
    seqs: dict[Path, int | None] = {}
    for snap in (newest, prev):
        if snap.exists():
            try:
                seqs[snap] = load_snapshot(snap, None).seq
            except CorruptStore:
                seqs[snap] = None
    listed = list_segments(data_dir)
    segments = [_read_segment(b, p, i == len(listed) - 1) for i, (b, p) in enumerate(listed)]

    def reaches(seq: int) -> bool:  # the log holds every entry after *seq*
        return not segments or segments[0].base <= seq

    newest_seq, prev_seq = seqs.get(newest), seqs.get(prev)
    start: Path | None = None  # the snapshot the next start loads; None: the empty state
    if newest_seq is not None or (newest not in seqs and prev not in seqs):
        start = newest if newest_seq is not None else None
        if not reaches(newest_seq or 0):
            problems.append(
                f"the log starts at seq {segments[0].base}, after the snapshot's seq "
                f"{newest_seq or 0}: the entries between are missing; nothing changed"
            )
    elif prev_seq is not None and reaches(prev_seq):
        start = prev
    elif not reaches(0):
        what = "damaged" if newest in seqs and newest_seq is None else "missing"
        problems.append(
            f"the newest snapshot is {what}, no usable previous snapshot remains and the "
            f"log starts at seq {segments[0].base}: the state before it is lost; "
            "nothing changed (the damaged files are still in place)"
        )
    if problems:
        return {
            "actions": actions,
            "lost": lost,
            "problems": problems,
            "dropped_bytes": 0,
            "startable": False,
            "exit_code": 1,
            "check": check(data_dir, "log"),
        }
    base = seqs[start] if start is not None else 0
    assert base is not None
    if start is prev:
        if newest.exists():
            move_aside(newest)
        os.replace(prev, newest)
        actions.append(
            f"the newest snapshot was damaged; the previous one (seq {base}) is "
            f"{SNAPSHOT_NAME} now and the log replays from it: nothing is lost"
        )
    elif start is None:
        for snap in (newest, prev):
            if snap.exists():
                move_aside(snap)
        if seqs:
            actions.append("no usable snapshot: the log from seq 0 rebuilds the state")
    elif prev in seqs and prev_seq is None:
        move_aside(prev)
    # Segments wholly at or below the start snapshot serve only the previous snapshot
    # (the fallback). Damage there loses nothing acknowledged: move that part aside.
    needed = [
        i for i in range(len(segments)) if i == len(segments) - 1 or segments[i + 1].base > base
    ]
    first = needed[0] if needed else len(segments)
    if any(seg.bad_offset >= 0 for seg in segments[:first]):
        for seg in segments[:first]:
            move_aside(seg.path)
        if prev.exists():
            move_aside(prev)
        actions.append(
            f"the log before seq {base} was damaged; it only served the previous snapshot "
            "(the fallback, gone until the next snapshot): nothing acknowledged is lost"
        )
    cut = False
    for seg in segments[first:]:
        if cut:
            dropped += len(seg.data)
            lost_seqs = [q for q in seg.seqs if q > base] + seg.later
            if lost_seqs:
                lost.append(
                    f"{seg.path.name}: {len(lost_seqs)} valid entries "
                    f"(seq {min(lost_seqs)}..{max(lost_seqs)}) after the damage"
                )
            move_aside(seg.path)
            continue
        if seg.bad_offset < 0:
            continue
        cut = True
        aside.mkdir(mode=0o700, exist_ok=True)
        write_private_file(aside / f"{seg.path.name}.from-{seg.good_end}", seg.data[seg.good_end :])
        fd = os.open(seg.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, seg.good_end)
            os.fsync(fd)
        finally:
            os.close(fd)
        size = len(seg.data) - seg.good_end
        dropped += size
        kind = "torn tail" if seg.torn else "corruption"
        actions.append(
            f"truncated {seg.path.name} at byte {seg.good_end} ({seg.reason}); "
            f"{size} bytes kept in {aside.name}/ ({kind})"
        )
        if not seg.torn:
            after = f"; {len(seg.later)} valid entries after it" if seg.later else ""
            if seg.later:
                after += f" (seq {min(seg.later)}..{max(seg.later)})"
            lost.append(f"{seg.path.name}: the damaged entry at byte {seg.bad_offset}{after}")
    OsFileSystem().sync_dir(str(data_dir))
    report = check(data_dir, "log")
    startable = bool(report["ok"])
    return {
        "actions": actions,
        "lost": lost,
        "problems": [] if startable else list(report["problems"]),
        "dropped_bytes": dropped,
        "startable": startable,
        "exit_code": 1 if not startable else 3 if lost else 0,
        "check": report,
    }
