"""Test-only fault switches. Never set these outside tests.

A switch is read once, when an :class:`~stateengine.shm.ArenaReader` attaches or an
:class:`~stateengine.shm.ArenaWriter` is created; the object then binds slower
checking functions, so the fast path carries no branch for them. A child process
(spawn) gets them through the environment variable ``STATEENGINE_SHM_FAULTS``
(comma separated), read at import.

``skip_recheck``   reader: accept a self-consistent block without checking it is
                   the one the index named; snapshots skip the horizon/expiry check.
``skip_checksum``  reader: trust the stored 4-byte CRC against the index without
                   hashing the payload.
``publish_early``  writer: publish ring, meta and seq word before writing blocks.
``reclaim_unsafe`` writer: reuse retired space at once, ignoring pins and grace.
"""

from __future__ import annotations

import os
from typing import Final

KNOWN: Final = frozenset({"skip_recheck", "skip_checksum", "publish_early", "reclaim_unsafe"})

FAULTS: set[str] = {
    f.strip() for f in os.environ.get("STATEENGINE_SHM_FAULTS", "").split(",") if f.strip()
}

_unknown = FAULTS - KNOWN
if _unknown:
    raise ValueError(f"unknown STATEENGINE_SHM_FAULTS: {sorted(_unknown)}")
