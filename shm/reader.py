"""The reader side of the arena: any process attaches by name and reads lock-free.

An :class:`ArenaReader` is for one thread (give each thread its own; they are
cheap). It takes no lock on the read path and writes only its own reader slot.
After ``fork`` the child's copy keeps working (the mappings are shared), but it
owns no slot until its first :meth:`ArenaReader.snapshot`, and snapshots opened
before the fork must not be used in the child. Closing never unlinks anything.

Every returned record was validated (DESIGN.md §5): the copied bytes hash, seeded
with the CRC of the block header the index named (table, id, version, length), to
the CRC the index recorded. A failure is retried (plain reads) or reported as
:class:`~stateengine.errors.SnapshotExpired` (snapshots), never returned.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import sys
import time
import warnings
import weakref
import zlib
from collections.abc import Iterator
from typing import Any, Final

import msgpack

from stateengine.errors import CapacityError, SnapshotExpired
from stateengine.shm import blocks, locks
from stateengine.shm import faults as _faults
from stateengine.shm import layout as L
from stateengine.shm.codec import MsgpackCodec, unpack_internal

__all__ = [
    "META_TABLE",
    "RETRIES",
    "ArenaReader",
    "Entry",
    "Index",
    "RecordId",
    "Snapshot",
]


META_TABLE: Final = "\x00meta"
RETRIES: Final = 8

RecordId = int | str
# reader index entry: pstart, pend, hcrc, crc, pos, off
Entry = tuple[int, int, int, int, int, int]
Index = dict[str, dict[RecordId, Entry]]

_uq = L.U64.unpack_from
_crc32 = zlib.crc32
_unpackb = msgpack.unpackb
_monotonic = time.monotonic
_STALE: Final = blocks.STALE


def _decode_default(raw: bytes) -> Any:
    """What the default codec's ``decode`` does, minus its partial's keyword merging.

    ``functools.partial(unpackb, strict_map_key=False)`` copies its keywords into a new
    dict and calls through ``tp_call`` on every call (~0.2 µs on a 1 µs decode); a plain
    call passes the keyword by vectorcall. :meth:`ArenaReader.get` inlines the same call.
    """
    return _unpackb(raw, strict_map_key=False)


def _is_default_decode(decode: Any) -> bool:
    return (
        isinstance(decode, functools.partial)
        and decode.func is _unpackb
        and not decode.args
        and decode.keywords == {"strict_map_key": False}
    )


_LIVE_READERS: weakref.WeakSet[ArenaReader] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for r in list(_LIVE_READERS):
        r._slot = None  # the parent's slot stays the parent's
        r._pid = os.getpid()
        r._pins.clear()
        r._open.clear()
        r._live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _GenMap:
    """A read-only mapping of one generation file."""

    __slots__ = ("data_off", "gen", "mm", "ring_off", "ring_size", "size")

    def __init__(self, mm: mmap.mmap, gen: int) -> None:
        magic, g, size, ring_off, ring_size, data_off, _dsize, _r = L.GEN_HEADER.unpack_from(mm, 0)
        if magic != L.GEN_MAGIC or g != gen or size != len(mm):
            raise ValueError("not a generation file")
        self.mm = mm
        self.gen = gen
        self.size = size
        self.ring_off = ring_off
        self.ring_size = ring_size
        self.data_off = data_off


def _open_gen(name: str, gen: int) -> _GenMap | None:
    try:
        fd = os.open(L.gen_path(name, gen), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None  # already retired: the caller re-reads the meta
    try:
        size = os.fstat(fd).st_size
        if size < L.GEN_HEADER_SIZE:
            return None
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        return _GenMap(mm, gen)
    except ValueError:
        mm.close()
        return None


def _replay(
    g: _GenMap,
    idx: Index,
    seq: int,
    pos: int,
    head: int,
    overlays: list[dict[str, dict[RecordId, Entry | None]]],
) -> tuple[int, int, bool]:
    """Apply validated ring entries after ``seq`` from ``pos`` up to ``head``.

    Each entry is applied whole or not at all. Returns ``(seq, pos, ok)``; ``ok`` is
    False when an entry was overwritten, torn, or says "use the checkpoint".
    Before an entry changes ``idx``, the old value is saved into every overlay that
    does not have that id yet (open snapshots keep seeing their version).
    """
    mm, base, size = g.mm, g.ring_off, g.ring_size
    hdr_size = L.RING_HEADER_SIZE
    while pos < head:
        phys = pos % size
        if size - phys < hdr_size:
            pos += size - phys
            continue
        p = base + phys
        ln, crc, s, prev = L.RING_HEADER.unpack(mm[p : p + hdr_size])
        if prev != seq or s <= seq or ln > size - phys - hdr_size:
            return seq, pos, False
        if ln == 0:  # wrap marker
            if L.ring_crc(0, s, prev, b"") != crc:
                return seq, pos, False
            pos += size - phys
            continue
        payload = mm[p + hdr_size : p + hdr_size + ln]
        if L.ring_crc(ln, s, prev, payload) != crc:
            return seq, pos, False
        ops = unpack_internal(payload)
        if ops is None:
            return seq, pos, False  # a checkpoint entry: rebuild
        for op in ops:
            kind = op[0]
            table = op[1]
            if kind == 2:
                rid = op[2]
                tdict = idx.get(table)
                if tdict is None:
                    tdict = idx[table] = {}
                new: Entry = (op[3], op[4], op[5], op[6], op[7], op[8])
                if overlays:
                    old = tdict.get(rid)
                    for ov in overlays:
                        ov.setdefault(table, {}).setdefault(rid, old)
                tdict[rid] = new
            elif kind == 1:
                rid = op[2]
                tdict = idx.get(table)
                if tdict is not None:
                    old = tdict.pop(rid, None)
                    if overlays:
                        for ov in overlays:
                            ov.setdefault(table, {}).setdefault(rid, old)
            else:
                old_t = idx.pop(table, None)
                if overlays and old_t:
                    for ov in overlays:
                        tov = ov.setdefault(table, {})
                        for rid, e in old_t.items():
                            tov.setdefault(rid, e)
        seq = s
        pos += L.align(hdr_size + ln)
    return seq, pos, True


class ArenaReader(blocks.ReaderCore):
    """Reads records published by an :class:`ArenaWriter`, from any process.

    Use :meth:`attach`. Plain :meth:`get` pins nothing: it validates and, if the
    writer reused the block meanwhile, re-syncs and retries (at most 8 times, then
    ``SnapshotExpired``). :meth:`snapshot` pins one version for several reads.
    """

    _closed: bool = True
    _pid: int = -1
    _slot: int | None = None

    def __init__(self) -> None:
        raise TypeError("use ArenaReader.attach(name)")

    @classmethod
    def attach(
        cls, name: str, *, codec: MsgpackCodec | None = None, cache_size: int = 65536
    ) -> ArenaReader:
        """Map the arena ``name`` (``writer.name``) and claim a reader slot.

        Raises ``FileNotFoundError`` if there is no such arena, ``ValueError`` if the
        file is not one, ``CapacityError`` (naming ``reader_slots``) if every slot is
        held by a live reader. Never registers anything with ``resource_tracker``.
        """
        self = cls.__new__(cls)  # the base's __new__: the C ReaderCore's on that path
        self._init(name, codec, cache_size)
        _LIVE_READERS.add(self)
        return self

    def _init(self, name: str, codec: MsgpackCodec | None, cache_size: int) -> None:
        self._name = os.path.abspath(name)
        decode = (codec or MsgpackCodec()).decode
        # The default codec's decode is inlined in get(); any other decode is called as is.
        default_decode = _is_default_decode(decode)
        self._decode = _decode_default if default_decode else decode
        self._cache_size = cache_size
        self._open: list[Snapshot] = []
        self._live: list[Snapshot] = []
        self._old_maps: list[_GenMap] = []
        self._cache: dict[str, dict[RecordId, tuple[Entry, Any]]] = {}
        fd = os.open(self._name, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            if size < L.OFF_SLOTS:
                raise ValueError(f"{name} is not a stateengine arena")
            self._ctl = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        magic, layout, nslots, wpid, wstart = L.CTL_HEADER.unpack_from(self._ctl, 0)
        if magic != L.CTL_MAGIC or layout != L.LAYOUT_VERSION or size < L.ctl_size(nslots):
            self._ctl.close()
            raise ValueError(f"{name} is not a stateengine arena (layout {L.LAYOUT_VERSION})")
        if sys.byteorder != "little":
            self._ctl.close()
            raise ValueError("stateengine arenas are read on little-endian machines only")
        # The seq word as a native u64 (one aligned 8-byte load, DESIGN.md §8): ~40 ns less
        # per read than struct's unpack_from and [0]. Released before the mapping closes.
        self._seqw = memoryview(self._ctl)[L.OFF_SEQ : L.OFF_SEQ + 8].cast("Q")
        self._core_attach(self._ctl, L.OFF_SEQ, _unpackb)  # the same word, for _get_c
        self._nslots = nslots
        self.writer_pid: int = wpid
        """pid of the writer process (with :attr:`writer_start`, tells if it is gone)."""
        self.writer_start: int = wstart
        self._expiry = _uq(self._ctl, L.OFF_EXPIRY)[0] / 1e9
        self._nonce = 0
        self._pins: list[int] = []
        self._seq = -1
        self._pos = 0
        self._idx: Index = {}
        self._g: _GenMap | None = None
        self._gmm: Any = None
        self._pid = os.getpid()
        self._closed = False
        flt = _faults.FAULTS
        self._skip_recheck = "skip_recheck" in flt
        self._skip_checksum = "skip_checksum" in flt
        self._slow_read = "slow_read" in flt
        self._meta_older_ok = "meta_older_ok" in flt
        self._nread = 0
        self._plain_get = not (self._skip_recheck or self._skip_checksum or self._slow_read)
        if not self._plain_get:
            self.get = self._get_checked  # type: ignore[method-assign]
        elif not default_decode:
            self.get = self._get_codec  # type: ignore[method-assign]
        elif blocks.COMPILED:
            self.get = self._get_c  # type: ignore[method-assign]
            self._plain = True  # _get_for may take the C get too
        if not blocks.COMPILED and not (self._plain_get and default_decode):
            # a codec's or a fault switch's get: the twin's _get_for, which calls it
            self._get_for = super()._get_for  # type: ignore[method-assign]
        try:
            self._sync()
            self._slot = self._claim_slot()
        except BaseException:
            self._teardown()
            raise

    # --- the fast path ---------------------------------------------------------------

    def get(self, table: str, rid: RecordId) -> Any:
        """The record ``rid`` of ``table`` at the latest version, decoded; None if absent.

        Raises ``SnapshotExpired`` only if 8 validated attempts in a row failed (the
        writer kept reusing the block under us, or the arena is damaged).
        """
        if self._seqw[0] != self._seq:
            self._sync()
        t = self._idx.get(table)
        if t is None:
            return None
        e = t.get(rid)
        if e is None:
            return None
        raw = self._gmm[e[0] : e[1]]
        if _crc32(raw, e[2]) == e[3]:
            return _unpackb(raw, strict_map_key=False)  # the default codec's decode, inlined
        raw2 = self._get_retry(table, rid)
        return None if raw2 is None else self._decode(raw2)

    # The compiled path binds get to ReaderCore._get_c (shm/_speedups.c: seq word check,
    # lookups, copy, CRC and decode in one C call); it comes back here for the rest.
    _get_sync = get  # the seq word moved (or closed): sync, then the Python get

    def _get_for_pure(self, table: Any, rid: Any, min_seq: int, deadline: float) -> Any:
        """``_get_for`` on the pure-Python path: its test, then :meth:`get` inlined (INLINED
        COPY: test_shm_unit.py::test_get_for_answers_as_get keeps them equal). CPU time of
        a client's get, 97 B record: 1.74x the floor through the twin, 1.53x before it."""
        if self._seq < min_seq or _monotonic() >= deadline:
            return _STALE
        if self._seqw[0] != self._seq:
            self._sync()
        t = self._idx.get(table)
        if t is None:
            return None
        e = t.get(rid)
        if e is None:
            return None
        raw = self._gmm[e[0] : e[1]]
        if _crc32(raw, e[2]) == e[3]:
            return _unpackb(raw, strict_map_key=False)  # the default codec's decode, inlined
        raw2 = self._get_retry(table, rid)
        return None if raw2 is None else self._decode(raw2)

    if not blocks.COMPILED:
        # the twin's _get_for checks its arguments (~0.1 us); bound on the class, as an
        # instance attribute costs a method lookup more
        _get_for = _get_for_pure

    def _get_retried(self, table: str, rid: RecordId) -> Any:
        """After a copy that did not validate (or a damaged entry): re-sync and retry."""
        raw = self._get_retry(table, rid)
        return None if raw is None else self._decode(raw)

    def _get_codec(self, table: str, rid: RecordId) -> Any:
        """:meth:`get` for a reader attached with a codec whose ``decode`` is not the default."""
        raw = self.get_raw(table, rid)
        return None if raw is None else self._decode(raw)

    def get_raw(self, table: str, rid: RecordId) -> bytes | None:
        """Like :meth:`get` but returns the validated msgpack bytes (a private copy)."""
        if self._seqw[0] != self._seq:
            self._sync()
        e = self._lookup(table, rid)
        if e is None:
            return None
        if self._slow_read and not self._skip_checksum:
            self._nread += 1
            if self._nread % 16 == 0:
                time.sleep(0.002)
        raw = self._valid(self._gmm, e)
        return raw if raw is not None else self._get_retry(table, rid)

    def get_cached(self, table: str, rid: RecordId) -> Any:
        """Like :meth:`get`, but an unchanged record comes from a per-reader cache.

        Sharp edge: the returned object is **shared** with later calls that hit the
        cache; treat it as read-only (copy before mutating). Validity is checked
        against the published seq word and the index entry, so a changed record is
        never served stale. The cache holds at most ``cache_size`` records (cleared
        when full).
        """
        if self._seqw[0] != self._seq:
            self._sync()
        t = self._idx.get(table)
        if t is None:
            return None
        e = t.get(rid)
        if e is None:
            return None
        ct = self._cache.get(table)
        if ct is not None:
            c = ct.get(rid)
            if c is not None and c[0] is e:
                return c[1]
        else:
            ct = self._cache[table] = {}
        if self._plain_get:
            # A miss: validate and decode the entry looked up above, as get() would, without
            # reading the seq word and the index a second time.
            raw = self._gmm[e[0] : e[1]]
            if _crc32(raw, e[2]) == e[3]:
                obj = self._decode(raw)
                if len(ct) >= self._cache_size:
                    self._cache.clear()
                    ct = self._cache[table] = {}
                ct[rid] = (e, obj)
                return obj
        obj = self.get(table, rid)  # a fault switch's checks, or a retry after a re-sync
        e2 = self._lookup(table, rid)
        if e2 is not None:
            if len(ct) >= self._cache_size:
                self._cache.clear()
                ct = self._cache[table] = {}
            ct[rid] = (e2, obj)
        return obj

    # --- validation ----------------------------------------------------------------------

    def _lookup(self, table: str, rid: RecordId) -> Entry | None:
        t = self._idx.get(table)
        return None if t is None else t.get(rid)

    def _valid(self, mm: Any, e: Entry) -> bytes | None:
        """The payload of ``e`` if it validates, else None.

        Normal path: one copy of the payload, hashed seeded with the header CRC the
        index named, compared with the CRC the index named (integrity + identity).
        The fault switches bind the weaker checks a buggy reader would do.
        """
        if self._skip_recheck or self._skip_checksum:
            return self._valid_faulty(mm, e)
        raw: bytes = mm[e[0] : e[1]]
        return raw if _crc32(raw, e[2]) == e[3] else None

    def _valid_faulty(self, mm: Any, e: Entry) -> bytes | None:
        off = e[5]
        if self._skip_recheck:
            # trusts whatever block starts at ``off``: checks it only against itself
            total, klen, _kind, _ver = L.BLOCK_HEADER.unpack(mm[off : off + 16])
            if total < L.BLOCK_HEADER_SIZE + 4 or off + total > len(mm):
                return None
            blk: bytes = mm[off : off + total]
            if not self._skip_checksum and _crc32(blk[:-4]) != L.CRC.unpack_from(blk, total - 4)[0]:
                return None
            return blk[L.BLOCK_HEADER_SIZE + klen : total - 4]
        # skip_checksum: checks the header is the one named, then copies the payload
        if _crc32(mm[off : e[0]]) != e[2]:
            return None
        if self._slow_read:
            time.sleep(0.002)
        payload: bytes = mm[e[0] : e[1]]
        return payload

    def _get_checked(self, table: str, rid: RecordId) -> Any:
        raw = self.get_raw(table, rid)
        return None if raw is None else self._decode(raw)

    def _get_retry(self, table: str, rid: RecordId) -> bytes | None:
        for attempt in range(RETRIES):
            if attempt >= 2:
                time.sleep(0.00005 * (1 << attempt))  # bounded: 12.75 ms in all
            self._sync()
            e = self._lookup(table, rid)
            if e is None:
                return None
            raw = self._valid(self._gmm, e)
            if raw is not None:
                return raw
        raise SnapshotExpired(
            f"could not read a consistent {table!r}/{rid!r} in {RETRIES} tries; retry"
        )

    # --- syncing the local index -----------------------------------------------------

    def _read_meta(self) -> tuple[int, ...] | None:
        raw = self._ctl[L.OFF_META[0] : L.OFF_META[1] + L.META_SIZE]
        a = L.meta_unpack(raw[: L.META_SIZE])
        b = L.meta_unpack(raw[L.META_SIZE :])
        if a is None:
            return b
        if b is None:
            return a
        # the newer (seq, gen): a growth republishes its seq in a new generation
        return a if a[:2] >= b[:2] else b

    def _sync(self) -> None:
        """Bring the local index to the latest published version (never backwards).

        :raises SnapshotExpired: the arena was superseded by a restarted server (stale.py).
        """
        self._check_open()
        if _uq(self._ctl, L.OFF_CLOSED)[0] == L.SUPERSEDED:
            raise SnapshotExpired(
                f"arena {self._name!r} was superseded: its server restarted; re-attach"
            )
        for attempt in range(RETRIES * 4):
            if attempt >= 8:
                time.sleep(0.0001)
            published = 0 if self._meta_older_ok else self._seqw[0]  # after its meta slot
            m = self._read_meta()
            if m is None or m[0] < published:
                # Both slots copied while the writer overwrote one, twice as fast as a
                # copy (this process descheduled mid-copy): the older slot is not the
                # newest version, and a read after an acknowledged write must see it.
                continue
            seq, gen, head = m[0], m[1], m[2]
            g = self._g
            if g is None or gen != g.gen:
                ng = _open_gen(self._name, gen)
                if ng is None:
                    continue
                if not self._rebuild(ng, m):
                    ng.mm.close()
                    continue
                return
            if seq <= self._seq:
                return
            s, p, ok = _replay(g, self._idx, self._seq, self._pos, head, self._overlays())
            self._seq, self._pos = s, p
            if ok and s >= seq:
                return
            if self._rebuild(g, m):
                return
        raise SnapshotExpired(f"could not sync with arena {self._name!r}; is the writer alive?")

    def _overlays(self) -> list[dict[str, dict[RecordId, Entry | None]]]:
        return [s._ov for s in self._live]

    def _rebuild(self, g: _GenMap, m: tuple[int, ...]) -> bool:
        """Replace the index with the checkpoint of ``m`` plus the ring after it."""
        _seq, _gen, head, cps, cpe, cseq, cpos, chcrc, ccrc = m
        if cseq < self._seq and g is self._g:
            return False  # an older checkpoint than what we have: re-read the meta
        if not (g.data_off <= cps <= cpe <= g.size):
            return False
        data = g.mm[cps:cpe]
        if _crc32(data, chcrc) != ccrc:
            return False
        idx: Index = {}
        for table, rows in unpack_internal(data):
            idx[table] = {r[0]: (r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows}
        s, p, ok = _replay(g, idx, cseq, cpos, head, [])
        if not ok and s < m[0]:
            return False
        # open snapshots keep the old dicts (never mutated again) and the old mapping
        self._live.clear()
        self._cache.clear()
        if self._g is not None and g is not self._g:
            self._old_maps.append(self._g)
        self._idx = idx
        self._g = g
        self._gmm = g.mm
        self._seq, self._pos = s, p
        self._release_old_maps()
        return True

    def _release_old_maps(self) -> None:
        keep = []
        for g in self._old_maps:
            if any(s._g is g for s in self._open):
                keep.append(g)
                continue
            try:
                g.mm.close()
            except BufferError:  # a view is still alive somewhere: try again later
                keep.append(g)
        self._old_maps = keep

    # --- versions ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The latest published version (syncs first)."""
        if self._seqw[0] != self._seq:
            self._sync()
        return self._seq

    def wait_for(self, seq: int, timeout: float) -> int:
        """Block until version ``seq`` is visible; return the version reached.

        Polls with bounded, growing sleeps (50 µs … 2 ms). Raises ``TimeoutError``
        after ``timeout`` seconds. Used for read-your-writes.
        """
        deadline = time.monotonic() + timeout
        delay = 0.00005
        while True:
            v = self.version
            if v >= seq:
                return v
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"version {seq} not published within {timeout}s (at {v})")
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.002)

    def writer_alive(self) -> bool:
        """True if the writer process (pid and start time) still runs."""
        return L.process_alive(self.writer_pid, self.writer_start)

    # --- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Pin the latest version; use as ``with reader.snapshot() as snap:``.

        Raises ``SnapshotExpired`` if a pin could not be established in 8 tries (the
        writer reclaimed past us each time), ``CapacityError`` if a forked child finds
        no free reader slot.
        """
        self._check_open()
        if self._slot is None:
            self._slot = self._claim_slot()
        for _attempt in range(RETRIES):
            if self._seqw[0] != self._seq:
                self._sync()
            v = self._seq
            self._pin(v)
            if self._skip_recheck or _uq(self._ctl, L.OFF_INTENT)[0] <= v:
                snap = Snapshot(self, v)
                self._open.append(snap)
                self._live.append(snap)
                return snap
            self._unpin(v)
            self._sync()
        raise SnapshotExpired("could not pin a snapshot: the writer reclaimed past it; retry")

    def _pin(self, v: int) -> None:
        self._pins.append(v)
        low = min(self._pins) + 1  # stored as version + 1: 0 means "no pin"
        so = L.OFF_SLOTS + (self._slot or 0) * L.SLOT_SIZE
        if _uq(self._ctl, so + L.SLOT_PIN_SEQ)[0] != low:
            self._nonce += 1
            L.U64.pack_into(self._ctl, so + L.SLOT_PIN_NONCE, self._nonce)
            L.U64.pack_into(self._ctl, so + L.SLOT_PIN_SEQ, low)

    def _unpin(self, v: int) -> None:
        with contextlib.suppress(ValueError):
            self._pins.remove(v)
        if self._slot is None or self._closed:
            return
        so = L.OFF_SLOTS + self._slot * L.SLOT_SIZE
        low = min(self._pins) + 1 if self._pins else 0
        if _uq(self._ctl, so + L.SLOT_PIN_SEQ)[0] != low:
            self._nonce += 1
            L.U64.pack_into(self._ctl, so + L.SLOT_PIN_SEQ, low)
            L.U64.pack_into(self._ctl, so + L.SLOT_PIN_NONCE, self._nonce)

    def _snapshot_closed(self, snap: Snapshot) -> None:
        for lst in (self._open, self._live):
            with contextlib.suppress(ValueError):
                lst.remove(snap)
        self._unpin(snap.version)
        self._release_old_maps()

    # --- slots and lifecycle ---------------------------------------------------------------

    def _claim_slot(self) -> int:
        """Take a free slot (or one whose owner died) under flock on the control file.

        The lock is taken on a fresh file description, so a forked parent and child
        exclude each other too. Only attach/first snapshot take it, never a read.
        """
        me = os.getpid()
        start = L.proc_start_time(me) or 0
        fd = os.open(self._name, os.O_RDWR | os.O_CLOEXEC)
        try:
            deadline = time.monotonic() + 5.0
            while not locks.try_lock(fd):
                if time.monotonic() > deadline:
                    raise TimeoutError("reader slot table locked for 5 s") from None
                time.sleep(0.001)
            try:
                for i in range(self._nslots):
                    so = L.OFF_SLOTS + i * L.SLOT_SIZE
                    pid, pstart, _pin, nonce = L.SLOT.unpack_from(self._ctl, so)
                    if pid == 0 or not L.process_alive(pid, pstart):
                        self._nonce = nonce + 1
                        L.SLOT.pack_into(self._ctl, so, me, start, 0, self._nonce)
                        return i
            finally:
                locks.unlock(fd)
        finally:
            os.close(fd)
        raise CapacityError(
            f"all {self._nslots} reader slots of {self._name} are held by live readers; "
            f"raise reader_slots ({L.REMEDY['reader_slots']})"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("ArenaReader is closed")

    def close(self) -> None:
        """Release the reader slot and the mappings. Idempotent; never unlinks.

        Open snapshots become unusable (``ValueError``).
        """
        if self._closed:
            return
        for snap in list(self._open):
            snap._closed = True
        self._open.clear()
        self._live.clear()
        self._pins.clear()
        if self._slot is not None and self._pid == os.getpid():
            so = L.OFF_SLOTS + self._slot * L.SLOT_SIZE
            with contextlib.suppress(ValueError):
                L.U64.pack_into(self._ctl, so + L.SLOT_PIN_SEQ, 0)
                L.U64.pack_into(self._ctl, so, 0)
        self._slot = None
        self._teardown()

    def _teardown(self) -> None:
        self._closed = True
        self._idx = {}
        self._cache = {}
        self._gmm = None
        maps = list(getattr(self, "_old_maps", ()))
        if getattr(self, "_g", None) is not None:
            assert self._g is not None
            maps.append(self._g)
        self._g = None
        self._old_maps = []
        for g in maps:
            with contextlib.suppress(BufferError, ValueError):
                g.mm.close()
        self._core_release()
        seqw = getattr(self, "_seqw", None)
        if seqw is not None:
            seqw.release()  # an exported buffer would make ctl.close() fail
        ctl = getattr(self, "_ctl", None)
        if ctl is not None:
            with contextlib.suppress(BufferError, ValueError):
                ctl.close()

    def __enter__(self) -> ArenaReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed and self._pid == os.getpid():
            warnings.warn(f"unclosed ArenaReader {self._name!r}", ResourceWarning, stacklevel=2)
            if not sys.is_finalizing():
                self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"version={self._seq}"
        return f"<ArenaReader {getattr(self, '_name', '?')!r} {state}>"


class Snapshot:
    """One pinned version: every read sees the arena exactly as of :attr:`version`.

    Made by :meth:`ArenaReader.snapshot`; close it (``with``) promptly: it keeps
    the writer from reusing the space of the records it can see. After the
    arena's ``expiry`` (default 10 s) every read raises ``SnapshotExpired``, also
    after a stall (SIGSTOP). Not for use in a forked child.
    """

    def __init__(self, reader: ArenaReader, version: int) -> None:
        self._r = reader
        self.version = version
        self._base = reader._idx
        assert reader._g is not None
        self._g = reader._g
        self._ov: dict[str, dict[RecordId, Entry | None]] = {}
        self._t0 = time.monotonic()
        self._closed = False

    def _entry(self, table: str, rid: RecordId) -> Entry | None:
        ov = self._ov.get(table)
        if ov is not None and rid in ov:
            return ov[rid]
        t = self._base.get(table)
        return None if t is None else t.get(rid)

    def _recheck(self) -> None:
        """After copying: the writer must not have reused anything visible at our version."""
        r = self._r
        if r._skip_recheck:
            return
        if time.monotonic() - self._t0 > r._expiry:
            raise SnapshotExpired(f"snapshot at version {self.version} expired; take a new one")
        if _uq(r._ctl, L.OFF_HORIZON)[0] > self.version:
            raise SnapshotExpired(
                f"snapshot at version {self.version} was reclaimed by the writer; take a new one"
            )

    def _read(self, table: str, e: Entry) -> bytes:
        raw = self._r._valid(self._g.mm, e)
        if raw is None:
            raise SnapshotExpired(
                f"a record of {table!r} changed under the snapshot at version {self.version}"
            )
        return raw

    def get_raw(self, table: str, rid: RecordId) -> bytes | None:
        """Validated msgpack bytes of the record as of :attr:`version`, or None."""
        if self._closed:
            raise ValueError("snapshot is closed")
        e = self._entry(table, rid)
        raw = None if e is None else self._read(table, e)
        self._recheck()
        return raw

    def get(self, table: str, rid: RecordId) -> Any:
        """The decoded record as of :attr:`version`, or None if absent then."""
        raw = self.get_raw(table, rid)
        return None if raw is None else self._r._decode(raw)

    def _entries(self, table: str) -> list[tuple[RecordId, Entry]]:
        base = self._base.get(table) or {}
        ov = self._ov.get(table)
        if not ov:
            return list(base.items())
        merged = [(rid, e) for rid, e in base.items() if rid not in ov]
        merged.extend((rid, e) for rid, e in ov.items() if e is not None)
        merged.sort(key=lambda item: item[1][4])
        return merged

    def ids(self, table: str) -> list[RecordId]:
        """Ids of ``table`` at :attr:`version`, in insertion order."""
        if self._closed:
            raise ValueError("snapshot is closed")
        out = [rid for rid, _e in self._entries(table)]
        self._recheck()
        return out

    def items_raw(self, table: str) -> list[tuple[RecordId, bytes]]:
        """``(id, msgpack bytes)`` of every record of ``table`` at :attr:`version`.

        Order: insertion order of the id (an overwrite keeps its place, a delete
        followed by a put moves it to the end).
        """
        if self._closed:
            raise ValueError("snapshot is closed")
        out = [(rid, self._read(table, e)) for rid, e in self._entries(table)]
        self._recheck()
        return out

    def items(self, table: str) -> list[tuple[RecordId, Any]]:
        """Decoded ``(id, record)`` pairs of ``table`` at :attr:`version` (see ``items_raw``)."""
        dec = self._r._decode
        return [(rid, dec(raw)) for rid, raw in self.items_raw(table)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables())

    def tables(self) -> list[str]:
        """Sorted names of the tables that have records or metadata at :attr:`version`."""
        if self._closed:
            raise ValueError("snapshot is closed")
        names = (set(self._base) | set(self._ov)) - {META_TABLE}
        out = {t for t in names if self._entries(t)}
        out.update(str(rid) for rid, _e in self._entries(META_TABLE))
        self._recheck()
        return sorted(out)

    def meta(self, table: str) -> bytes | None:
        """The metadata bytes stored for ``table`` (``commit(meta=...)``) at :attr:`version`."""
        return self.get_raw(META_TABLE, table)

    def close(self) -> None:
        """Unpin. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._r._snapshot_closed(self)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Snapshot version={self.version}{' closed' if self._closed else ''}>"
