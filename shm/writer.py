"""The writer side of the arena: one process owns it and publishes versions.

Only the process that created an :class:`ArenaWriter` may use it. It is not
thread-safe (the server drives it from one loop). After ``fork`` the child's copy
refuses every call (``RuntimeError``) and never unlinks anything; its exit leaves
the segments alone.
"""

from __future__ import annotations

import array
import collections
import contextlib
import mmap
import operator
import os
import secrets
import struct
import sys
import tempfile
import threading
import time
import warnings
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from stateengine import defaults
from stateengine.errors import CapacityError, PayloadTooLarge
from stateengine.limits import ARENA_KEY_BYTES, ID_MAX, ID_MIN
from stateengine.shm import blocks as _blocks
from stateengine.shm import faults as _faults
from stateengine.shm import layout as L
from stateengine.shm.alloc import Allocator
from stateengine.shm.codec import (
    ENCODED_TYPES,
    MsgpackCodec,
    key_prefix,
    pack_internal,
    record_encoder,
)

__all__ = [
    "META_TABLE",
    "ArenaWriter",
    "MiB",
    "RecordId",
    "check_id",
]


META_TABLE: Final = _blocks.META_TABLE
"""Reserved table holding per-table metadata bytes (``commit(meta=...)``)."""

# Ids and key lengths the arena can carry: the engine checks the same rules at the
# front door (stateengine.limits), so an acknowledged write always fits here.
_I64_MIN: Final = ID_MIN
_I64_MAX: Final = ID_MAX
MiB: Final = 1024 * 1024

RecordId = int | str
# writer index entry: off, asize, pstart, pend, hcrc, crc, pos, version; or, for a record
# placed by load() and not changed since, its pos alone (an int: see _Cols)
_WEntry = tuple[int, int, int, int, int, int, int, int]
_Cols = _blocks.Cols
"""A loaded table's compact index (``blocks.Cols``): its dict maps a loaded id to the
record's pos, a full :data:`_WEntry` once a commit replaces it. A start's publish of 10⁶
records, CPU: 0.80 s -> 0.28 s, page faults 95k -> 38k (medians of 3 interleaved
starts, ``python -m bench.restartcpu --repeats 1``)."""
# a put ready to write: table, id, block (header, key, payload, CRC, zero padding to the
# 8-byte alignment), key length, payload length, hcrc, crc
_Prepared = tuple[str, RecordId, bytes, int, int, int, int]

# the CRC that ends a block, followed by 0..7 zero bytes of alignment padding
_TAILS: Final = tuple(struct.Struct(f"<I{pad}x") for pad in range(L.ALIGN))
_BULK_MIN: Final = 16
"""From this many puts in one commit, the blocks go into one free extent (one allocation)."""
_WRITE_CHUNK: Final = 1 << 20
"""Bytes of blocks joined into one write into the mapping."""
_LOAD_CHUNK: Final = 8192
"""Records :meth:`ArenaWriter.load` builds, writes, indexes and checkpoints at a time."""
_GET1: Final = operator.itemgetter(1)
_BLOBS: Final = (bytes, bytearray, memoryview)  # what commit's meta values may be
_META_BODY: Final = L.META_BODY.pack
_META_BODY_SIZE: Final = L.META_BODY.size
_META_CRC_INTO: Final = L.META_CRC.pack_into
_U64_INTO: Final = L.U64.pack_into
_RING_LEN: Final = L.RING_LEN.pack
_RING_HEADER: Final = L.RING_HEADER.pack


class _Loaded:
    """One table of :meth:`ArenaWriter.load`, checked and measured, its blocks not built
    yet (:meth:`ArenaWriter._place` builds and writes them chunk by chunk): its records,
    key prefix, blocks' size and what the Python twin of ``blocks.place`` reuses."""

    __slots__ = ("aux", "datas", "ids", "prefix", "size")

    def __init__(
        self, ids: list[RecordId], datas: list[Any], prefix: bytes, size: int, aux: Any
    ) -> None:
        self.ids, self.datas, self.prefix, self.size, self.aux = ids, datas, prefix, size, aux


_LIVE_WRITERS: weakref.WeakSet[ArenaWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for w in list(_LIVE_WRITERS):
        w._forked = True


_AT_FORK: Final = hasattr(os, "register_at_fork")
"""A fork marks every live writer ``_forked``: no ``getpid`` syscall per commit."""
if _AT_FORK:
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Full(Exception):
    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


check_id = _blocks.check_id
_check_table = _blocks.check_table


def _array_header(n: int) -> bytes:
    """The msgpack header of an array of *n* elements: what precedes their encodings."""
    return pack_internal([None] * n)[: -n or None]


_expand = _blocks.expand
_entries = _blocks.entries
_checkpoint_rows = _blocks.row_tuples


class _Gen:
    """One generation file mapped by the writer."""

    def __init__(self, path: str, gen: int, size: int, ring_size: int, fd: int) -> None:
        self.path = path
        self.gen = gen
        self.size = size
        self.fd = fd
        self.mm = L.map_fd(fd, size, writable=True)
        self.ring_off = L.GEN_HEADER_SIZE
        self.ring_size = ring_size
        self.data_off = self.ring_off + ring_size
        self.data_size = size - self.data_off
        self.mm[0 : L.GEN_HEADER.size] = L.GEN_HEADER.pack(
            L.GEN_MAGIC, gen, size, self.ring_off, ring_size, self.data_off, self.data_size, 0
        )

    def close(self, unlink: bool) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class _Spare:
    """A generation being made on a daemon thread (:meth:`ArenaWriter.reserve`)."""

    #: seconds :meth:`result` waits for the thread, which allocates and faults in
    #: memory; one still running after that removes what it made when it ends
    JOIN_TIMEOUT: Final = 60.0

    def __init__(self, writer: ArenaWriter, gen: int, size: int) -> None:
        self.gen: _Gen | None = None
        self.error: BaseException | None = None
        # set by result() when it stops waiting: the thread then unlinks what it made
        self._abandoned = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._make, args=(writer, gen, size), name="arena-reserve", daemon=True
        )
        self._thread.start()

    def _make(self, writer: ArenaWriter, gen: int, size: int) -> None:
        try:
            g = writer._make_generation(gen, size, "max_size")
        except BaseException as exc:  # e.g. CapacityError: the load grows as without it
            self.error = exc
            return
        try:
            if "reserve_fails" in writer._faults:  # a test's switch: fails after the file
                raise OSError("reserve_fails (test fault)")
            L.populate(g.mm)
        except BaseException as exc:
            g.close(unlink=True)
            self.error = exc
            return
        with self._lock:
            if self._abandoned:
                g.close(unlink=True)  # nobody will take it: no file left in /dev/shm
            else:
                self.gen = g

    def result(self) -> _Gen | None:
        """Wait (bounded) for the thread; the generation, or None when it failed or is
        still being made (the thread then removes it when it ends)."""
        self._thread.join(self.JOIN_TIMEOUT)
        with self._lock:
            self._abandoned = True
            return self.gen


def _ring_size_for(size: int, ring_size: int | None) -> int:
    if ring_size is not None:
        return L.align(ring_size)
    return L.align(max(min(256 * 1024, size // 4), size // 8))


class ArenaWriter:
    """Creates the segments, applies commits atomically and publishes each version.

    Use :meth:`create`. ``name`` is what a reader passes to ``ArenaReader.attach``.
    Settings (all given to :meth:`create`):

    * ``initial_size`` — bytes of the first generation (allocated up front; a full
      ``/dev/shm`` raises ``CapacityError`` naming it).
    * ``max_size`` — growth stops here; past it a commit raises ``CapacityError``
      naming ``max_size`` (after expiring every snapshot to make room).
    * ``reader_slots`` — how many readers can hold snapshots at once (an attach
      beyond it raises ``CapacityError`` naming ``reader_slots``).
    * ``grace`` — seconds a retired block waits before reuse (covers a reader whose
      pin is not yet visible). ``expiry`` — seconds after which a pinned snapshot is
      ignored by reclamation and raises ``SnapshotExpired`` in the reader.
    """

    name: str
    _closed: bool = True
    _forked: bool = False
    _pid: int = -1

    def __init__(self) -> None:
        raise TypeError("use ArenaWriter.create(...)")

    @classmethod
    def create(
        cls,
        base: str | None = None,
        *,
        initial_size: int = defaults.ARENA_SIZE,
        max_size: int = defaults.ARENA_MAX_SIZE,
        reader_slots: int = defaults.READER_SLOTS,
        grace: float = defaults.ARENA_GRACE,
        expiry: float = defaults.ARENA_EXPIRY,
        ring_size: int | None = None,
        codec: MsgpackCodec | None = None,
        _clock: Callable[[], float] = time.monotonic,
    ) -> ArenaWriter:
        """Create a fresh arena and publish version 0 (empty).

        ``base``: a directory to hold the files (mode 0700 recommended), or a name
        prefix for files in ``/dev/shm`` (default prefix ``"stateengine"``). On a
        system without ``/dev/shm`` (macOS) a private ``mkdtemp`` directory is used.
        Raises ``CapacityError`` (naming ``initial_size``) when the space is not there.
        """
        self = object.__new__(cls)
        self._init(
            base, initial_size, max_size, reader_slots, grace, expiry, ring_size, codec, _clock
        )
        _LIVE_WRITERS.add(self)
        return self

    def _init(
        self,
        base: str | None,
        initial_size: int,
        max_size: int,
        reader_slots: int,
        grace: float,
        expiry: float,
        ring_size: int | None,
        codec: MsgpackCodec | None,
        _clock: Callable[[], float],
    ) -> None:
        if reader_slots < 1 or reader_slots > 65536:
            raise ValueError("reader_slots must be in 1..65536")
        if initial_size < 64 * 1024:
            raise ValueError("initial_size must be at least 64 KiB")
        max_size = max(max_size, initial_size)
        self._codec = codec or MsgpackCodec()
        # the ids of a load's keys and the ring entries: msgspec's encoder, the same bytes
        # as the codec's internal_packer
        self._enc = record_encoder()
        # key prefix (codec.key_prefix) of each table name already checked by _check_table
        self._prefixes: dict[str, bytes] = {}
        self._meta_prefix = key_prefix(META_TABLE)
        self._clock = _clock
        self._grace = float(grace)
        self._expiry = float(expiry)
        self._max_size = max_size
        self._ring_size_setting = ring_size
        self._faults = frozenset(_faults.FAULTS)
        if "meta_by_seq" in self._faults:
            self._publish = self._publish_by_seq  # type: ignore[method-assign]
        self._pid = os.getpid()
        self._start = L.proc_start_time(self._pid) or 0

        prefix = "stateengine"
        directory: str | None
        if base is not None and ("/" in base or os.path.isdir(base)):
            directory = os.path.abspath(base)
        else:
            prefix = base or prefix
            directory = L.default_dir()
        self._own_dir: str | None = None
        if directory is None:
            directory = tempfile.mkdtemp(prefix=f"{prefix}-")
            self._own_dir = directory
        self.name = os.path.join(directory, f"{prefix}-{self._pid}-{secrets.token_hex(8)}")

        self._nslots = reader_slots
        self._ctl_fd = L.create_file(self.name, L.ctl_size(reader_slots), "reader_slots")
        self._ctl = L.map_fd(self._ctl_fd, L.ctl_size(reader_slots), writable=True)
        self._ctl[0 : L.CTL_HEADER.size] = L.CTL_HEADER.pack(
            L.CTL_MAGIC, L.LAYOUT_VERSION, reader_slots, self._pid, self._start
        )
        L.U64.pack_into(self._ctl, L.OFF_EXPIRY, int(self._expiry * 1e9))
        L.U64.pack_into(self._ctl, L.OFF_GRACE, int(self._grace * 1e9))
        self._pin_fmt = struct.Struct("<" + "16xQ40x" * reader_slots)
        self._closed = False

        self._seq = 0
        # The meta slot holding the newest publication: the next one goes to the other.
        self._meta_slot = 1
        self._horizon = 0
        self._tables: dict[str, dict[RecordId, Any]] = {}  # entries: _WEntry, or see _Cols
        # the compact index of each table load() placed (_Cols)
        self._loaded: dict[str, _Cols] = {}
        self._next_pos: dict[str, int] = {}
        # retire list: (retire_seq, time, extents, old generation or None)
        self._pending: collections.deque[tuple[int, float, list[tuple[int, int]], _Gen | None]]
        self._pending = collections.deque()
        self._pending_bytes = 0
        # When a commit next tries to reclaim (see ``_reclaim_from_commit``).
        self._reclaim_at = 0.0
        self._first_seen: dict[int, tuple[int, int, float]] = {}
        self._alive: dict[int, tuple[int, int, bool, float]] = {}
        self._gen: _Gen | None = None
        self._old_gens: list[_Gen] = []
        # the generation a start's load will grow into, made by reserve()'s thread
        self._spare: _Spare | None = None
        try:
            self._new_generation(1, initial_size, "initial_size")
            self._write_checkpoint_and_publish(0)
        except BaseException:
            self._teardown(unlink=True)
            raise

    # --- generations ---------------------------------------------------------------

    def _make_generation(self, gen: int, size: int, setting: str) -> _Gen:
        """A new generation file, allocated and mapped; the writer's state untouched."""
        size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        ring = _ring_size_for(size, self._ring_size_setting)
        if ring + L.GEN_HEADER_SIZE + 4096 > size:
            raise ValueError(f"generation of {size} bytes too small for a ring of {ring}")
        path = L.gen_path(self.name, gen)
        fd = L.create_file(path, size, setting)
        try:
            return _Gen(path, gen, size, ring, fd)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise

    def _new_generation(self, gen: int, size: int, setting: str) -> None:
        self._adopt(self._make_generation(gen, size, setting))

    def _adopt(self, g: _Gen) -> None:
        """Make *g* the current generation, empty."""
        self._gen = g
        self._alloc = Allocator(g.data_off, g.data_size)
        self._ring_head = 0
        self._ckpt: tuple[int, int, int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0, 0, 0)

    def _grow(self, need: int) -> None:
        """Move to a new, larger generation holding the live blocks, same seq."""
        old = self._gen
        assert old is not None
        cols_of = self._loaded
        live = sum(
            sum(map(_GET1, _blocks.extents(d, cols_of.get(t)))) for t, d in self._tables.items()
        )
        want = max(old.size * 2, (live + need) * 2 + old.ring_size + 65536)
        if want > self._max_size:
            want = self._max_size
        if want <= old.size or live + need + _ring_size_for(want, None) // 4 > want:
            raise CapacityError(
                f"arena full: {live} live bytes + {need} needed exceed max_size="
                f"{self._max_size}; raise max_size ({L.REMEDY['max_size']})"
            )
        spare = self._take_spare()
        if (
            spare is not None
            and spare.gen == old.gen + 1
            and (spare.size >= want or spare.data_size >= (live + need) * 5 // 4)
        ):  # what _grow would make, or room for the load and a quarter more
            self._adopt(spare)  # made and faulted in while the caller recovered
        else:
            if spare is not None:
                spare.close(unlink=True)
            self._new_generation(old.gen + 1, want, "max_size")
        g = self._gen
        assert g is not None
        omm, mm = old.mm, g.mm
        for t, tdict in self._tables.items():
            loaded = self._loaded.get(t)
            for rid, e in tdict.items():
                if type(e) is int:  # a loaded record: moved in its table's _Cols
                    assert loaded is not None
                    off, asize, *_ = _expand(loaded, e)
                    noff = self._alloc.alloc(asize)
                    assert noff is not None
                    mm[noff : noff + asize] = omm[off : off + asize]
                    c, d = loaded[0], noff - off
                    b = 5 * e
                    c[b], c[b + 1], c[b + 2] = noff, c[b + 1] + d, c[b + 2] + d
                    continue
                off, asize, pstart, pend, hcrc, crc, pos, ver = e
                noff = self._alloc.alloc(asize)
                assert noff is not None
                mm[noff : noff + asize] = omm[off : off + asize]
                d = noff - off
                tdict[rid] = (noff, asize, pstart + d, pend + d, hcrc, crc, pos, ver)
        # blocks retired in the old generation go with it
        self._pending = collections.deque((s, t, [], og) for (s, t, _e, og) in self._pending)
        self._pending_bytes = 0
        self._write_checkpoint_and_publish(self._seq)
        self._pending.append((self._seq + 1, self._clock(), [], old))

    def reserve(self, nbytes: int) -> None:
        """Make, on a thread of its own, the generation a :meth:`load` of about *nbytes*
        of stored records (a snapshot file's size) will grow into: its file allocated and
        every page faulted in, which the kernel does without the GIL, on another core,
        while the caller reads those records. The load takes it if big enough (else
        it is dropped and the load grows as without it); :meth:`drop_spare` or
        :meth:`close` discards an unused one. A failure (``/dev/shm`` full) only
        leaves the load to grow as without it, and raise what that raises.

        A server's start on 10⁶ records, this on and off (6 interleaved rounds, CPU
        from ``/proc`` at its first reply): main thread 2.21 -> 2.03 s, all threads 2.21
        -> 2.17 s; the publish's page faults 143k -> 99k. Its wall time gains only where
        a core is free for the thread (not shown on this 2-core machine under load).
        """
        self._check_usable()
        if self._tables or self._seq or self._spare is not None or self._gen is None:
            return  # only before the first load of a fresh arena
        # what _grow would make for a load of that much: the blocks' bytes, ~1.23x the
        # snapshot's for the bench's records (143 MB from 116 MB), then twice that
        need = nbytes * 5 // 4
        want = min(need * 2 + self._gen.ring_size + 65536, self._max_size)
        if want <= self._gen.size:
            return
        self._spare = _Spare(self, self._gen.gen + 1, want)

    def drop_spare(self) -> None:
        """Discard :meth:`reserve`'s generation if no load took it (waits for its thread)."""
        spare = self._take_spare()
        if spare is not None:
            spare.close(unlink=True)

    def _take_spare(self) -> _Gen | None:
        """The reserved generation, once made (None if none, or its making failed)."""
        spare, self._spare = self._spare, None
        return spare.result() if spare is not None else None

    # --- commit ----------------------------------------------------------------------

    def commit(
        self,
        seq: int,
        puts: Iterable[tuple[str, RecordId, bytes]] = (),
        deletes: Iterable[tuple[str, RecordId]] = (),
        dropped_tables: Iterable[str] = (),
        meta: Mapping[str, bytes | None] | None = None,
    ) -> None:
        """Apply every change atomically and publish version ``seq``.

        Order inside one commit: ``dropped_tables`` first (their records and meta go),
        then ``deletes`` (a missing record is ignored), then ``puts`` (``data`` is an
        encoded record; a later put of the same id wins), then ``meta`` (table →
        bytes, or None to remove). Raises ``ValueError``/``TypeError`` for a bad
        argument or a ``seq`` not above the last one, ``PayloadTooLarge`` for a record
        over the codec's ``max_record_size``, ``CapacityError`` when the arena cannot
        grow enough; in every error case nothing changed and nothing was published.
        """
        self._check_usable()
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= self._seq:
            raise ValueError(f"seq must be an int above {self._seq}, got {seq!r}")
        if seq > _I64_MAX:
            raise ValueError("seq outside the signed 64-bit range")
        prefixes = self._prefixes
        if len(prefixes) > 4096:
            prefixes.clear()
        # Validate every put and build its block here, once: the blocks do not depend on
        # where they go, so a retry after growth reuses them (compiled C or its Python
        # twin: shm/blocks.py).
        plist, need, estimate = _blocks.prepare(
            puts if type(puts) is list else list(puts), seq, prefixes, self._codec.max_record_size
        )
        estimate += 4096
        dlist = [(_check_table(t), check_id(rid)) for t, rid in deletes]
        drops = [_check_table(t) for t in dropped_tables]
        if meta:
            # A table's meta that did not change is not written again: the same bytes are
            # the same version of it for a reader, and most passes (a PATCH_RECORD) leave
            # the table's info as it was. Rewritten, it was a second block, allocation,
            # ring op and, later, free per one-record commit.
            gen = self._gen
            assert gen is not None
            mtab = self._tables.get(META_TABLE) or {}
            mm = gen.mm
            for t, blob in meta.items():
                _check_table(t)
                if blob is None:
                    dlist.append((META_TABLE, t))
                elif (e := mtab.get(t)) is not None and t not in drops and mm[e[2] : e[3]] == blob:
                    continue  # unchanged (dropped and re-created in this commit: rewritten)
                elif isinstance(blob, _BLOBS):
                    # prepare_one directly, the union type not built a call: 2.0 -> 0.6 µs
                    # with its C call (issue 17, timeit; every PATCH_RECORD's meta)
                    prepared = _blocks.prepare_one(
                        self._meta_prefix, META_TABLE, t, seq, bytes(blob)
                    )
                    plist.append(prepared)
                    need += len(prepared[2])
                    estimate += L.align(len(blob) + 64)
                else:
                    raise TypeError("meta values must be bytes or None")
        for t in drops:
            dlist.append((META_TABLE, t))
        forced = reclaimed = False
        for _attempt in range(8):
            try:
                self._apply(seq, plist, need, dlist, drops)
                return
            except _Full:
                if not reclaimed and self.reclaim() and self._alloc.free_bytes >= estimate * 2:
                    reclaimed = True
                    continue
                reclaimed = False
                try:
                    self._grow(estimate)
                except CapacityError:
                    if forced:
                        raise
                    forced = True
                    self.reclaim(force=True)  # expire every snapshot before giving up
        raise CapacityError(f"arena full; raise max_size={self._max_size} ({L.REMEDY['max_size']})")

    def load(
        self,
        seq: int,
        tables: Mapping[str, tuple[Sequence[RecordId], Sequence[Any]]],
        meta: Mapping[str, bytes] | None = None,
    ) -> None:
        """Publish the first version of an empty arena, a whole state at once (a start).

        *tables*: name → (ids, encoded records: ``bytes`` or ``msgspec.Raw``), in the
        tables' order, ids unique within a table; *meta*: name → the table's metadata
        bytes. The arena ends as ``commit(seq, puts=..., meta=meta)`` would leave it
        (the same blocks, index and positions; the version goes out as a checkpoint, as
        a commit that big does), but each step runs over many records at once
        (``shm/blocks.py``: one C call, or C-level ``map`` calls in its Python twin) with no
        per-record tuple but the index's: the twin of 10⁶ records of the bench's shape,
        gc paused, took 2.85 s of CPU through ``commit`` and 1.83 s here (medians of
        3); :meth:`_place` has the C loop's figures. Raises what
        :meth:`commit` raises, and ``ValueError`` on a non-empty arena or a repeated id;
        on any error nothing was published.
        """
        self._check_usable()
        if self._tables or self._seq:
            raise ValueError("load() publishes the first version of an empty arena only")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= _I64_MAX:
            raise ValueError(f"seq must be an int in 1..2**63-1, got {seq!r}")
        built: list[tuple[str, _Loaded]] = []
        need = 0
        for t, (ids, datas) in tables.items():
            if len(ids) != len(datas):
                raise ValueError(f"table {t!r}: {len(ids)} ids for {len(datas)} records")
            t = _check_table(t)
            if ids:
                # the caller's lists as they are (a start's publish builds them for the load):
                # the two copies of 10⁶ items were ~3k page faults and ~0.02 s of CPU
                part = self._load_blocks(
                    t,
                    ids if type(ids) is list else list(ids),
                    datas if type(datas) is list else list(datas),
                )
                built.append((t, part))
                need += part.size
        metas: list[_Prepared] = []
        for t, blob in (meta or {}).items():
            if not isinstance(blob, bytes | bytearray | memoryview):
                raise TypeError("meta values must be bytes")
            metas.append(self._prepare(META_TABLE, _check_table(t), seq, bytes(blob)))
            need += len(metas[-1][2])
        for _attempt in range(8):
            region = self._alloc.alloc(need) if need else 0
            if region is None:
                self._grow(need)
                continue
            try:
                self._place(seq, region, built, metas)
                self.drop_spare()  # a load that fitted without it
                return
            except BaseException as exc:
                self._tables, self._next_pos, self._loaded = {}, {}, {}
                if need:
                    self._alloc.free(region, need)
                if not isinstance(exc, _Full):
                    raise
                self._grow(need + exc.need)
        raise CapacityError(f"arena full; raise max_size={self._max_size} ({L.REMEDY['max_size']})")

    def _load_blocks(self, t: str, ids: list[RecordId], datas: list[Any]) -> _Loaded:
        """Check one table's records and measure their blocks (see :meth:`load`)."""
        prefix = key_prefix(t)
        got = _blocks.measure(ids, datas, len(prefix))
        if got is None:  # not all plain ids and bytes: check (raising) and convert
            ids = list(map(check_id, ids))
            for d in datas:
                if not isinstance(d, bytes | bytearray | memoryview | msgspec.Raw):
                    raise TypeError(f"record data must be bytes, not {type(d).__name__}")
            datas = [d if type(d) in ENCODED_TYPES else bytes(d) for d in datas]
            got = _blocks.measure(ids, datas, len(prefix))
            assert got is not None
        size, kmax, ki, dmax, di, aux = got
        if kmax > ARENA_KEY_BYTES:
            raise ValueError(f"record id too long: {ids[ki]!r}")
        limit = self._codec.max_record_size
        if dmax > limit:
            raise PayloadTooLarge(
                f"record {t!r}/{ids[di]!r} of {dmax} bytes exceeds max_record_size={limit}"
            )
        return _Loaded(ids, datas, prefix, size, aux)

    def _place(
        self, seq: int, region: int, built: list[tuple[str, _Loaded]], metas: list[_Prepared]
    ) -> None:
        """Build :meth:`load`'s blocks, write them from *region* on, index them,
        checkpoint, publish.

        Chunk by chunk (``_LOAD_CHUNK`` records, ``blocks.place``): the C loop writes each
        block straight into the mapping and each checkpoint row straight into its bytes;
        the Python twin joins a chunk's blocks and rows first, in memory the next chunk
        reuses (built for a whole table, they took fresh pages: 256k page faults a start,
        176k by chunks). A start's publish of 10⁶ records, CPU: 1.67 s before the C loop,
        0.68 s with it, 1.65 s on the twin (medians of 5 interleaved starts,
        ``python -m bench.restartcpu``); the index kept compact (:data:`_Cols`), 0.28 s
        (38k page faults: its dict, positions and array, the checkpoint's rows).
        """
        gen = self._gen
        assert gen is not None
        mm = gen.mm
        off = region
        place = _blocks.place
        ckpt = [_array_header(len(built) + bool(metas))]  # the checkpoint's encoding
        for t, part in built:
            n = len(part.ids)
            tdict: dict[RecordId, Any] = {}
            self._tables[t] = tdict
            cols = array.array("q", [0]) * (5 * n)
            self._loaded[t] = (cols, seq)
            ckpt += [_array_header(2), pack_internal(t), _array_header(n)]  # [t, [rows...]]
            for i in range(0, n, _LOAD_CHUNK):
                # its blocks written, indexed, and its checkpoint rows (the rows alone)
                off, rows = place(
                    mm,
                    off,
                    seq,
                    part.prefix,
                    part.ids,
                    part.datas,
                    i,
                    min(i + _LOAD_CHUNK, n),
                    tdict,
                    cols,
                    part.aux,
                )
                ckpt.append(rows)
            if len(tdict) != n:
                raise ValueError(f"table {t!r}: repeated record ids")
            self._next_pos[t] = n
        if metas:
            mtab: dict[RecordId, _WEntry] = {}
            self._tables[META_TABLE] = mtab
            for pos, (_t, rid, block, klen, dlen, hcrc, crc) in enumerate(metas):
                asize = len(block)
                mm[off : off + asize] = block
                pstart = off + L.BLOCK_HEADER_SIZE + klen
                mtab[rid] = (off, asize, pstart, pstart + dlen, hcrc, crc, pos, seq)
                off += asize
            self._next_pos[META_TABLE] = len(metas)
            ckpt.append(pack_internal([META_TABLE, _checkpoint_rows(mtab)]))
        self._append_ring(seq, None, [], ckpt)
        self._publish(seq)

    def _prepare(self, table: str, rid: RecordId, version: int, data: bytes) -> _Prepared:
        """One put ready to write, of any table, :data:`META_TABLE` included (no size
        limit: a table's metadata)."""
        prefix = self._meta_prefix if table == META_TABLE else key_prefix(table)
        return _blocks.prepare_one(prefix, table, rid, version, data)

    def _apply(
        self,
        seq: int,
        puts: list[_Prepared],
        need: int,
        deletes: list[tuple[str, RecordId]],
        drops: list[str],
    ) -> None:
        """Apply one commit; ``need``: the total length of the blocks of ``puts``."""
        gen = self._gen
        assert gen is not None
        mm = gen.mm
        tables = self._tables
        loaded = self._loaded
        alloc = self._alloc
        if need > alloc.free_bytes:
            raise _Full(need)  # cannot fit: grow before doing any of the work
        if len(puts) >= _BULK_MIN and self._apply_bulk(seq, puts, need, deletes, drops):
            return
        early = "publish_early" in self._faults
        new: list[tuple[int, int]] = []
        deferred: list[tuple[int, bytes]] = []
        undo: list[tuple[str, RecordId | None, Any]] = []
        retired: list[tuple[int, int]] = []
        # The ring entry is built only if it can fit in the ring (a put op packs to at
        # least 10 bytes); otherwise the commit goes out as a checkpoint anyway.
        ops: list[list[Any]] | None = None
        if len(puts) < _BULK_MIN:
            if L.RING_HEADER_SIZE + 10 * len(puts) <= gen.ring_size // 2:
                ops = []
        else:
            # Lower bounds of a put op's and a checkpoint row's encoding: offsets are at
            # least data_off, each other field a byte (ring op: [2, t, rid, pstart, pend,
            # hcrc, crc, pos, off]; row: [rid, pstart, pend, hcrc, crc, pos, off]).
            ob = 1 if gen.data_off < 128 else 3 if gen.data_off < 65536 else 5
            entry = L.RING_HEADER_SIZE + (7 + 3 * ob) * len(puts)
            if entry <= gen.ring_size // 2 and (
                self._ring_head + entry - self._ckpt[3] <= gen.ring_size
            ):
                ops = []  # else it cannot fit (before the checkpoint): a checkpoint instead
            if ops is None:
                # When even a lower bound of the checkpoint that follows does not fit,
                # say so now, not after indexing and writing every put (a first SET_STATE
                # of 10^5 records into a fresh arena did all of it twice).
                rows = sum(map(len, tables.values())) - len(deletes)
                rows -= sum(len(tables.get(t, ())) for t in drops)
                rows = max(rows, len(set(map(_GET1, puts))))  # these are there after it
                low = need + rows * (5 + 3 * ob)
                if low > alloc.free_bytes:
                    raise _Full(low)
        next_pos = dict(self._next_pos)
        try:
            # Many puts: one free extent for all their blocks, carved in order (still
            # only free space: §4). A fragmented arena falls back to one extent each.
            region = alloc.alloc(need) if len(puts) >= _BULK_MIN else None
            if region is not None:
                new.append((region, need))
            self._take_out(drops, deletes, undo, retired, ops)
            off = region if region is not None else 0
            created: set[str] = set()
            hsize = L.BLOCK_HEADER_SIZE
            last_t: str | None = None
            tdict: dict[RecordId, Any] = {}
            fresh = False  # tdict created by this commit: undoing its creation undoes all
            for t, rid, block, klen, dlen, hcrc, crc in puts:
                asize = len(block)
                if region is None:
                    got = alloc.alloc(asize)
                    if got is None:
                        raise _Full(asize)
                    off = got
                    new.append((off, asize))
                    if early:
                        deferred.append((off, block))
                    else:
                        mm[off : off + asize] = block
                pstart = off + hsize + klen
                pend = pstart + dlen
                if t is not last_t:
                    found = tables.get(t)
                    fresh = found is None or t in created
                    if found is None:
                        found = tables[t] = {}
                        undo.append((t, None, None))
                        created.add(t)
                    tdict = found
                    last_t = t
                old = tdict.get(rid)
                if old is None:
                    pos = next_pos.get(t, 0)
                    next_pos[t] = pos + 1
                elif type(old) is int:  # a loaded record (_Cols): its pos, and its extent
                    # (this check: no change in a 1-put commit, 6.0-6.2 µs either way, on
                    # a loaded arena; /tmp bench, best of 5, interleaved with main)
                    pos = old
                    c = loaded[t][0]
                    retired.append((c[5 * pos], _expand(loaded[t], pos)[1]))
                else:
                    pos = old[6]
                    retired.append((old[0], old[1]))
                tdict[rid] = (off, asize, pstart, pend, hcrc, crc, pos, seq)
                if not fresh:
                    undo.append((t, rid, old))
                if ops is not None:
                    ops.append([2, t, rid, pstart, pend, hcrc, crc, pos, off])
                if region is not None:
                    off += asize
            if region is not None:
                self._write_region(mm, region, puts, deferred if early else None)
            self._append_ring(seq, ops, new)
        except BaseException:
            self._undo(undo)
            for off, n in new:
                alloc.free(off, n)
            raise
        self._finish(seq, next_pos, drops, deferred if early else None, retired)

    def _apply_bulk(
        self,
        seq: int,
        puts: list[_Prepared],
        need: int,
        deletes: list[tuple[str, RecordId]],
        drops: list[str],
    ) -> bool:
        """:meth:`_apply` of a big commit whose blocks fit in one free extent: the per-put
        work (blocks written, indexed, undo, retired extents, ring ops in msgpack) in one
        ``blocks.commit_puts`` call (C, or its Python twin). False, with nothing changed,
        when no free extent holds them all (:meth:`_apply`'s loop allocates one by one).

        Thread CPU per put of a whole ``commit()`` (gc off, one process, medians of 3
        interleaved runs against the Python loop, load ~4): a SET_STATE's shape (the
        table dropped, 10⁴ puts) 1.18 -> 0.62 µs, 10⁵ puts (a checkpoint) 1.37 -> 0.90,
        1000 puts over existing ids 0.83 -> 0.50, 100 puts 0.90 -> 0.61; the pure-Python
        twin 2.07 -> 1.76 and 1.80 -> 1.56 (10⁴ and 1000).
        """
        gen = self._gen
        assert gen is not None
        tables = self._tables
        loaded = self._loaded
        alloc = self._alloc
        # The ring entry is built only if it can fit before the checkpoint: lower bounds
        # of a put op's and a checkpoint row's encoding: offsets are at least data_off,
        # each other field a byte (ring op: [2, t, rid, pstart, pend, hcrc, crc, pos,
        # off]; row: [rid, pstart, pend, hcrc, crc, pos, off]).
        ob = 1 if gen.data_off < 128 else 3 if gen.data_off < 65536 else 5
        entry = L.RING_HEADER_SIZE + (7 + 3 * ob) * len(puts)
        pre: list[list[Any]] | None = None
        if entry <= gen.ring_size // 2 and self._ring_head + entry - self._ckpt[3] <= gen.ring_size:
            pre = []
        else:
            # When even a lower bound of the checkpoint that follows does not fit, say so
            # now, not after indexing and writing every put (a first SET_STATE of 10^5
            # records into a fresh arena did all of it twice).
            rows = sum(map(len, tables.values())) - len(deletes)
            rows -= sum(len(tables.get(t, ())) for t in drops)
            rows = max(rows, len(set(map(_GET1, puts))))  # these are there after it
            low = need + rows * (5 + 3 * ob)
            if low > alloc.free_bytes:
                raise _Full(low)
        region = alloc.alloc(need)
        if region is None:
            return False
        early = "publish_early" in self._faults
        new: list[tuple[int, int]] = [(region, need)]
        undo: list[tuple[str, RecordId | None, Any]] = []
        retired: list[tuple[int, int]] = []
        parts: list[bytes] | None = None if pre is None else []
        next_pos = dict(self._next_pos)
        try:
            self._take_out(drops, deletes, undo, retired, pre)
            _blocks.commit_puts(
                None if early else gen.mm,
                region,
                seq,
                puts,
                tables,
                next_pos,
                set(),
                undo,
                retired,
                parts,
                loaded,
            )
            deferred: list[tuple[int, bytes]] = []
            if early:
                self._write_region(gen.mm, region, puts, deferred)
            ops: msgspec.Raw | None = None
            if pre is not None and parts is not None:
                # the entry's msgpack, the put ops already encoded: [*pre, *puts' ops]
                body = self._enc(pre)[len(_array_header(len(pre))) :] if pre else b""
                ops = msgspec.Raw(_array_header(len(pre) + len(puts)) + body + b"".join(parts))
            self._append_ring(seq, ops, new)
        except BaseException:
            self._undo(undo)
            for off, n in new:
                alloc.free(off, n)
            raise
        self._finish(seq, next_pos, drops, deferred if early else None, retired)
        return True

    def _take_out(
        self,
        drops: list[str],
        deletes: list[tuple[str, RecordId]],
        undo: list[tuple[str, RecordId | None, Any]],
        retired: list[tuple[int, int]],
        ops: list[list[Any]] | None,
    ) -> None:
        """A commit's first steps, the dropped tables and the deleted records out of the
        index: their undo entries, their extents to retire and (*ops* not None) their
        ring ops."""
        tables, loaded = self._tables, self._loaded
        for t in drops:
            old_t = tables.pop(t, None)
            if old_t is not None:
                undo.append((t, None, old_t))
                # its blocks as runs (blocks.runs): one extent to free for a table a big
                # commit wrote, not one a record
                retired += _blocks.runs(list(_blocks.extents(old_t, loaded.get(t))))
                if ops is not None:
                    ops.append([0, t])
        for t, rid in deletes:
            tdict = tables.get(t)
            if tdict is None:
                continue
            old = tdict.pop(rid, None)
            if old is None:
                continue
            undo.append((t, rid, old))
            if type(old) is int:  # a loaded record (_Cols)
                old = _expand(loaded[t], old)
            retired.append((old[0], old[1]))
            if ops is not None:
                ops.append([1, t, rid])

    def _finish(
        self,
        seq: int,
        next_pos: dict[str, int],
        drops: list[str],
        deferred: list[tuple[int, bytes]] | None,
        retired: list[tuple[int, int]],
    ) -> None:
        """A commit's last steps once its index and ring entry stand: publish (the meta
        slot, then the seq word; under ``publish_early`` the *deferred* block copies
        after it), then retire the replaced extents and reclaim when due."""
        self._next_pos = next_pos
        for t in drops:
            self._loaded.pop(t, None)  # its records went with the table
        if deferred is not None:
            self._publish(seq)
            time.sleep(0.02)  # widen the window the fault opens
            gen = self._gen
            assert gen is not None
            for off, block in deferred:
                gen.mm[off : off + len(block)] = block
        else:
            self._publish(seq)
        if retired or self._pending:
            now = self._clock()
            if retired:
                self._pending.append((seq, now, retired, None))
                self._pending_bytes += sum(map(_GET1, retired))
            if now >= self._reclaim_at:
                self.reclaim()

    def _undo(self, undo: list[tuple[str, RecordId | None, Any]]) -> None:
        """Roll the index back over *undo* (newest first): ``(t, None, old table or None)``
        a dropped or created table, ``(t, id, old entry or None)`` a record."""
        tables = self._tables
        for t, rid, old in reversed(undo):
            if rid is None:
                if old is None:
                    tables.pop(t, None)
                else:
                    tables[t] = old
            else:
                tdict = tables.setdefault(t, {})
                if old is None:
                    tdict.pop(rid, None)
                else:
                    tdict[rid] = old

    @staticmethod
    def _write_region(
        mm: mmap.mmap, off: int, puts: list[_Prepared], deferred: list[tuple[int, bytes]] | None
    ) -> None:
        """Write the blocks of ``puts`` back to back from ``off``, about 1 MiB per copy
        (or, under ``publish_early``, queue the copies for after the publish)."""
        chunk: list[bytes] = []
        size = 0
        for p in puts:
            chunk.append(p[2])
            size += len(p[2])
            if size >= _WRITE_CHUNK:
                data = b"".join(chunk)
                if deferred is None:
                    mm[off : off + size] = data
                else:
                    deferred.append((off, data))
                off += size
                chunk.clear()
                size = 0
        if chunk:
            data = b"".join(chunk)
            if deferred is None:
                mm[off : off + size] = data
            else:
                deferred.append((off, data))

    # --- ring and checkpoints ------------------------------------------------------------

    def _append_ring(
        self,
        seq: int,
        ops: list[list[Any]] | msgspec.Raw | None,
        new: list[tuple[int, int]],
        ckpt: list[bytes] | None = None,
    ) -> None:
        """Append the commit's entry (*ops*: its ops, or their msgpack as a ``Raw``);
        ``ops`` None: known too big, go to a checkpoint
        (*ckpt*: its encoding, when the caller has it: :meth:`_write_checkpoint`)."""
        gen = self._gen
        assert gen is not None
        size = gen.ring_size
        head = self._ring_head
        phys = head % size
        if ops is not None:
            # msgspec's reused encoder (the same bytes: codec.record_encoder): 0.22 µs for
            # a one-put entry where the reused msgpack Packer took 0.79 (python -m timeit)
            payload = self._enc(ops)
            k = len(payload)
            n = (L.RING_HEADER_SIZE + k + 7) & -8  # L.align
            if phys + n <= size:  # the common case, :meth:`_ring_write` inlined
                if n <= size // 2 and head + n - self._ckpt[3] <= size:
                    prev = self._seq
                    crc = zlib.crc32(payload, zlib.crc32(_RING_LEN(k, seq, prev)))
                    p = gen.ring_off + phys
                    gen.mm[p : p + L.RING_HEADER_SIZE + k] = (
                        _RING_HEADER(k, crc, seq, prev) + payload
                    )
                    self._ring_head = head + n
                    return
            else:
                waste = size - phys
                if n <= size // 2 and head + waste + n - self._ckpt[3] <= size:
                    self._ring_write(seq, payload, head, waste)
                    self._ring_head = head + waste + n
                    return
        # too big, or would overrun the checkpoint: a checkpoint of the state after this
        # commit (written first, so a full arena leaves the ring untouched), then a
        # marker entry telling readers to rebuild from it.
        marker = pack_internal(None)
        n = L.align(L.RING_HEADER_SIZE + len(marker))
        waste = size - phys if phys + n > size else 0
        self._write_checkpoint(seq, new, ringpos=head + waste + n, ckpt=ckpt)
        self._ring_write(seq, marker, head, waste)
        self._ring_head = head + waste + n

    def _ring_write(self, seq: int, payload: bytes, head: int, waste: int) -> None:
        gen = self._gen
        assert gen is not None
        mm, base, size = gen.mm, gen.ring_off, gen.ring_size
        if waste:
            if waste >= L.RING_HEADER_SIZE:  # a wrap marker; less than a header wraps implicitly
                p = base + head % size
                prev = self._seq
                mm[p : p + L.RING_HEADER_SIZE] = L.RING_HEADER.pack(
                    0, L.ring_crc(0, seq, prev, b""), seq, prev
                )
            head += waste
        p = base + head % size
        n, prev = len(payload), self._seq
        crc = zlib.crc32(payload, zlib.crc32(_RING_LEN(n, seq, prev)))  # L.ring_crc, inline
        mm[p : p + L.RING_HEADER_SIZE + n] = _RING_HEADER(n, crc, seq, prev) + payload

    def _write_checkpoint(
        self,
        seq: int,
        new: list[tuple[int, int]],
        ringpos: int,
        ckpt: list[bytes] | None = None,
    ) -> None:
        """Write the full index as of ``seq`` into a block; retire the previous one.

        *ckpt*: the index's encoding in pieces, as this would encode it (:meth:`_place`
        encodes it chunk by chunk); None: encoded from the index. The pieces go into the
        block one by one, never joined (a start's checkpoint of 10⁶ records is ~40 MB).
        """
        gen = self._gen
        assert gen is not None
        if ckpt is None:
            # the index's encoding, each table's rows written from its entries (blocks.rows)
            loaded = self._loaded
            ckpt = [_array_header(len(self._tables))]
            for t, d in self._tables.items():
                ckpt += [_array_header(2), pack_internal(t), _array_header(len(d))]
                ckpt.append(_blocks.rows(d, loaded.get(t)))
        key = pack_internal(["\x00ckpt", seq])
        dlen = sum(map(len, ckpt))
        total = L.BLOCK_HEADER_SIZE + len(key) + dlen + 4
        head = L.BLOCK_HEADER.pack(total, len(key), L.KIND_CHECKPOINT, seq) + key
        asize = L.align(total)
        off = self._alloc.alloc(asize)
        if off is None:
            raise _Full(asize)
        new.append((off, asize))
        mm = gen.mm
        hcrc = crc = zlib.crc32(head)
        mm[off : off + len(head)] = head
        pstart = pos = off + len(head)
        for piece in ckpt:
            mm[pos : pos + len(piece)] = piece
            pos += len(piece)
            crc = zlib.crc32(piece, crc)
        pend = pos
        mm[pend : pend + 4] = L.CRC.pack(crc)
        old = self._ckpt
        self._ckpt = (pstart, pend, seq, ringpos, hcrc, crc, off, asize)
        if old[7]:
            self._pending.append((seq, self._clock(), [(old[6], old[7])], None))
            self._pending_bytes += old[7]

    def _write_checkpoint_and_publish(self, seq: int) -> None:
        self._write_checkpoint(seq, [], ringpos=self._ring_head)
        self._publish(seq)

    def _publish(self, seq: int) -> None:
        """The meta slot (what ``L.meta_pack`` builds, packed in place), then the seq word.

        The slots alternate per publication, never by ``seq``'s parity: a pass's seq
        jumps by its number of writes, and a growth republishes the same seq. Written
        by parity, a publication could overwrite the newest one, and a reader that met
        the slot half-written took the other, older one: a read after an acknowledged
        write returned the version before it (test_shm_meta.py).
        """
        gen = self._gen
        assert gen is not None
        c, ctl = self._ckpt, self._ctl
        body = _META_BODY(seq, gen.gen, self._ring_head, c[0], c[1], c[2], c[3], c[4], c[5])
        slot = self._meta_slot = self._meta_slot ^ 1
        off = L.OFF_META[slot]
        ctl[off : off + _META_BODY_SIZE] = body
        _META_CRC_INTO(ctl, off + _META_BODY_SIZE, zlib.crc32(body), 0)
        _U64_INTO(ctl, L.OFF_SEQ, seq)
        self._seq = seq

    def _publish_by_seq(self, seq: int) -> None:
        """``meta_by_seq`` (a test's switch): the slot of ``seq & 1``, as before the fix."""
        self._meta_slot = (seq & 1) ^ 1
        ArenaWriter._publish(self, seq)

    # --- reclamation -------------------------------------------------------------------

    def _min_pin(self, now: float) -> int | None:
        """Oldest version pinned by a live reader whose snapshot has not expired."""
        pins = self._pin_fmt.unpack_from(self._ctl, L.OFF_SLOTS)
        distinct = set(pins)
        distinct.discard(0)
        if not distinct:
            self._first_seen.clear()
            return None
        best: int | None = None
        for i, p in enumerate(pins):
            if p == 0 or (best is not None and p - 1 >= best):
                continue
            so = L.OFF_SLOTS + i * L.SLOT_SIZE
            pid, start, pin, nonce = L.SLOT.unpack_from(self._ctl, so)
            if pin == 0:
                continue
            seen = self._first_seen.get(i)
            if seen is None or seen[0] != pin or seen[1] != nonce:
                seen = (pin, nonce, now)
                self._first_seen[i] = seen
            if now - seen[2] > self._expiry:
                continue  # expired: the reader gets SnapshotExpired
            pin -= 1  # stored as version + 1
            cached = self._alive.get(i)
            if cached is None or cached[0] != pid or cached[1] != start or now - cached[3] > 0.2:
                cached = (pid, start, L.process_alive(pid, start), now)
                self._alive[i] = cached
            if not cached[2]:
                continue  # owner died: its pin no longer counts
            best = pin
        return best

    def reclaim(self, force: bool = False) -> int:
        """Free retired space no live, unexpired reader can still see; return bytes freed.

        Called by commits (at most every ``grace / 4`` s, see below) and whenever a commit
        finds no room; the server also calls it from a timer so that a dead or expired
        reader's space comes back without writes. ``force`` ignores pins and grace
        (snapshots then expire: readers get ``SnapshotExpired``).

        Why commits do not reclaim every time: once the first retired batch is past its
        grace, every commit of a steady stream found one more to free, and paid the intent
        stores, the scan of every reader slot and the bookkeeping for it (issue 17: the
        pacing and the reused ring packer took a one-record commit from 25.7 to 24.1 µs of
        CPU, ``python -m bench.writepath``). Waiting ``grace / 4``
        between tries frees the same bytes in larger batches; what it keeps retired longer
        is bounded by the write rate times ``grace / 4`` (and a commit that does not fit
        reclaims at once).
        """
        self._check_usable()
        pending = self._pending
        if not pending:
            return 0
        now = self._clock()
        unsafe = force or "reclaim_unsafe" in self._faults
        grace = 0.0 if unsafe else self._grace
        # the next commit-driven try: when the oldest batch is past grace, and not sooner
        # than grace / 4 from now (0 under grace 0: every commit, as before)
        self._reclaim_at = max(pending[0][1] + grace, now + grace / 4)
        if now - pending[0][1] < grace:
            return 0
        # Announce the highest version we may free *before* scanning the pins: a
        # reader that pins after our scan then sees the intent and retries.
        intent = self._horizon
        for w, t, _e, _g in pending:
            if now - t < grace:
                break
            intent = max(intent, w)
        L.U64.pack_into(self._ctl, L.OFF_INTENT, intent)
        limit = None if unsafe else self._min_pin(now)
        # The batches past grace and pins go back in one free_many: ~150 one-block
        # batches of a steady stream of one-record commits were ~150 calls, each one
        # Python-level free; sorted together, blocks written back to back merge first.
        extents: list[tuple[int, int]] = []
        old_gens: list[_Gen] = []
        horizon = self._horizon
        while pending:
            w, t, batch, old_gen = pending[0]
            if (limit is not None and w > limit) or now - t < grace:
                break
            pending.popleft()
            horizon = max(horizon, w)
            extents += batch
            if old_gen is not None:
                old_gens.append(old_gen)
        if horizon > self._horizon:
            self._horizon = horizon
            L.U64.pack_into(self._ctl, L.OFF_HORIZON, horizon)  # before any reuse
        freed = self._alloc.free_many(extents) if extents else 0
        for old_gen in old_gens:
            old_gen.close(unlink=True)
        L.U64.pack_into(self._ctl, L.OFF_INTENT, self._horizon)  # back down if pins held
        self._pending_bytes -= freed
        return freed

    # --- introspection and lifecycle ---------------------------------------------------

    @property
    def seq(self) -> int:
        """The last published version."""
        return self._seq

    def stats(self) -> dict[str, Any]:
        """Sizes, generation, free/live/retired bytes, reader slots and the oldest pin."""
        self._check_usable()
        gen = self._gen
        assert gen is not None
        used = 0
        for i in range(self._nslots):
            if L.SLOT.unpack_from(self._ctl, L.OFF_SLOTS + i * L.SLOT_SIZE)[0]:
                used += 1
        return {
            "name": self.name,
            "seq": self._seq,
            "generation": gen.gen,
            "size": gen.size,
            "data_size": gen.data_size,
            "ring_size": gen.ring_size,
            "free_bytes": self._alloc.free_bytes,
            "largest_free": self._alloc.largest(),
            "retired_bytes": self._pending_bytes,
            "retired_batches": len(self._pending),
            "live_records": sum(len(t) for t in self._tables.values()),
            "max_size": self._max_size,
            "reader_slots": self._nslots,
            "reader_slots_used": used,
            "oldest_pinned": self._min_pin(self._clock()),
            "horizon": self._horizon,
            "files": self.files(),
        }

    def files(self) -> list[str]:
        """Paths of every file this arena holds now (control, current and old generations)."""
        out = [self.name]
        if self._gen is not None:
            out.append(self._gen.path)
        out.extend(g.path for (_s, _t, _e, g) in self._pending if g is not None)
        return out

    def _check_usable(self) -> None:
        if self._forked or (not _AT_FORK and self._pid != os.getpid()):
            raise RuntimeError("an ArenaWriter cannot be used in a forked child")
        if self._closed:
            raise ValueError("ArenaWriter is closed")

    def close(self, unlink: bool = True) -> None:
        """Close the mappings; with ``unlink`` (default) remove every file.

        Idempotent. In a forked child it only drops the child's mappings (never
        unlinks). ``unlink=False`` leaves the last version readable for readers
        still attached (e.g. a crash-like handoff); ``cleanup_stale`` removes it later.
        """
        if self._closed:
            return
        if self._forked or self._pid != os.getpid():
            unlink = False
        elif unlink:
            with contextlib.suppress(ValueError):
                L.U64.pack_into(self._ctl, L.OFF_CLOSED, 1)
        self._teardown(unlink)

    def _teardown(self, unlink: bool) -> None:
        self._closed = True
        gens: list[_Gen] = [g for (_s, _t, _e, g) in getattr(self, "_pending", ()) if g]
        made = self._take_spare() if getattr(self, "_spare", None) is not None else None
        if made is not None:
            gens.append(made)
        if getattr(self, "_gen", None) is not None:
            assert self._gen is not None
            gens.append(self._gen)
        for g in gens:
            g.close(unlink)
        ctl = getattr(self, "_ctl", None)
        if ctl is not None:
            with contextlib.suppress(BufferError, ValueError):
                ctl.close()
        fd = getattr(self, "_ctl_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if unlink and getattr(self, "name", None):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name)
            if self._own_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(self._own_dir)

    def __enter__(self) -> ArenaWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed and not self._forked and self._pid == os.getpid():
            warnings.warn(f"unclosed ArenaWriter {self.name!r}", ResourceWarning, stacklevel=2)
            if not sys.is_finalizing():
                self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"seq={self._seq}"
        return f"<ArenaWriter {getattr(self, 'name', '?')!r} {state}>"
