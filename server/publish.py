"""Publishing each pass to the shared-memory arena, where workers read it lock-free.

The arena (``stateengine.shm``) stores encoded records and one metadata blob per table;
this adapter turns a pass's :class:`~stateengine.server.engine.ChangeSet` into one
arena commit at the pass's ``seq``. The table metadata is ``Table.info()`` — what
``GET_STATE_INFO`` answers — so a worker answers that from the arena too.
"""

from __future__ import annotations

import logging
from typing import Any

from stateengine import defaults
from stateengine.server.engine import ChangeSet, TableEngine
from stateengine.shm import ArenaWriter
from stateengine.shm.codec import record_encoder

log = logging.getLogger("stateengine.server")


def arena_unavailable() -> str | None:
    """Why this platform cannot run the arena, or None: it needs ``flock`` (its
    reader-slot table) and ``/dev/shm`` (memory, not a disk file, behind the mmaps).
    Without them the server runs with the arena off and clients read over the socket."""
    from stateengine.shm import layout, locks

    if locks.ARENA_BLOCKER is not None:
        return locks.ARENA_BLOCKER
    if layout.default_dir() is None:
        return "no writable /dev/shm"
    return None


class ArenaPublisher:
    """Owns the arena's writer. Not safe across fork; the writer process only.

    :param engine: read for each touched table's info at publish time.
    :param options: the rest of :meth:`ArenaWriter.create`'s settings (``max_size``,
        ``reader_slots``, ...; ``serve --arena-max-size``, ``--reader-slots``).
    :raises CapacityError: at creation, when /dev/shm cannot hold ``initial_size``.
    """

    def __init__(
        self, engine: TableEngine, initial_size: int = defaults.ARENA_SIZE, **options: Any
    ) -> None:
        self.engine = engine
        self._settings = (initial_size, options)
        self.writer = ArenaWriter.create(initial_size=initial_size, **options)
        self.name = self.writer.name
        # the stored records and infos are validated values: msgspec's encoder, 2.7x
        # a reused msgpack Packer's speed on a small record (shm/codec.py)
        self._pack = record_encoder()

    def publish(self, changes: ChangeSet) -> None:
        """One arena commit for the pass; a failure leaves the arena at the last version."""
        if changes.seq <= self.writer.seq:
            return  # nothing new (a restart that recovered nothing)
        pack = self._pack
        tables = self.engine.tables
        meta: dict[str, bytes | None] = {}
        for name in changes.tables:
            table = tables.get(name)
            meta[name] = pack(table.info()) if table is not None else None
        self.writer.commit(
            changes.seq,
            puts=[(t, rid, pack(rec)) for t, rid, rec, _ in changes.puts],
            deletes=changes.deletes,
            dropped_tables=changes.dropped,
            meta=meta,
        )

    def renewed(self) -> ArenaPublisher:
        """A new, empty arena with this one's settings: for a state that went back (a
        cluster node reloading), whose ``seq`` may be below this arena's, which only
        goes up."""
        initial_size, options = self._settings
        return ArenaPublisher(self.engine, initial_size, **options)

    def reclaim(self) -> None:
        """Free space of dead or expired readers even when no writes come (idle timer)."""
        self.writer.reclaim()

    def stats(self) -> dict[str, Any]:
        return self.writer.stats()

    def close(self, unlink: bool = True) -> None:
        self.writer.close(unlink=unlink)
