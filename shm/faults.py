"""Test-only fault switches. Never set these outside tests.

A switch is read once, when an :class:`~stateengine.shm.ArenaReader` attaches or an
:class:`~stateengine.shm.ArenaWriter` is created; the object then binds slower
checking functions, so the fast path carries no branch for them. A child process
(spawn) gets them through the environment variable ``STATEENGINE_SHM_FAULTS``
(comma separated), read at import.

``skip_recheck``   reader: accept whatever block starts at the indexed offset if it
                   is consistent with its own header and CRC, without checking it is
                   the block the index named; snapshots skip the horizon/expiry check.
``skip_checksum``  reader: check the block header is the one the index named, then
                   copy the payload without hashing it.
``publish_early``  writer: publish ring, meta and seq word before writing blocks.
``meta_by_seq``    writer: write the meta slot of ``seq & 1`` instead of alternating,
                   as before the fix: a publication can overwrite the newest one.
``meta_older_ok``  reader: a sync takes a meta slot older than the seq word it read
                   just before, as before the fix (with ``meta_by_seq``: stale reads).
``reclaim_unsafe`` writer: reuse retired space at once, ignoring pins and grace.
``trust_encoded``  server (``ArenaPublisher.publish_state``): a start hands the arena
                   the store's bytes of every table whose record count is unchanged,
                   without checking the engine still holds the records they encode
                   (a log replayed over the snapshot changed some).
``slow_read``      reader: every 16th plain read sleeps 2 ms between the index
                   lookup and the copy (with ``skip_checksum``: every read, between
                   the header check and the payload copy). Not a bug: it widens
                   the race window so the tests above meet a reused block in
                   seconds; alone it must not make any test fail (checked).
``stall_loop``     server: the writer's housekeeping (``Server._idle``, at least
                   every 100 ms of a busy loop) spins :data:`STALL_SECONDS` of Python
                   after reading the doors' monitors, as a long pass or ``fsync``
                   would hold the loop up. Not a bug: it widens the window in which
                   refused peers reconnect before their refusal (test_fd_limits).
``reserve_fails``  writer: :meth:`~stateengine.shm.ArenaWriter.reserve`'s thread fails
                   after making its file (as a kernel refusing the faulting would):
                   the file must go and the load grow as without it.
``doors_in_loop``  server: no :class:`~stateengine.server.connections.Gatekeeper`;
                   the loop reads the doors' monitors and refuses between passes, as
                   before it (the control of test_fd_limits' stalled flood).
"""

from __future__ import annotations

import os
import time
from typing import Final

__all__ = [
    "FAULTS",
    "KNOWN",
    "STALL_SECONDS",
    "stall",
]


KNOWN: Final = frozenset(
    {
        "skip_recheck",
        "skip_checksum",
        "publish_early",
        "meta_by_seq",
        "meta_older_ok",
        "reclaim_unsafe",
        "slow_read",
        "trust_encoded",
        "stall_loop",
        "doors_in_loop",
        "reserve_fails",
    }
)

#: how long ``stall_loop`` holds the writer's loop up each time
STALL_SECONDS: Final = 0.1

FAULTS: set[str] = {
    f.strip() for f in os.environ.get("STATEENGINE_SHM_FAULTS", "").split(",") if f.strip()
}

_unknown = FAULTS - KNOWN
if _unknown:
    raise ValueError(f"unknown STATEENGINE_SHM_FAULTS: {sorted(_unknown)}")


def stall(seconds: float = STALL_SECONDS) -> None:
    """Spin *seconds* of Python (the GIL handed over at the switch interval only)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
