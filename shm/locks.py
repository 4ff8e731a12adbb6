"""File locks where the platform has them, and what to do where it has none.

One home for the three locks of stateengine: the data-directory lock of a server
(``DATA_DIR/lock``), ``cleanup``'s probe of it, and the arena's reader-slot table.

* ``fcntl.flock`` (Linux, macOS, the BSDs): a lock on the open file description; the
  kernel drops it when the holder dies, however it dies.
* ``msvcrt.locking`` (Windows): a byte-range lock on the file's first byte, also dropped
  by the kernel with its holder.
* Neither (an unusual Python build): the file holds the holder's pid and process start
  time (``shm/layout.py``'s process identity, the one every liveness check uses), and a
  holder is one that still runs. Not atomic: two processes starting at the same instant
  can both win, so the arena (whose reader slots rely on the lock under load) is off
  there (:data:`ARENA_BLOCKER`).

Imports nothing of ours but ``shm/layout.py``.
"""

from __future__ import annotations

import os
from typing import Any, Final

from stateengine.shm import layout as L

_fcntl: Any
_msvcrt: Any
try:
    import fcntl as _fcntl
except ImportError:  # Windows, or a build without it
    _fcntl = None
try:
    import msvcrt as _msvcrt  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    _msvcrt = None

__all__ = ["ARENA_BLOCKER", "KIND", "try_lock", "unlock"]

#: Which lock this process uses: ``flock``, ``msvcrt`` or ``pidfile``.
KIND: Final = "flock" if _fcntl is not None else "msvcrt" if _msvcrt is not None else "pidfile"

#: Why the arena cannot run here, or None: its reader-slot table needs ``flock``.
ARENA_BLOCKER: Final[str | None] = (
    None if _fcntl is not None else "no fcntl module (flock for the arena's reader slots)"
)


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file *fd* without waiting; whether it was
    taken (False: another process holds it). Safe across processes; a forked child
    shares its parent's ``flock``.

    :raises OSError: the file cannot be locked for another reason.
    """
    if _fcntl is not None:
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if _msvcrt is not None:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            _msvcrt.locking(fd, _msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    return _pidfile_lock(fd)


def unlock(fd: int) -> None:
    """Release a lock :func:`try_lock` took on *fd* (closing *fd* releases it too).
    Raises nothing."""
    try:
        if _fcntl is not None:
            _fcntl.flock(fd, _fcntl.LOCK_UN)
        elif _msvcrt is not None:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            _msvcrt.locking(fd, _msvcrt.LK_UNLCK, 1)
        else:
            os.ftruncate(fd, 0)
    except OSError:
        pass


def _pidfile_lock(fd: int) -> bool:
    """The lock of last resort: the file names its holder (``pid start``); it is held
    while that process runs."""
    me = os.getpid()
    words = os.pread(fd, 64, 0).split()
    try:
        pid, start = int(words[0]), int(words[1]) if len(words) > 1 else 0
    except (IndexError, ValueError):
        pid, start = 0, 0
    if pid and pid != me and L.process_alive(pid, start):
        return False
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{me} {L.proc_start_time(me) or 0}".encode(), 0)
    except OSError:
        pass  # a read-only probe (cleanup): nobody holds it, which is all it asks
    return True
