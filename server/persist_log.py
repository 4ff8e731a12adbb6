"""The embedded default store: an append-only log plus compact snapshots, in the data dir.

Files (all in the data directory, mode 0600):

* ``log.<base>.selog`` — log segments. Each entry is one pass's change set (msgpack),
  framed with its length and checksums (:func:`~.persist_base.frame`). ``<base>`` (20
  digits) is the ``seq`` the segment follows: it holds entries with ``seq > base``.
* ``snapshot.sesnap`` — every table at one ``seq``: a header frame (format, seq, counts,
  the generic ``extra`` section for later stored manifest values), one frame per table
  meta, record chunks of up to 4096 records, an end frame. Written as
  ``snapshot.sesnap.tmp``, fsynced, read back and verified, then the old
  ``snapshot.sesnap`` is renamed to ``snapshot.prev.sesnap`` and the new one into place,
  then the directory fsynced.
* ``snapshot.prev.sesnap`` — the snapshot before the newest. Kept, with the log from its
  seq on, so that a damaged newest snapshot can be rebuilt from it and the log
  (``stateengine repair``): the log is trimmed behind the *previous* snapshot, never the
  newest. Before the second snapshot the whole log is kept (the "previous snapshot"
  is then the empty state at seq 0).

Snapshots without stalling writes. When the log has grown past a threshold (64 MiB, or
the last snapshot's size if larger: Redis's auto-aof-rewrite rule) the writer rotates
to a new segment (base = the current ``seq``) and ``os.fork()`` s; the child holds a
copy-on-write image of the engine at that ``seq``, dumps it and leaves with
``os._exit`` (it never touches ZeroMQ, logging or atexit handlers). It first closes
every descriptor it inherited (the data-dir lock's among them: a writer killed mid-dump
can be restarted at once) and dies with the writer (``PR_SET_PDEATHSIG`` on Linux, a
parent check between chunks everywhere). The writer goes on appending to the new
segment and, once the child has exited 0, deletes the segments with a base lower than
the previous snapshot's seq. Measured in ``bench/durability.py``: the parent pays only
the fork (page-table copy, ~tens of ms per GB of heap) instead of the whole dump. Rejected:
encoding incrementally between passes (needs a copy-on-write engine or a log of what
changed during the dump; more code for the same effect). Where ``fork`` is missing the
snapshot runs inline (``snapshot_mode="inline"``, also what the power-cut tests use).

Recovery: the newest snapshot (a damaged one stops the start: ``repair`` rebuilds it),
then every segment's entries with ``seq`` above it. A bad frame
in the last segment with no valid frame behind it is a torn tail: truncated and
reported. Any other damage raises :class:`~.persist_base.CorruptStore` before anything
is applied (every frame is checked first).

Not thread-safe except for the ``everysec`` syncer thread, which it owns. One process
per data directory (the server's lock file enforces it).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import logging
import operator
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from stateengine import defaults
from stateengine.server.engine import EXPIRES_FIELD, ChangeSet, Table, TableEngine
from stateengine.server.persist_base import (
    FSYNC_POLICIES,
    CorruptStore,
    Encoded,
    FileHandle,
    FileSystem,
    FrameScan,
    OsFileSystem,
    PersistenceError,
    Progress,
    RecoveryReport,
    StoreClosed,
    count_crash_point,
    count_records,
    crash_point,
    decode_change_set,
    encode_change_set,
    frame,
    gc_paused,
    lease_in,
    lease_out,
    packb,
    restore_table,
    scan_frames,
    unpackb,
)

log = logging.getLogger("stateengine.persistence")

SNAPSHOT_NAME: Final = "snapshot.sesnap"
SNAPSHOT_PREV: Final = "snapshot.prev.sesnap"
SNAPSHOT_TMP: Final = "snapshot.sesnap.tmp"
SEGMENT_RE: Final = re.compile(r"^log\.(\d{20})\.selog$")
SNAPSHOT_FORMAT: Final = "stateengine-snapshot/1"
CHUNK: Final = 4096
DEFAULT_SNAPSHOT_BYTES: Final = defaults.SNAPSHOT_BYTES


def segment_name(base: int) -> str:
    return f"log.{base:020d}.selog"


def list_segments(data_dir: Path) -> list[tuple[int, Path]]:
    """``(base, path)`` of every log segment, by base."""
    out = []
    for path in data_dir.iterdir():
        m = SEGMENT_RE.match(path.name)
        if m:
            out.append((int(m.group(1)), path))
    return sorted(out)


# --- snapshots -------------------------------------------------------------------------------


def snapshot_chunks(
    engine: TableEngine, extra: dict[str, Any], crash: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """The framed snapshot of *engine*, chunk by chunk (see the module docstring).

    *crash* (the ``mid-snapshot`` crash point) runs once, half-way through the records.
    """
    total = count_records(engine)
    header = {
        "format": SNAPSHOT_FORMAT,
        "seq": engine.seq,
        "tables": len(engine.tables),
        "records": total,
        "extra": extra,
        "created": time.time(),
    }
    yield frame(packb(header))
    done = 0
    for name, table in engine.tables.items():
        yield frame(packb(["t", name, table.state()]))
        leases = table.leases
        chunk: list[list[Any]] = []
        for rid, record in table.records.items():
            chunk.append([rid, record, lease_out(leases.get(rid))])
            if len(chunk) >= CHUNK:
                yield frame(packb(["r", name, chunk]))
                done += len(chunk)
                chunk = []
                if crash is not None and done * 2 >= total:
                    crash()
                    crash = None
        if chunk:
            yield frame(packb(["r", name, chunk]))
            done += len(chunk)
    if crash is not None:
        crash()
    yield frame(packb(["end", done]))


def newest_snapshot(data_dir: Path) -> Path | None:
    """The snapshot recovery starts from: ``snapshot.sesnap``, or the previous one when a
    crash came between the two renames of a new snapshot (the log is kept from it)."""
    for name in (SNAPSHOT_NAME, SNAPSHOT_PREV):
        if (data_dir / name).exists():
            return data_dir / name
    return None


@dataclass
class SnapshotInfo:
    seq: int
    records: int
    tables: int
    extra: dict[str, Any]
    size: int


# A record chunk, ``packb(["r", table, [[id, record, lease], ...]])``, starts with these
# bytes (a 3-array, the 1-char str "r"); its records are decoded one by one from their
# own bytes, which recovery keeps for the arena (see _load_rows).
_RECORDS_CHUNK: Final = b"\x93\xa1r"
_decode_chunk = msgspec.msgpack.Decoder(tuple[str, str, list[tuple[Any, msgspec.Raw, Any]]]).decode
#: msgspec's decoder of any msgpack value: the same values as ``unpackb`` for every
#: value a record may hold (``protocol.check_value``: no ext types), 0.5 µs a record
#: of the bench's shape where ``unpackb`` of the whole chunk took 1.0
_decode_value = msgspec.msgpack.Decoder().decode
_first, _second, _third = (operator.itemgetter(i) for i in range(3))
_EXPIRES: Final = itertools.repeat(EXPIRES_FIELD)


def _load_rows(
    table: Table | None,
    rows: list[tuple[Any, msgspec.Raw, Any]],
    encoded: Encoded | None,
    ttl_tables: set[str] | None = None,
) -> None:
    """Put one chunk's records into *table*, or only decode them if None (a check); keep
    their bytes in *encoded* unless None; add the table's name to *ttl_tables* (unless
    None) when one of them has a TTL.

    Each step is one C-level ``map`` over the chunk (no Python loop per record but for
    leases): the log store's recover of 10⁶ records of the bench's shape took 1.0–1.1 s
    of CPU this way, 1.4–2.1 s with ``unpackb`` of the chunk and a loop over its rows
    (gc paused in both; three runs each on a loaded machine).
    """
    raws = list(map(_second, rows))
    records = list(map(_decode_value, raws))
    if table is None:
        return
    if ttl_tables is not None and table.name not in ttl_tables:
        # while the chunk's records are in the cache: a cold pass over 10⁶ of them for
        # TTLs after the recovery (Engine.rebuild_deadlines) took ~0.11 s of a start
        if any(map(operator.contains, records, _EXPIRES)):
            ttl_tables.add(table.name)
    ids = list(map(_first, rows))
    table.records.update(zip(ids, records, strict=True))
    if any(map(_third, rows)):
        for rid, _, lease in rows:
            if lease is not None:
                table.leases[rid] = lease_in(lease)  # type: ignore[assignment]
    if encoded is not None:
        kept = encoded.setdefault(table.name, ([], []))
        kept[0].extend(records)
        kept[1].extend(raws)


def load_snapshot(
    path: Path,
    engine: TableEngine | None,
    progress: Progress | None = None,
    encoded: Encoded | None = None,
    ttl_tables: set[str] | None = None,
) -> SnapshotInfo:
    """Read (and verify) a snapshot; fill *engine* (fresh) unless None, and *encoded*
    with each table's records and their stored bytes unless None, and *ttl_tables* with
    the tables holding a record with a TTL unless None.

    :raises CorruptStore: any bad frame, a missing end frame, or counts that disagree
        (a snapshot is renamed into place only once complete and fsynced, so any damage
        is corruption, never a torn tail).
    """
    data = path.read_bytes()
    scan = scan_frames(data)
    if scan.bad_offset >= 0:
        raise CorruptStore(
            f"snapshot {path} is damaged at byte {scan.bad_offset} ({scan.reason})",
            str(path),
            scan.bad_offset,
        )
    if not scan.payloads:
        raise CorruptStore(f"snapshot {path} is empty", str(path), 0)
    try:
        header = unpackb(scan.payloads[0])
        if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format {header!r:.80}")
        total = int(header["records"])
        loaded = 0
        table = None
        ended = False
        for payload in scan.payloads[1:]:
            if payload.startswith(_RECORDS_CHUNK):
                rows = _decode_chunk(payload)[2]
                _load_rows(table, rows, encoded, ttl_tables)
                loaded += len(rows)
                if progress is not None:
                    progress(loaded, total)
                continue
            item = unpackb(payload)
            kind = item[0]
            if kind == "t":
                table = restore_table(engine, item[1], item[2]) if engine is not None else None
            elif kind == "r":
                raise ValueError("a record chunk of an unknown shape")
            elif kind == "end":
                ended = item[1] == loaded == total
            else:
                raise ValueError(f"unknown snapshot item {kind!r}")
        if not ended:
            raise ValueError(f"incomplete: {loaded} of {total} records and no end mark")
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CorruptStore(f"snapshot {path} cannot be decoded: {exc}", str(path), 0) from None
    if engine is not None:
        engine.seq = int(header["seq"])
    return SnapshotInfo(
        int(header["seq"]), total, int(header["tables"]), dict(header["extra"]), len(data)
    )


# --- the forked dumper -------------------------------------------------------------------------

_TEST_DELAY_ENV: Final = "STATEENGINE_TEST_SNAPSHOT_DELAY"
_PR_SET_PDEATHSIG: Final = 1


def _become_dumper(parent: int) -> None:
    """First thing in the forked snapshot child: hold nothing of the writer's, die with it.

    The child inherits every descriptor of the writer, the data-dir lock's among them; a
    ``flock`` belongs to the open file description that fork shares, so while any copy
    stays open the lock stays held, and a writer killed mid-dump could not be restarted
    until the dump ended (issue 14 item 20; ``O_CLOEXEC`` does not help: no exec). It
    also holds the ZeroMQ and TCP listening sockets and the arena's descriptors. The
    dumper needs none of them (it opens its own file), so it closes every one above
    stderr. Then it asks the kernel for SIGKILL when the writer dies (Linux
    ``PR_SET_PDEATHSIG``); elsewhere, and for the race where the writer died before the
    request, it checks its parent between chunks (:func:`_while_parent_lives`).
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (macOS): every possible descriptor
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    else:
        for fd in fds:
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listing's own descriptor, already closed
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the parent check below still ends the dump
    _exit_if_orphaned(parent)


def _exit_if_orphaned(parent: int) -> None:
    if os.getppid() != parent:
        os._exit(1)


def _while_parent_lives(chunks: Iterator[bytes], parent: int) -> Iterator[bytes]:
    """*chunks*, ending the process when the writer is gone. Also the test-only switch
    ``STATEENGINE_TEST_SNAPSHOT_DELAY=seconds``: a pause after the header, to kill the
    writer in the middle of a dump."""
    delay = float(os.environ.get(_TEST_DELAY_ENV) or 0)
    for n, chunk in enumerate(chunks):
        _exit_if_orphaned(parent)
        yield chunk
        if n == 0 and delay > 0:
            until = time.monotonic() + delay
            while time.monotonic() < until:
                _exit_if_orphaned(parent)
                time.sleep(0.05)


# --- the store ---------------------------------------------------------------------------------


@dataclass
class _Child:
    pid: int
    seq: int
    started: float


@dataclass
class _Segment:
    base: int
    path: Path
    size: int


@dataclass
class LogStore:
    """Append-only log + snapshots. See the module docstring for the design.

    :param data_dir: an existing, private directory (the server's data directory).
    :param fsync: ``always`` (fsync each :meth:`write` before returning: nothing
        acknowledged is ever lost), ``everysec`` (a thread fsyncs once a second: a power
        cut loses at most about a second; a process crash loses nothing), ``no`` (the OS
        decides; a process crash still loses nothing).
    :param snapshot_bytes: log size that triggers a snapshot (see :meth:`maybe_snapshot`).
    :param snapshot_mode: ``fork`` (default where available) or ``inline``.
    :param fs: the file layer (tests inject a power-cut simulator).
    """

    data_dir: Path
    fsync: str = defaults.FSYNC
    snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES
    snapshot_mode: str = "fork" if hasattr(os, "fork") else "inline"
    fs: FileSystem = field(default_factory=OsFileSystem)
    sync_interval: float = defaults.SYNC_INTERVAL

    backend: str = field(default="log", init=False)

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {self.fsync!r}")
        if self.snapshot_mode not in ("fork", "inline"):
            raise ValueError(
                f"snapshot_mode must be 'fork' or 'inline', not {self.snapshot_mode!r}"
            )
        self.data_dir = Path(self.data_dir)
        self._fh: FileHandle | None = None
        self._segments: list[_Segment] = []
        self._child: _Child | None = None
        self._last_snapshot_size = 0
        self._snap_seq = 0  # the newest snapshot's seq (0: none)
        self._retry_after = 0.0
        self._closed = False
        self._recovered = False
        self._dirty = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.stats: dict[str, int] = {"writes": 0, "bytes": 0, "syncs": 0, "snapshots": 0}

    # --- recovery ----------------------------------------------------------------------------

    def recovery_bytes(self) -> int:
        """The size of the snapshot :meth:`recover` will load (0 if none): the arena's
        hint (``Server._reserve_arena``)."""
        path = newest_snapshot(self.data_dir)
        try:
            return path.stat().st_size if path is not None else 0
        except FileNotFoundError:
            return 0

    @gc_paused
    def recover(self, engine: TableEngine, progress: Progress | None = None) -> RecoveryReport:
        """Load the snapshot then the log into *engine* (empty); open the log for writing.

        :raises CorruptStore: damage anywhere but a torn tail of the last segment; nothing
            has been applied to *engine* then only if the snapshot itself is fine (the
            server must exit either way).
        :raises PersistenceError: the directory holds another backend's files.
        """
        if self._recovered:
            raise PersistenceError("recover() runs once, before any write")
        started = time.monotonic()
        report = RecoveryReport("log")
        tmp = self.data_dir / SNAPSHOT_TMP
        if tmp.exists():
            tmp.unlink()  # a dump that never completed; the old snapshot stands
        snap_path = newest_snapshot(self.data_dir)
        if snap_path is not None:
            report.ttl_tables = set()
            info = load_snapshot(snap_path, engine, progress, report.encoded, report.ttl_tables)
            self._snap_seq = info.seq
            report.snapshot_seq = info.seq
            report.snapshot_records = info.records
            report.extra = info.extra
            self._last_snapshot_size = info.size
        segments = list_segments(self.data_dir)
        scans = self._scan_segments(segments, report.snapshot_seq or 0)
        for base, path, scan in scans:
            for payload in scan.payloads:
                try:
                    cs = decode_change_set(payload)
                except (ValueError, TypeError, KeyError) as exc:
                    raise CorruptStore(
                        f"log {path}: an entry with a valid checksum cannot be decoded: {exc}",
                        str(path),
                    ) from None
                if cs.seq <= engine.seq:
                    continue  # already in the snapshot
                engine.apply_change_set(cs)
                if report.ttl_tables is not None:  # a table the log touched: scanned
                    report.ttl_tables.update(cs.tables, cs.dropped, map(_first, cs.puts))
                report.log_entries += 1
            self._segments.append(_Segment(base, path, scan.good_end))
        if scans and scans[-1][2].bad_offset >= 0:
            _, path, scan = scans[-1]
            report.torn_bytes = scan.size - scan.good_end
            report.torn_file = path.name
            fh = self.fs.open_append(str(path))
            fh.truncate(scan.good_end)
            fh.sync()
            fh.close()
            log.warning(
                "torn tail of %d bytes dropped from %s (%s at byte %d)",
                report.torn_bytes,
                path.name,
                scan.reason,
                scan.bad_offset,
            )
        if self._segments:
            last = self._segments[-1]
            self._fh = self.fs.open_append(str(last.path))
        else:
            self._open_segment(engine.seq)
        self._recovered = True
        self._start_syncer()
        report.records = count_records(engine)
        report.tables = len(engine.tables)
        report.seq = engine.seq
        report.seconds = time.monotonic() - started
        return report

    def _scan_segments(
        self, segments: list[tuple[int, Path]], snapshot_seq: int
    ) -> list[tuple[int, Path, FrameScan]]:
        out = []
        if segments and segments[0][0] > snapshot_seq:
            raise CorruptStore(
                f"the log starts at seq {segments[0][0]} but the snapshot ends at seq "
                f"{snapshot_seq}: segments are missing",
                str(segments[0][1]),
            )
        for i, (base, path) in enumerate(segments):
            scan = scan_frames(path.read_bytes())
            if scan.bad_offset >= 0 and not (scan.torn and i == len(segments) - 1):
                where = "before the tail" if not scan.torn else "in a segment that is not the last"
                raise CorruptStore(
                    f"log {path} is damaged at byte {scan.bad_offset} of {scan.size} "
                    f"({scan.reason}, {where})",
                    str(path),
                    scan.bad_offset,
                )
            out.append((base, path, scan))
        return out

    def _open_segment(self, base: int) -> None:
        path = self.data_dir / segment_name(base)
        fh = self.fs.open_append(str(path))
        try:
            # The new name must survive a power cut before anything in it is acknowledged.
            self.fs.sync_dir(str(self.data_dir))
        except BaseException:
            fh.close()  # the store keeps appending to the segment it had
            raise
        self._fh = fh
        self._segments.append(_Segment(base, path, fh.size()))

    # --- writing -----------------------------------------------------------------------------

    def write(self, cs: ChangeSet) -> None:
        """Append one pass's change set; under ``always`` fsync before returning.

        Call once per pass (group commit: one fsync covers the whole pass), before
        publishing or replying. Encodes at once: *cs* holds the engine's live records.

        :raises PersistenceError: the write or fsync failed (disk full, I/O error). The
            pass is then not durable and the engine is ahead of the disk: the server must
            not acknowledge it and should stop; a restart recovers the durable state.
        :raises StoreClosed: after :meth:`close`.
        """
        if not cs:
            return
        fh = self._fh
        if fh is None:
            raise StoreClosed("the log store is closed" if self._closed else "recover() first")
        data = frame(encode_change_set(cs))
        size = self._segments[-1].size
        try:
            fh.write(data)
            crash_point("log-appended")
            if self.fsync == "always":
                fh.sync()
                self.stats["syncs"] += 1
            else:
                self._dirty = True
        except OSError as exc:
            # Whatever part of the entry reached the file goes: a later entry must not
            # follow a torn one, and a whole entry whose fsync failed was never
            # acknowledged (recovery must not resurrect it). Shrinking needs no space.
            try:
                fh.truncate(size)
            except OSError as cut:
                log.error("cannot cut the failed entry from the log: %s", cut)
            raise PersistenceError(f"cannot append to the log: {exc}") from exc
        self._segments[-1].size += len(data)
        self.stats["writes"] += 1
        self.stats["bytes"] += len(data)

    def reload(self, engine: TableEngine) -> None:
        """Replace *engine*'s state with what the files hold (after a failed :meth:`write`).

        Reads the snapshot and every segment again, as a start does; the log stays open
        for appending. A snapshot child may rename a new snapshot meanwhile: either one
        is complete, and the segments it covers are removed only by this process.

        :raises CorruptStore: the files are damaged (the server must stop).
        """
        engine.tables = {}
        engine.seq = 0
        snap_path = newest_snapshot(self.data_dir)
        snapshot_seq = 0
        if snap_path is not None:
            snapshot_seq = load_snapshot(snap_path, engine, None).seq
        for _, _path, scan in self._scan_segments(list_segments(self.data_dir), snapshot_seq):
            if scan.bad_offset >= 0 and self._fh is not None:
                # A torn tail in the open segment (its cut in write() failed): cut it now,
                # or the next entry would follow damage.
                self._fh.truncate(scan.good_end)
                self._segments[-1].size = scan.good_end
            for payload in scan.payloads:
                cs = decode_change_set(payload)
                if cs.seq > engine.seq:
                    engine.apply_change_set(cs)

    def tick(self) -> None:
        """Nothing to do: the ``everysec`` thread syncs on its own. (Reaps a snapshot.)"""
        self._reap()

    def _start_syncer(self) -> None:
        if self.fsync != "everysec":
            return
        self._syncer = threading.Thread(
            target=self._sync_loop, name="stateengine-fsync", daemon=True
        )
        self._syncer.start()

    def _sync_loop(self) -> None:
        # The write path never waits for this thread: it only sets _dirty. The lock keeps
        # rotation and close from closing the descriptor under a running fsync.
        while not self._stop.wait(self.sync_interval):
            if not self._dirty:
                continue
            with self._lock:
                fh = self._fh
                if fh is None:
                    continue
                self._dirty = False
                try:
                    fh.sync()
                    self.stats["syncs"] += 1
                except OSError as exc:  # reported, retried next second (Redis does the same)
                    self._dirty = True
                    log.error("background fsync of the log failed: %s", exc)

    def sync(self) -> None:
        """fsync the log now, whatever the policy."""
        with self._lock:
            if self._fh is not None:
                self._fh.sync()
                self._dirty = False

    # --- snapshots ------------------------------------------------------------------------

    def log_bytes(self) -> int:
        """Bytes of log written since the newest snapshot (what the next one compacts;
        the older segments kept for the previous snapshot do not count)."""
        return sum(s.size for s in self._segments if s.base >= self._snap_seq)

    def maybe_snapshot(self, engine: TableEngine, extra: dict[str, Any] | None = None) -> bool:
        """Start a snapshot if the log has grown enough; reap a finished one.

        Call after the pass's replies. Cheap when nothing is due (a sum and a compare).
        :return: True if a snapshot was started.
        """
        self._reap()
        if self._child is not None or time.monotonic() < self._retry_after:
            return False
        threshold = max(self.snapshot_bytes, self._last_snapshot_size)
        if self.log_bytes() < threshold:
            return False
        self.snapshot(engine, extra, wait=False)
        return True

    def snapshot(
        self, engine: TableEngine, extra: dict[str, Any] | None = None, wait: bool = True
    ) -> None:
        """Snapshot *engine* now (fork or inline per ``snapshot_mode``), then trim the log.

        With ``wait`` a forked dump is waited for. Safe to call between passes only.
        :raises PersistenceError: an inline dump failed, or a waited-for child failed.
        """
        self._reap()
        if self._child is not None:
            if not wait:
                return
            self._wait_child()
        if self._fh is None:
            raise StoreClosed("the log store is closed")
        seq = engine.seq
        self._rotate(seq)
        extra = extra or {}
        if self.snapshot_mode == "inline":
            self._dump(engine, extra, child=False)
            self._after_snapshot(seq)
            return
        count_crash_point("mid-snapshot")  # the child's passes, counted in the parent
        count_crash_point("snapshot-renamed")
        gc.freeze()  # fewer pages touched (copied) in the child by the collector
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            code = 1
            try:
                _become_dumper(parent)
                gc.disable()
                self._dump(engine, extra, child=True, parent=parent)
                code = 0
            finally:
                os._exit(code)
        gc.unfreeze()
        self._child = _Child(pid, seq, time.monotonic())
        if wait:
            self._wait_child()

    def _rotate(self, seq: int) -> None:
        if self._segments and self._segments[-1].base == seq:
            return  # nothing written since the last rotation
        with self._lock:
            assert self._fh is not None
            self._fh.sync()  # the closed segment is complete on disk, whatever the policy
            self._dirty = False
            old = self._fh
            self._open_segment(seq)  # on failure (disk full) the old segment stays open
            old.close()

    def _dump(
        self, engine: TableEngine, extra: dict[str, Any], child: bool, parent: int = 0
    ) -> None:
        tmp = str(self.data_dir / SNAPSHOT_TMP)

        def crash() -> None:
            crash_point("mid-snapshot", kill_parent=child, counted=child)

        chunks = snapshot_chunks(engine, extra, crash)
        if parent:
            chunks = _while_parent_lives(chunks, parent)
        self.fs.write_file(tmp, chunks)
        # Verified before it replaces anything: the previous snapshot stays until the
        # new one reads back whole (CorruptStore: the dump failed, the old files stand).
        load_snapshot(Path(tmp), None)
        if parent:
            _exit_if_orphaned(parent)  # a restarted server may own the directory by now
        newest = str(self.data_dir / SNAPSHOT_NAME)
        if os.path.exists(newest):
            # A crash between these renames leaves only snapshot.prev.sesnap: recovery
            # starts from it, and the log is kept from its seq (see _after_snapshot).
            self.fs.rename(newest, str(self.data_dir / SNAPSHOT_PREV))
        self.fs.rename(tmp, newest)
        crash_point("snapshot-renamed", kill_parent=child, counted=child)
        self.fs.sync_dir(str(self.data_dir))

    def _reap(self) -> None:
        child = self._child
        if child is None:
            return
        pid, status = os.waitpid(child.pid, os.WNOHANG)
        if pid == 0:
            return
        self._finish_child(child, status)

    def _wait_child(self) -> None:
        child = self._child
        assert child is not None
        _, status = os.waitpid(child.pid, 0)
        self._finish_child(child, status)
        if self._retry_after:
            raise PersistenceError(f"the snapshot process failed (status {status:#x})")

    def _finish_child(self, child: _Child, status: int) -> None:
        self._child = None
        if os.waitstatus_to_exitcode(status) == 0:
            self._retry_after = 0.0
            self._after_snapshot(child.seq)
            log.info(
                "snapshot at seq %d written in %.2f s", child.seq, time.monotonic() - child.started
            )
        else:
            self._retry_after = time.monotonic() + 10.0
            # A dump that failed (disk full) must not keep the space it took.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.data_dir / SNAPSHOT_TMP)
            log.error(
                "snapshot process exited with %s; the log is kept, retrying in 10 s",
                os.waitstatus_to_exitcode(status),
            )

    def _after_snapshot(self, seq: int) -> None:
        """Trim the log behind the *previous* snapshot, not the new one.

        The snapshot that was newest until now is ``snapshot.prev.sesnap``; the log is
        kept from its seq, so that a damaged newest snapshot can be rebuilt from the
        previous one and the log (``stateengine repair``). Segments below the previous
        snapshot's seq hold nothing either snapshot needs. Cost: the log of about two
        snapshot intervals and two snapshots on disk, and a start reads (and checks)
        the older interval too.
        """
        self.stats["snapshots"] += 1
        self._last_snapshot_size = (self.data_dir / SNAPSHOT_NAME).stat().st_size
        previous, self._snap_seq = self._snap_seq, seq
        keep = []
        for seg in self._segments:
            if seg.base < previous and seg is not self._segments[-1]:
                self.fs.remove(str(seg.path))
            else:
                keep.append(seg)
        self._segments = keep
        self.fs.sync_dir(str(self.data_dir))

    # --- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for a running snapshot, fsync and close the log. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._child is not None:
            try:
                self._wait_child()
            except PersistenceError as exc:
                log.error("%s", exc)
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.sync()  # a clean stop leaves everything on disk, any policy
                finally:
                    self._fh.close()
                    self._fh = None


# --- check ------------------------------------------------------------------------------------


def check_log(data_dir: Path, report: dict[str, Any]) -> None:
    """``stateengine check`` for the log store: snapshots and every segment, read only.

    Fills *report* (``snapshot``, ``previous_snapshot``, ``segments``, ``seq``) and appends
    to ``report["problems"]``; a torn tail is reported but is no problem (a start cuts it).
    """
    problems: list[str] = report["problems"]
    snap_seq = None
    for key, name in (("snapshot", SNAPSHOT_NAME), ("previous_snapshot", SNAPSHOT_PREV)):
        snap = data_dir / name
        if not snap.exists():
            continue
        try:
            info = load_snapshot(snap, None)
            report[key] = {"seq": info.seq, "records": info.records, "bytes": info.size}
            snap_seq = info.seq if snap_seq is None else snap_seq
        except CorruptStore as exc:
            report[key] = {"error": str(exc)}
            problems.append(str(exc))
            if key == "snapshot":
                snap_seq = -1  # recovery starts from it: no other snapshot stands in
    snap_seq = max(snap_seq or 0, 0)
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
