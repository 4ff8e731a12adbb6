"""Finding and removing the leftovers of a killed writer.

A writer that dies by ``kill -9`` cannot unlink its files. :func:`cleanup_stale`
removes every arena control file in a directory whose writer process (pid **and**
start time) is gone or that is marked closed, together with its generation files,
and generation files whose control file is gone. It never touches an arena whose
writer still runs, nor files that are not arenas (checked by magic).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re

from stateengine.shm import layout as L

__all__ = [
    "cleanup_stale",
    "find_stale",
    "supersede",
]


_GEN_RE = re.compile(r"^(?P<base>.+)\.g\d+$")


def _control_state(path: str) -> str:
    """'live', 'stale' or 'foreign' for a candidate control file."""
    try:
        with open(path, "rb") as f:
            head = f.read(L.OFF_CLOSED + 8)
    except OSError:
        return "foreign"
    if len(head) < L.OFF_CLOSED + 8:
        return "foreign"
    magic, _layout, _nslots, pid, start = L.CTL_HEADER.unpack_from(head, 0)
    if magic != L.CTL_MAGIC:
        return "foreign"
    closed = L.U64.unpack_from(head, L.OFF_CLOSED)[0]
    if not closed and L.process_alive(pid, start):
        return "live"
    return "stale"


def supersede(path: str) -> bool:
    """Mark the arena at *path*, of a writer that is gone, as superseded by a newer server
    of the same data: its readers then refuse to read it (``SnapshotExpired`` at their
    next read) instead of serving a version the new server has moved past. Returns
    whether it marked it (False: missing, not an arena, or its writer still runs)."""
    if _control_state(path) == "foreign":
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        head = os.pread(fd, L.CTL_HEADER.size, 0)
        _magic, _layout, _nslots, pid, start = L.CTL_HEADER.unpack_from(head, 0)
        closed = L.U64.unpack_from(os.pread(fd, 8, L.OFF_CLOSED), 0)[0]
        if not closed and L.process_alive(pid, start):
            return False  # a live writer's arena is its own
        os.pwrite(fd, L.U64.pack(L.SUPERSEDED), L.OFF_CLOSED)
        # a seq no version has: every reader's next read leaves its fast path (_sync)
        os.pwrite(fd, L.U64.pack(2**64 - 1), L.OFF_SEQ)
    finally:
        os.close(fd)
    return True


def find_stale(directory: str | None = None, prefix: str = "stateengine") -> list[str]:
    """Paths that :func:`cleanup_stale` would remove (dry run)."""
    directory = directory or L.default_dir()
    if directory is None:
        return []
    out: list[str] = []
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "-*"))):
        m = _GEN_RE.match(path)
        if m:
            if not os.path.exists(m.group("base")):
                out.append(path)  # an orphan generation
            continue
        if _control_state(path) == "stale":
            out.append(path)
            out.extend(sorted(glob.glob(glob.escape(path) + ".g*")))
    return sorted(set(out))


def cleanup_stale(directory: str | None = None, prefix: str = "stateengine") -> list[str]:
    """Remove leftovers of dead writers under ``directory`` (default ``/dev/shm``).

    Returns the removed paths. Safe to run while other servers are running: a
    live writer's files (pid and start time match a running process) are kept.
    Readers still mapping a removed arena keep their mapping, marked superseded: their
    next read raises ``SnapshotExpired`` and the client re-attaches.
    """
    removed: list[str] = []
    for path in find_stale(directory, prefix):
        if not _GEN_RE.match(path):
            # readers still attached must not go on serving a dead writer's last version
            # while a new server of their data runs: they re-attach (see supersede)
            supersede(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed
