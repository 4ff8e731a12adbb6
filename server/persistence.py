"""Durability: the stores that make a restart restore every table exactly (SPEC §6).

One small interface, :class:`Store`, four backends chosen by name in :func:`open_store`:

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
from pathlib import Path
from typing import Any, Final, Protocol

from stateengine.server.engine import ChangeSet, TableEngine
from stateengine.server.paths import write_private_file
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
    scan_frames,
)
from stateengine.server.persist_json import JSON_NAME, JsonStore, load_json
from stateengine.server.persist_log import (
    SNAPSHOT_NAME,
    LogStore,
    list_segments,
    load_snapshot,
)
from stateengine.server.persist_sql import SQLITE_NAME, PostgresStore, SqliteStore

__all__ = [
    "BACKENDS",
    "FSYNC_POLICIES",
    "CorruptStore",
    "FileSystem",
    "OsFileSystem",
    "PersistenceError",
    "RecoveryReport",
    "Store",
    "StoreClosed",
    "check",
    "crash_point",
    "detect_backend",
    "open_store",
    "repair",
]

BACKENDS: Final = ("log", "sqlite", "postgres", "json")


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

        :raises PersistenceError: not stored; the pass must not be acknowledged.
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
    """The backend whose files are in *data_dir* (``postgres`` leaves none), or None."""
    data_dir = Path(data_dir)
    if (data_dir / SQLITE_NAME).exists():
        return "sqlite"
    if (data_dir / JSON_NAME).exists():
        return "json"
    if (data_dir / SNAPSHOT_NAME).exists() or (data_dir.is_dir() and list_segments(data_dir)):
        return "log"
    return None


def open_store(
    data_dir: Path | str,
    backend: str = "log",
    fsync: str = "always",
    **options: Any,
) -> Store:
    """Open the store for *data_dir* (which must exist; the server creates it 0700).

    :param backend: ``log`` | ``sqlite`` | ``postgres`` | ``json``.
    :param fsync: ``always`` | ``everysec`` | ``no``.
    :param options: per backend — log: ``snapshot_bytes`` (int), ``snapshot_mode``
        (``fork``/``inline``), ``fs`` (test file layer); postgres: ``dsn``, ``schema``;
        json: ``fs``.
    :raises ValueError: unknown backend, policy or option.
    :raises PersistenceError: *data_dir* holds another backend's files (switching would
        start empty and silently hide the old state; move them away first), or the
        backend cannot be opened (psycopg missing, PostgreSQL unreachable).
    """
    data_dir = Path(data_dir)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if fsync not in FSYNC_POLICIES:
        raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
    present = detect_backend(data_dir)
    if present is not None and present != backend:
        raise PersistenceError(
            f"{data_dir} holds a {present!r} store; this server was asked for {backend!r}. "
            f"Start with --store {present}, or move the data directory aside."
        )
    if backend == "log":
        return LogStore(data_dir, fsync, **options)
    if backend == "sqlite":
        return SqliteStore(data_dir, fsync, **options)
    if backend == "postgres":
        return PostgresStore(data_dir, fsync, **options)
    return JsonStore(data_dir, fsync, **options)


# --- check and repair --------------------------------------------------------------------------


def check(data_dir: Path | str, backend: str | None = None, **options: Any) -> dict[str, Any]:
    """Verify the stored state without changing anything; a report for humans and tests.

    Returns ``{"backend", "ok", "problems": [...], ...}``: for the log backend also
    ``snapshot`` (seq, records) and ``segments`` (file, bytes, entries, bad_offset,
    torn). A torn tail is reported but ``ok`` stays True (a start repairs it). Safe
    while a server runs (reads only), though a concurrent write can look like a tail.
    """
    data_dir = Path(data_dir)
    backend = backend or detect_backend(data_dir) or "log"
    report: dict[str, Any] = {"backend": backend, "data_dir": str(data_dir), "problems": []}
    problems: list[str] = report["problems"]
    if backend == "log":
        _check_log(data_dir, report)
    else:
        try:
            if backend == "json":
                path = data_dir / JSON_NAME
                engine = TableEngine()
                if path.exists():
                    load_json(path.read_text(encoding="utf-8"), engine)
            else:
                store = open_store(data_dir, backend, "no", **options)
                try:
                    engine = TableEngine()
                    store.recover(engine)
                finally:
                    store.close()
            report["seq"] = engine.seq
            report["records"] = sum(len(t.records) for t in engine.tables.values())
        except CorruptStore as exc:
            problems.append(str(exc))
    report["ok"] = not problems
    return report


def _check_log(data_dir: Path, report: dict[str, Any]) -> None:
    problems: list[str] = report["problems"]
    snap_seq = 0
    snap = data_dir / SNAPSHOT_NAME
    if snap.exists():
        try:
            info = load_snapshot(snap, None)
            report["snapshot"] = {"seq": info.seq, "records": info.records, "bytes": info.size}
            snap_seq = info.seq
        except CorruptStore as exc:
            report["snapshot"] = {"error": str(exc)}
            problems.append(str(exc))
    segments = list_segments(data_dir)
    report["segments"] = []
    if segments and segments[0][0] > snap_seq:
        problems.append(f"log segments missing between seq {snap_seq} and {segments[0][0]}")
    last_seq = snap_seq
    for i, (base, path) in enumerate(segments):
        scan = scan_frames(path.read_bytes())
        entry: dict[str, Any] = {
            "file": path.name,
            "base": base,
            "bytes": scan.size,
            "entries": len(scan.payloads),
            "bad_offset": scan.bad_offset,
            "torn": scan.torn,
            "reason": scan.reason,
        }
        for payload, offset in zip(scan.payloads, scan.offsets, strict=True):
            try:
                last_seq = max(last_seq, decode_change_set(payload).seq)
            except (ValueError, TypeError, KeyError) as exc:
                problems.append(f"{path.name}: entry at byte {offset} cannot be decoded: {exc}")
                break
        report["segments"].append(entry)
        if scan.bad_offset >= 0:
            if scan.torn and i == len(segments) - 1:
                entry["torn_bytes"] = scan.size - scan.good_end
            else:
                problems.append(
                    f"{path.name}: damaged at byte {scan.bad_offset} of {scan.size} "
                    f"({scan.reason}); {scan.size - scan.good_end} bytes from there on"
                )
    report["seq"] = last_seq


def repair(data_dir: Path | str, backend: str | None = None) -> dict[str, Any]:
    """Cut the log at its first damage so that the server can start; keep what is cut.

    The damaged segment is truncated at the first bad entry; the bytes from there on and
    every later segment are moved to ``DATA_DIR/repair-<time>/`` (nothing is deleted).
    Entries after the damage are dropped even if valid: each depends on the ones before
    it. A damaged snapshot is moved aside too, which only helps if the log still reaches
    back to seq 0. Run only while no server uses *data_dir*.

    :return: what was done: ``{"actions": [...], "dropped_bytes": n, "check": {...}}``.
    :raises PersistenceError: for backends other than ``log`` (use the database's own
        tools; a JSON file is a text file).
    """
    data_dir = Path(data_dir)
    backend = backend or detect_backend(data_dir) or "log"
    if backend != "log":
        raise PersistenceError(f"repair knows the log backend only, not {backend!r}")
    aside = data_dir / time.strftime("repair-%Y%m%d-%H%M%S")
    actions: list[str] = []
    dropped = 0

    def move_aside(path: Path) -> None:
        aside.mkdir(mode=0o700, exist_ok=True)
        shutil.move(str(path), str(aside / path.name))
        actions.append(f"moved {path.name} to {aside.name}/")

    snap = data_dir / SNAPSHOT_NAME
    if snap.exists():
        try:
            load_snapshot(snap, None)
        except CorruptStore:
            move_aside(snap)
    segments = list_segments(data_dir)
    cut = False
    for i, (_, path) in enumerate(segments):
        if cut:
            dropped += path.stat().st_size
            move_aside(path)
            continue
        data = path.read_bytes()
        scan = scan_frames(data)
        if scan.bad_offset < 0:
            continue
        cut = True
        aside.mkdir(mode=0o700, exist_ok=True)
        write_private_file(aside / f"{path.name}.from-{scan.good_end}", data[scan.good_end :])
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, scan.good_end)
            os.fsync(fd)
        finally:
            os.close(fd)
        dropped += scan.size - scan.good_end
        actions.append(
            f"truncated {path.name} at byte {scan.good_end} ({scan.reason}); "
            f"{scan.size - scan.good_end} bytes kept in {aside.name}/ "
            f"({'torn tail' if scan.torn and i == len(segments) - 1 else 'corruption'})"
        )
    OsFileSystem().sync_dir(str(data_dir))
    return {"actions": actions, "dropped_bytes": dropped, "check": check(data_dir, "log")}
