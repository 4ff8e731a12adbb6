"""Shared pieces of the durable stores: errors, the crash hook, file I/O, framing, codecs.

Everything here is backend-neutral; :mod:`stateengine.server.persistence` is the public
entry point (``open_store``, ``check``, ``repair``) and re-exports what callers need.

Safe across processes: nothing here holds process-wide state except the crash-point
counters (read from the environment once per process, reset in a forked child).
"""

from __future__ import annotations

import errno
import functools
import gc
import os
import signal
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, ParamSpec, Protocol, TypeVar

import msgpack

from stateengine import jsoncodec
from stateengine.server.engine import ChangeSet, Id, Lease, Record, Table, TableEngine

FSYNC_POLICIES: Final = ("always", "everysec", "no")

#: ``progress(done, total)``: records loaded so far and the total (when known).
Progress = Callable[[int, int], None]

#: table → (records, their msgpack bytes), in the table's order: what a store read its
#: records from, so that a start can hand the arena those bytes instead of packing every
#: record again (:meth:`~stateengine.server.publish.ArenaPublisher.publish_state`; the
#: bytes are any buffer the arena writer's ``load`` takes).
Encoded = dict[str, tuple[list[Record], list[Any]]]


class PersistenceError(RuntimeError):
    """The data directory cannot be read or written as a store (base class)."""


class CorruptStore(PersistenceError):
    """Stored data is damaged before its tail: the server must not start on it.

    Carries the file and byte offset of the first bad entry; the message names the
    remedy (``stateengine check`` to see, ``stateengine repair`` to cut the log there).
    """

    def __init__(self, message: str, path: str = "", offset: int = -1) -> None:
        hint = (
            " — run `stateengine check --data-dir DIR` for a report, then "
            "`stateengine repair --data-dir DIR` to truncate at the damage "
            "(the cut-off part is kept beside the file)"
        )
        super().__init__(message + hint)
        self.path = path
        self.offset = offset


class StoreClosed(PersistenceError):
    """The store was used after :meth:`close`."""


@dataclass
class RecoveryReport:
    """What :meth:`Store.recover` loaded; printed by the server at start."""

    backend: str
    records: int = 0
    tables: int = 0
    seq: int = 0
    snapshot_seq: int | None = None
    snapshot_records: int = 0
    log_entries: int = 0
    torn_bytes: int = 0
    torn_file: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the stored bytes of the records loaded, where the store has them (the server
    #: publishes from them once, then empties this)
    encoded: Encoded = field(default_factory=dict, repr=False)
    #: the only tables whose records may hold a TTL, where the store knows (the log
    #: store: those of its snapshot with one, and every table its log touched); None:
    #: any may (``TableEngine.rebuild_deadlines`` scans every record)
    ttl_tables: set[str] | None = field(default=None, repr=False)

    def summary(self) -> str:
        """One line for the server's start output."""
        parts = [
            f"{self.backend}: {self.records} records in {self.tables} tables at seq {self.seq}"
        ]
        if self.snapshot_seq is not None:
            parts.append(f"snapshot at seq {self.snapshot_seq} ({self.snapshot_records} records)")
        parts.append(f"{self.log_entries} log entries replayed")
        if self.torn_bytes:
            parts.append(f"torn tail of {self.torn_bytes} bytes dropped from {self.torn_file}")
        parts.append(f"{self.seconds:.2f} s")
        return ", ".join(parts)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def gc_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run *fn* with the cyclic GC off: for the start's bulk work (a store's recover, the
    server's whole start), which builds millions of long-lived objects. With the
    collector on, a restart of 10⁶ records spent about as long in collections walking
    them as in the work itself (CPU, collector on → off: the publish as it was, a commit
    of every record, 8.4 → 3.8–4.9 s; the recover 2.6–3.3 → 1.8–2.1 s). Nested calls
    leave it off until the outermost returns. The server then freezes what its start
    built (``Server.start``); a store used alone leaves that to its caller."""

    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()

    return paused


# --- the crash hook (test-only, cheap when unset) -------------------------------------------

_CRASH_ENV: Final = "STATEENGINE_CRASH_AT"
_crash_spec: tuple[str, int] | bool | None = False  # False: not read yet
_crash_count = 0


def _read_crash_spec() -> tuple[str, int] | None:
    raw = os.environ.get(_CRASH_ENV, "")
    if not raw:
        return None
    name, _, nth = raw.partition(":")
    return name, int(nth) if nth else 1


def crash_point(name: str, kill_parent: bool = False, counted: bool = False) -> None:
    """Kill this process with SIGKILL at the n-th pass through the point *name*.

    Test-only fault injection: ``STATEENGINE_CRASH_AT=name`` or ``name:n`` (default the
    first time). SIGKILL, not an exception: no ``finally``, no buffered flush, no atexit,
    exactly what ``kill -9`` does to the process. Cheap when unset: one global read after
    the first call.

    :param kill_parent: for a forked snapshot dumper: kill the writer (its parent) first,
        so that the whole server dies mid-snapshot.
    :param counted: the parent already counted this pass with :func:`count_crash_point`
        before forking (a child's count would otherwise restart with every fork).
    """
    global _crash_spec, _crash_count
    spec = _crash_spec
    if spec is False:
        spec = _crash_spec = _read_crash_spec()
    if spec is None or spec[0] != name:  # type: ignore[index]
        return
    if not counted:
        _crash_count += 1
    if _crash_count != spec[1]:  # type: ignore[index]
        return
    if kill_parent:
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def count_crash_point(name: str) -> None:
    """Count a pass through *name* that a forked child will make (see :func:`crash_point`)."""
    global _crash_spec, _crash_count
    if _crash_spec is False:
        _crash_spec = _read_crash_spec()
    spec = _crash_spec
    if spec is not None and spec[0] == name:  # type: ignore[index]
        _crash_count += 1


# --- the full-disk switch (test-only, cheap when unset) ---------------------------------------

_ENOSPC_ENV: Final = "STATEENGINE_TEST_ENOSPC"
_enospc_path: str | bool | None = False  # False: not read yet


def space_fault() -> None:
    """Raise ``OSError(ENOSPC)`` while the file named by ``STATEENGINE_TEST_ENOSPC`` exists.

    Test-only fault injection for machines where a small private tmpfs cannot be mounted:
    every store write and fsync, and the server's space probe, call it first, so a test
    fills "the disk" by creating that file and frees it by removing it. Cheap when unset:
    one global read after the first call. Never set it in production.

    :raises OSError: ``errno.ENOSPC`` while the switch file exists.
    """
    global _enospc_path
    path = _enospc_path
    if path is False:
        path = _enospc_path = os.environ.get(_ENOSPC_ENV) or None
    if path and os.path.exists(path):
        raise OSError(errno.ENOSPC, f"No space left on device ({_ENOSPC_ENV})")


#: Name of the file the server writes to learn whether the disk takes writes again.
PROBE_NAME: Final = ".space-probe"


def probe_space(directory: str | os.PathLike[str], nbytes: int) -> None:
    """Write *nbytes* to a probe file in *directory*, fsync it, remove it.

    :raises OSError: the write or fsync failed (``ENOSPC``: still full).
    """
    space_fault()
    path = os.path.join(directory, PROBE_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        block = b"\0" * min(nbytes, 1 << 16)
        left = nbytes
        while left > 0:
            left -= os.write(fd, block[:left])
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


# --- file I/O, injectable so tests can simulate a power cut ---------------------------------


class FileHandle(Protocol):
    """An append-only file: what the log writes through."""

    def write(self, data: bytes) -> None: ...

    def sync(self) -> None: ...

    def truncate(self, size: int) -> None: ...

    def size(self) -> int: ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    """The few file operations the stores use; tests swap in a power-cut simulator."""

    def open_append(self, path: str) -> FileHandle: ...

    def write_file(self, path: str, chunks: Iterator[bytes]) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def sync_dir(self, path: str) -> None: ...

    def remove(self, path: str) -> None: ...


class OsFile:
    """An ``O_APPEND`` file descriptor; :meth:`sync` is ``fdatasync`` (size included)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, data: bytes) -> None:
        space_fault()
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def sync(self) -> None:
        space_fault()
        _fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fdatasync(fd: int) -> None:
    # macOS has no fdatasync, and its fsync does not reach the platter; F_FULLFSYNC does.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_FULLFSYNC", 51))


class OsFileSystem:
    """The real file system."""

    def open_append(self, path: str) -> FileHandle:
        return OsFile(path)

    def write_file(self, path: str, chunks: Iterator[bytes]) -> None:
        """Write *path* from *chunks* and fsync it (not the directory: see sync_dir)."""
        space_fault()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20, closefd=False) as out:
                for chunk in chunks:
                    out.write(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, path: str) -> None:
        os.unlink(path)


# --- framing ---------------------------------------------------------------------------------

#: Every frame: magic, payload length, CRC-32 of the payload, CRC-32 of the first 12 bytes.
#: The header has its own checksum so that a flipped length bit is caught as damage and
#: never read as "the entry runs past the end of the file" (a torn tail); the magic lets a
#: scan for later valid frames skip quickly (see :func:`scan_frames`).
FRAME_MAGIC: Final = b"\xd5SE1"
_HEADER: Final = struct.Struct("<4sIII")
HEADER_SIZE: Final = _HEADER.size
MAX_FRAME: Final = 1 << 31


def frame(payload: bytes) -> bytes:
    """Frame one payload: 16-byte header (magic, length, payload CRC, header CRC) + payload."""
    n = len(payload)
    if n >= MAX_FRAME:
        raise PersistenceError(f"a log entry of {n} bytes exceeds the 2 GiB frame limit")
    pcrc = zlib.crc32(payload)
    head = struct.pack("<4sII", FRAME_MAGIC, n, pcrc)
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def _header_at(data: bytes | memoryview, pos: int) -> tuple[int, int] | None:
    """``(length, payload crc)`` if a valid header starts at *pos*, else None."""
    if pos + HEADER_SIZE > len(data):
        return None
    magic, n, pcrc, hcrc = _HEADER.unpack_from(data, pos)
    if magic != FRAME_MAGIC or zlib.crc32(data[pos : pos + 12]) != hcrc:
        return None
    return n, pcrc


def _valid_frame_at(data: bytes, pos: int) -> bool:
    head = _header_at(data, pos)
    if head is None:
        return False
    n, pcrc = head
    end = pos + HEADER_SIZE + n
    return end <= len(data) and zlib.crc32(data[pos + HEADER_SIZE : end]) == pcrc


@dataclass
class FrameScan:
    """The result of reading a framed file: payloads, and where (if anywhere) it went bad.

    ``bad_offset`` is -1 when every byte was a valid frame. ``torn`` says the damage is a
    torn tail (no valid frame follows it); otherwise it is corruption before the tail.
    """

    payloads: list[bytes]
    offsets: list[int]
    good_end: int
    size: int
    bad_offset: int = -1
    torn: bool = False
    reason: str = ""


def scan_frames(data: bytes) -> FrameScan:
    """Split *data* into frame payloads; classify the first bad frame, if any.

    Torn tail versus corruption: a crash or power cut can only damage what was written
    after the last completed fsync, which is the end of the file; so a bad frame is a torn
    tail exactly when no valid frame starts anywhere after it (an incomplete header, a
    length that runs past the end, a payload whose checksum fails with nothing valid
    behind it, or zero fill). A bad frame with a valid frame somewhere behind it is
    corruption. (Redis's ``aof-load-truncated`` accepts only a short last command; this
    rule also covers a torn last entry whose pages landed out of order.)
    """
    payloads: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    size = len(data)
    while pos < size:
        head = _header_at(data, pos)
        reason = ""
        if head is None:
            reason = "incomplete header" if pos + HEADER_SIZE > size else "bad header"
        else:
            n, pcrc = head
            end = pos + HEADER_SIZE + n
            if end > size:
                # The header's own CRC vouches for n: the entry really is cut short.
                return FrameScan(payloads, offsets, pos, size, pos, True, "entry cut short")
            payload = data[pos + HEADER_SIZE : end]
            if zlib.crc32(payload) == pcrc:
                payloads.append(payload)
                offsets.append(pos)
                pos = end
                continue
            reason = "payload checksum mismatch"
        torn = not _any_valid_frame_after(data, pos + 1)
        return FrameScan(payloads, offsets, pos, size, pos, torn, reason)
    return FrameScan(payloads, offsets, pos, size)


def frames_after(data: bytes, start: int) -> list[bytes]:
    """The payloads of every valid frame found at or after *start*, skipping damage (what
    a cut at a bad frame would drop; ``repair`` reports them)."""
    out: list[bytes] = []
    pos = data.find(FRAME_MAGIC, start)
    while pos >= 0:
        if _valid_frame_at(data, pos):
            n, _ = _header_at(data, pos)  # type: ignore[misc]
            out.append(data[pos + HEADER_SIZE : pos + HEADER_SIZE + n])
            pos = data.find(FRAME_MAGIC, pos + HEADER_SIZE + n)
        else:
            pos = data.find(FRAME_MAGIC, pos + 1)
    return out


def _any_valid_frame_after(data: bytes, start: int) -> bool:
    pos = data.find(FRAME_MAGIC, start)
    while pos >= 0:
        if _valid_frame_at(data, pos):
            return True
        pos = data.find(FRAME_MAGIC, pos + 1)
    return False


# --- the msgpack codec of change sets ----------------------------------------------------------


def packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpackb(data: bytes) -> Any:
    # strict_map_key=False: record values may be maps with integer keys.
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def lease_out(lease: Lease | None) -> list[Any] | None:
    if lease is None:
        return None
    if lease.dead is None:  # the format before dead letters: data dirs stay readable
        return [lease.expires, lease.prior]
    counter, most, fields = lease.dead
    return [lease.expires, lease.prior, [counter, most, fields]]


def lease_in(raw: list[Any] | None) -> Lease | None:
    if raw is None:
        return None
    dead = raw[2] if len(raw) > 2 else None
    return Lease(raw[0], raw[1], None if dead is None else (dead[0], dead[1], dead[2]))


def encode_change_set(cs: ChangeSet) -> bytes:
    """One change set as msgpack: ``[seq, dropped, tables, puts, deletes]``.

    Must run before the engine applies the next command: puts hold the live record dicts.
    """
    return packb(
        [
            cs.seq,
            cs.dropped,
            cs.tables,
            [[t, rid, rec, lease_out(lease)] for t, rid, rec, lease in cs.puts],
            [[t, rid] for t, rid in cs.deletes],
        ]
    )


def decode_change_set(payload: bytes) -> ChangeSet:
    seq, dropped, tables, puts, deletes = unpackb(payload)
    return ChangeSet(
        seq,
        dropped,
        tables,
        [(t, rid, rec, lease_in(lease)) for t, rid, rec, lease in puts],
        [(t, rid) for t, rid in deletes],
    )


def merge_change_sets(sets: list[ChangeSet]) -> ChangeSet:
    """Several consecutive change sets as one, equivalent when replayed (same final state).

    Used by stores that apply a pass as one transaction. Replay applies deletes before
    puts, so: a record whose last change is a delete is only deleted; a record deleted
    and then put again is in both (it moves to the end); a record put twice keeps the
    place of its first put and the value of its last.
    """
    if len(sets) == 1:
        return sets[0]
    out = ChangeSet(sets[-1].seq if sets else 0)
    puts: dict[tuple[str, Any], tuple[str, Any, Any, Any]] = {}
    deletes: dict[tuple[str, Any], None] = {}
    for cs in sets:
        for name in cs.dropped:
            out.dropped.append(name)
            out.tables.pop(name, None)
            puts = {k: v for k, v in puts.items() if k[0] != name}
            deletes = {k: None for k in deletes if k[0] != name}
        out.tables.update(cs.tables)
        for key in cs.deletes:
            key = (key[0], key[1])
            puts.pop(key, None)
            deletes[key] = None
        for put in cs.puts:
            key = (put[0], put[1])
            puts[key] = put  # an existing key keeps its place
    out.puts = list(puts.values())
    out.deletes = list(deletes)
    return out


# --- the JSON codec (human-readable, exact round trip) ------------------------------------------

#: The wire's JSON escapes (``stateengine.jsoncodec``, README "Values in JSON"): one rule
#: for the JSON store's file, the ZeroMQ wire and the HTTP gateway. It reads every file
#: the store's own codec wrote before (that one wrote escape look-alikes as ``$map``,
#: which still decodes); a malformed escape is a ``BadRequest``, a ``ValueError``, so
#: ``load_json`` reports it as ``CorruptStore``.
to_json_value = jsoncodec.to_json
from_json_value = jsoncodec.from_json


# --- building an engine from stored state --------------------------------------------------------


def restore_table(engine: TableEngine, name: str, state: dict[str, Any]) -> Table:
    """Create (or reset) table *name* in *engine* with its meta; records follow."""
    table = Table(name)
    table.restore_state(state)
    engine.tables[name] = table
    return table


def put_record(table: Table, rid: Id, record: Record, lease: Lease | None) -> None:
    table.records[rid] = record
    if lease is not None:
        table.leases[rid] = lease


def count_records(engine: TableEngine) -> int:
    return sum(len(t.records) for t in engine.tables.values())
