"""Online backups (``stateengine backup``) and restores (``stateengine restore``).

A backup is a directory holding one ``snapshot.sesnap`` in the log store's snapshot
format (``server/persist_log.py``): every table, record, version and lease at one
``seq``, which its header names. It is a data directory a server can start on as it is
(``--store log``), and what ``restore`` loads into any store.

Taken by the writer, while writes go on, as its own snapshots are (Redis's BGSAVE): the
``BACKUP`` request is answered once the pass that received it is stored and published;
the writer then forks, and the child, holding a copy-on-write image of the engine at
that pass's ``seq``, writes ``DATA_DIR/backups/<name>/snapshot.sesnap`` (a temporary
file, fsynced, read back and verified, renamed, the directory fsynced) and exits. The
writer goes on serving and answers the request when the child has exited. Where
``fork`` is missing the dump runs inline (writes wait for it). The server writes only
under its own data directory, whatever the client asks (a remote client cannot make it
write elsewhere); the local ``stateengine backup DEST`` then moves the directory to
``DEST``.

Copying the files of a live data directory is not a backup: a snapshot being renamed or
a log segment being trimmed can make the copy miss state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from stateengine.runtime import discovery as paths
from stateengine.server.engine import TableEngine
from stateengine.server.persist_base import OsFileSystem, PersistenceError
from stateengine.server.persist_log import (
    SNAPSHOT_NAME,
    _become_dumper,
    _while_parent_lives,
    load_snapshot,
    snapshot_chunks,
)

#: The request (not in the command table: the writer answers it, never the engine).
BACKUP_COMMAND: Final = "BACKUP"
BACKUPS_DIR: Final = "backups"


@dataclass
class BackupJob:
    """One backup being written: its child (0: done inline), where, at which ``seq``,
    and the requests waiting for it (socket, envelope, as_json, req_id)."""

    pid: int
    seq: int
    path: Path
    started: float
    waiters: list[tuple[Any, list[bytes], bool, Any]] = field(default_factory=list)
    status: int | None = None


def backup_path(data_dir: Path, seq: int) -> Path:
    """A new directory for a backup at *seq*: ``DATA_DIR/backups/<utc time>-seq<seq>``."""
    folder = paths.private_dir(data_dir / BACKUPS_DIR)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{stamp}-seq{seq}"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{stamp}-seq{seq}.{n}"
    return paths.private_dir(path)


def write_backup(engine: TableEngine, path: Path, parent: int = 0) -> None:
    """Write *engine* as ``path/snapshot.sesnap``: temp file, fsync, verify, rename.

    :raises CorruptStore: the written file does not read back.
    :raises OSError: the disk refused it.
    """
    fs = OsFileSystem()
    tmp = path / (SNAPSHOT_NAME + ".tmp")
    chunks = snapshot_chunks(engine, {"backup": True})
    if parent:
        chunks = _while_parent_lives(chunks, parent)
    fs.write_file(str(tmp), chunks)
    load_snapshot(tmp, None)
    fs.rename(str(tmp), str(path / SNAPSHOT_NAME))
    fs.sync_dir(str(path))


def start_backup(engine: TableEngine, data_dir: Path) -> BackupJob:
    """Fork a child that writes a backup of *engine* at its current ``seq``; inline
    where ``fork`` is missing. Call between passes (everything applied is stored).

    :raises OSError: the backup directory cannot be made (or, inline, written).
    """
    path = backup_path(data_dir, engine.seq)
    job = BackupJob(0, engine.seq, path, time.monotonic())
    if not hasattr(os, "fork"):
        try:
            write_backup(engine, path)
            job.status = 0
        except (OSError, PersistenceError):
            job.status = 1
        return job
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, which never returns
        code = 1
        try:
            _become_dumper(parent)
            write_backup(engine, path, parent)
            code = 0
        finally:
            os._exit(code)
    job.pid = pid
    return job


def finished(job: BackupJob, block: bool = False) -> bool:
    """Whether *job*'s child has exited (reaped here; ``job.status`` is its exit code)."""
    if job.status is not None:
        return True
    pid, status = os.waitpid(job.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return False
    job.status = os.waitstatus_to_exitcode(status)
    return True


def result(job: BackupJob) -> dict[str, Any]:
    """What a finished backup's reply carries: its ``seq``, path and counts.

    :raises PersistenceError: the backup failed (its directory is removed).
    """
    snapshot = job.path / SNAPSHOT_NAME
    if job.status != 0 or not snapshot.exists():
        shutil.rmtree(job.path, ignore_errors=True)
        raise PersistenceError(f"the backup process failed (exit {job.status})")
    info = load_snapshot(snapshot, None)
    return {
        "seq": info.seq,
        "path": str(job.path),
        "records": info.records,
        "tables": info.tables,
        "bytes": info.size,
        "seconds": round(time.monotonic() - job.started, 3),
    }


def find_snapshot(backup: Path) -> Path:
    """The snapshot file of a backup directory (or the file itself).

    :raises FileNotFoundError: neither.
    """
    if backup.is_dir():
        backup = backup / SNAPSHOT_NAME
    if not backup.is_file():
        raise FileNotFoundError(f"{backup}: no backup here (a directory with {SNAPSHOT_NAME})")
    return backup


def restore(
    backup: Path, data_dir: Path, store: str, fsync: str = "always", **options: Any
) -> dict[str, Any]:
    """Load *backup* (verified whole first) into the empty store of *data_dir*.

    The log store gets the snapshot file itself; any other store is opened empty and
    given the whole state as one change set, so a server started on *data_dir* has the
    backup's records, versions, leases and ``seq``.

    :raises CorruptStore: the backup is damaged (nothing is written).
    :raises PersistenceError: *data_dir* holds a state already (restore into an empty one).
    :raises FileNotFoundError: no backup at *backup*.
    """
    from stateengine.server.persistence import detect_backend, open_store

    source = find_snapshot(backup)
    engine = TableEngine()
    info = load_snapshot(source, engine)
    present = detect_backend(data_dir)
    if present is not None:
        raise PersistenceError(
            f"{data_dir} holds a {present!r} store already; restore into an empty data dir"
        )
    if store == "log":
        fs = OsFileSystem()
        tmp = data_dir / (SNAPSHOT_NAME + ".tmp")
        with open(source, "rb") as fh:
            fs.write_file(str(tmp), iter(lambda: fh.read(1 << 20), b""))
        fs.rename(str(tmp), str(data_dir / SNAPSHOT_NAME))
        fs.sync_dir(str(data_dir))
    else:
        target = open_store(data_dir, store, fsync=fsync, **options)
        try:
            target.recover(TableEngine())
            target.write(engine.full_change_set())
        finally:
            target.close()
    return {"seq": info.seq, "records": info.records, "tables": info.tables, "store": store}


def move_backup(source: Path, dest: Path) -> Path:
    """Move a backup the server wrote (``DATA_DIR/backups/NAME``) to *dest* (a new or
    empty directory, made 0700): a rename on one file system, else copy, fsync, remove.

    :raises FileExistsError: *dest* holds files.
    """
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    paths.private_dir(dest)
    target = dest / SNAPSHOT_NAME
    try:
        os.replace(source / SNAPSHOT_NAME, target)
    except OSError:  # another file system
        fs = OsFileSystem()
        with open(source / SNAPSHOT_NAME, "rb") as fh:
            fs.write_file(str(target), iter(lambda: fh.read(1 << 20), b""))
    OsFileSystem().sync_dir(str(dest))
    with contextlib.suppress(OSError):
        shutil.rmtree(source)
    return target
