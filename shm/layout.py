"""Byte layout of the arena's files and the OS helpers behind them.

The layout table is in ``DESIGN.md`` §2; the offsets here are the code's copy of
it. Everything is little-endian and every u64 is 8-byte aligned, so on the
supported platforms a ``struct`` read of one u64 is one load (it is still never
trusted alone: see DESIGN.md §5).

Segment files are created with ``os.open`` + ``posix_fallocate`` + ``mmap`` — not
``multiprocessing.shared_memory`` — so no ``resource_tracker`` ever registers (and
later unlinks) a segment, and a full ``/dev/shm`` fails at allocation with
:class:`~stateengine.errors.CapacityError` instead of SIGBUS at first touch.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import sys
import zlib
from typing import Any, Final

from stateengine.errors import CapacityError

# --- control file ------------------------------------------------------------------

__all__ = [
    "ALIGN",
    "BLOCK_HEADER",
    "BLOCK_HEADER_SIZE",
    "CRC",
    "CTL_HEADER",
    "CTL_MAGIC",
    "GEN_HEADER",
    "GEN_HEADER_SIZE",
    "GEN_MAGIC",
    "KIND_CHECKPOINT",
    "KIND_RECORD",
    "LAYOUT_VERSION",
    "META_BODY",
    "META_CRC",
    "META_SIZE",
    "OFF_CLOSED",
    "OFF_EXPIRY",
    "OFF_GRACE",
    "OFF_HORIZON",
    "OFF_INTENT",
    "OFF_META",
    "OFF_NSLOTS",
    "OFF_SEQ",
    "OFF_SLOTS",
    "OFF_WRITER_PID",
    "OFF_WRITER_START",
    "REMEDY",
    "RING_HEADER",
    "RING_HEADER_SIZE",
    "RING_LEN",
    "SLOT",
    "SLOT_PIN_NONCE",
    "SLOT_PIN_SEQ",
    "SLOT_SIZE",
    "U64",
    "align",
    "allocate",
    "allocated_bytes",
    "create_file",
    "ctl_size",
    "default_dir",
    "gen_path",
    "map_fd",
    "meta_pack",
    "meta_unpack",
    "proc_start_time",
    "process_alive",
    "ring_crc",
]


CTL_MAGIC: Final = b"STENGCTL"
GEN_MAGIC: Final = b"STENGGEN"
LAYOUT_VERSION: Final = 1

OFF_NSLOTS: Final = 12
OFF_WRITER_PID: Final = 16
OFF_WRITER_START: Final = 24
OFF_SEQ: Final = 32
OFF_HORIZON: Final = 40
OFF_EXPIRY: Final = 48
OFF_GRACE: Final = 56
OFF_CLOSED: Final = 64
#: OFF_CLOSED's values: 1 the writer closed the arena (its last version stays readable),
#: SUPERSEDED a later server of the same data dir runs (readers must re-attach).
CLOSED: Final = 1
SUPERSEDED: Final = 2
OFF_INTENT: Final = 72
OFF_META: Final = (128, 200)
META_SIZE: Final = 72
OFF_SLOTS: Final = 272
SLOT_SIZE: Final = 64

CTL_HEADER = struct.Struct("<8sII QQ")  # magic, layout, nslots, writer pid, start
U64 = struct.Struct("<Q")
# seq, gen, ring_head, ckpt_pstart, ckpt_pend, ckpt_seq, ckpt_ringpos, ckpt_hcrc, ckpt_crc
META_BODY = struct.Struct("<7QII")
META_CRC = struct.Struct("<II")  # meta_crc, pad
SLOT = struct.Struct("<QQQQ")  # pid, start, pin_seq, pin_nonce
SLOT_PIN_SEQ: Final = 16
SLOT_PIN_NONCE: Final = 24


def ctl_size(nslots: int) -> int:
    return OFF_SLOTS + SLOT_SIZE * nslots


# --- generation file -----------------------------------------------------------------

GEN_HEADER = struct.Struct("<8s7Q")  # magic, gen, size, ring_off, ring_size, data_off, data_size
GEN_HEADER_SIZE: Final = 64

# --- blocks --------------------------------------------------------------------------

BLOCK_HEADER = struct.Struct("<IHHQ")  # total_len, key_len, kind, version
BLOCK_HEADER_SIZE: Final = 16
KIND_RECORD: Final = 1
KIND_CHECKPOINT: Final = 2
CRC = struct.Struct("<I")
ALIGN: Final = 8

# --- ring entries --------------------------------------------------------------------

RING_HEADER = struct.Struct("<IIQQ")  # len, crc, seq, prev (the seq published before it)
RING_HEADER_SIZE: Final = 24
RING_LEN = struct.Struct("<IQQ")  # what the ring CRC covers besides the payload


def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def ring_crc(length: int, seq: int, prev: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(RING_LEN.pack(length, seq, prev)))


def meta_pack(
    seq: int,
    gen: int,
    ring_head: int,
    ckpt_pstart: int,
    ckpt_pend: int,
    ckpt_seq: int,
    ckpt_ringpos: int,
    ckpt_hcrc: int,
    ckpt_crc: int,
) -> bytes:
    body = META_BODY.pack(
        seq, gen, ring_head, ckpt_pstart, ckpt_pend, ckpt_seq, ckpt_ringpos, ckpt_hcrc, ckpt_crc
    )
    return body + META_CRC.pack(zlib.crc32(body), 0)


def meta_unpack(raw: bytes) -> tuple[int, ...] | None:
    """A validated meta slot as a tuple (``META_BODY`` order), or None if torn/empty."""
    body = raw[:64]
    (crc, _pad) = META_CRC.unpack_from(raw, 64)
    if zlib.crc32(body) != crc:
        return None
    fields: tuple[int, ...] = META_BODY.unpack(body)
    if fields[0] == 0 and fields[1] == 0:
        return None
    return fields


# --- processes -----------------------------------------------------------------------


_HAS_PROC: Final = sys.platform == "linux" or os.path.exists("/proc/self/stat")


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), 0 where unknown,
    None if the process does not exist or is a zombie (it can pin nothing)."""
    if _HAS_PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            return 0
        # the command name (field 2) may contain spaces and parentheses: split after the last ')'
        rest = stat[stat.rfind(b")") + 2 :].split()
        if rest[0] in (b"Z", b"X"):
            return None
        return int(rest[19])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def process_alive(pid: int, start: int) -> bool:
    """True if ``pid`` runs and (where known) started at ``start`` — not pid alone,
    so a pid reused by another process does not count as the old owner."""
    if pid <= 0:
        return False
    now = proc_start_time(pid)
    if now is None:
        return False
    return start == 0 or now == 0 or now == start


# --- files ---------------------------------------------------------------------------


def default_dir() -> str | None:
    """``/dev/shm`` where it exists (Linux); None means: make a private temp dir."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


#: each arena setting an error may tell to change → where a server's operator changes it
REMEDY: Final = {
    "initial_size": "stateengine serve --arena-size",
    "max_size": "stateengine serve --arena-max-size",
    "reader_slots": "stateengine serve --reader-slots",
}


def create_file(path: str, size: int, setting: str) -> int:
    """Create ``path`` (0600, exclusive) with ``size`` bytes allocated up front.

    Raises ``CapacityError`` naming ``setting`` when the filesystem (``/dev/shm``) is
    full; the half-made file is removed. Returns the open fd.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        allocate(fd, size)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            where = os.path.dirname(path)
            raise CapacityError(
                f"cannot allocate {size} bytes for {path}: {where} is full; lower {setting} "
                f"({REMEDY.get(setting, setting)}) or enlarge {where} "
                "(e.g. mount -o remount,size=... or docker --shm-size)"
            ) from exc
        raise
    return fd


def allocate(fd: int, size: int) -> None:
    """Allocate every page now (posix_fallocate), so a later store can't SIGBUS."""
    if hasattr(os, "posix_fallocate"):
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)
        return
    # macOS: no posix_fallocate; write zeros so the blocks exist.
    chunk = b"\0" * (1 << 20)
    left = size
    os.lseek(fd, 0, os.SEEK_SET)
    while left > 0:
        left -= os.write(fd, chunk[: min(left, len(chunk))])


def map_fd(fd: int, size: int, writable: bool) -> mmap.mmap:
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)


#: ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14): fault every page of a range in, writable
MADV_POPULATE_WRITE: Final = 23


def populate(mm: mmap.mmap) -> bool:
    """Fault in every page of the writable mapping *mm* now, without the GIL (a ctypes
    call releases it; ``mmap``'s own ``madvise`` and ``MAP_POPULATE`` hold it in 3.11),
    so a thread can do it beside the caller's work. False where the kernel or platform
    cannot (the pages then fault in when first written, as without it)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    global _madvise
    if _madvise is None:
        fn = ctypes.CDLL(None, use_errno=True).madvise
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
        _madvise = fn
    buf = (ctypes.c_char * len(mm)).from_buffer(mm)  # holds the mapping open meanwhile
    try:
        rc: int = _madvise(ctypes.addressof(buf), len(mm), MADV_POPULATE_WRITE)
        return rc == 0
    finally:
        del buf


_madvise: Any = None


def gen_path(name: str, gen: int) -> str:
    return f"{name}.g{gen}"


def allocated_bytes(path: str) -> int:
    """Bytes the filesystem really allocated for ``path`` (``st_blocks``·512), 0 if gone."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0
