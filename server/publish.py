"""Publishing each pass to the shared-memory arena, where workers read it lock-free.

The arena (``stateengine.shm``) stores encoded records and one metadata blob per table;
this adapter turns a pass's :class:`~stateengine.server.engine.ChangeSet` into one
arena commit at the pass's ``seq``. The table metadata is ``Table.info()`` — what
``GET_STATE_INFO`` answers — so a worker answers that from the arena too.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

from stateengine import defaults
from stateengine.server.engine import ChangeSet, TableEngine
from stateengine.server.persist_base import Encoded
from stateengine.shm import ArenaWriter, faults
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
        self._trust_encoded = "trust_encoded" in faults.FAULTS  # a test's control only

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

    def publish_state(self, encoded: Encoded | None = None) -> None:
        """The engine's whole state as the arena's first version (a start, after
        recovery): one :meth:`ArenaWriter.load`, not a commit of every record.

        *encoded*: what the store read the records from (``RecoveryReport.encoded``). A
        table whose records are still those objects, in that order, goes to the arena
        as the stored bytes, unpacked and not packed again: the engine replaces a
        record it changes, never edits one in place, so the same object has the same
        bytes. Any other table (a log replayed or an expiry committed over it) is packed.
        """
        engine = self.engine
        if engine.seq <= self.writer.seq:
            self.writer.drop_spare()
            return  # nothing to show (a start that recovered nothing)
        pack = self._pack
        encoded = encoded or {}
        tables: dict[str, tuple[list[Any], list[Any]]] = {}
        for name, table in engine.tables.items():
            records = table.records
            stored = encoded.get(name)
            if (
                stored is not None
                and len(stored[0]) == len(records)
                and (self._trust_encoded or all(map(operator.is_, stored[0], records.values())))
            ):
                tables[name] = (list(records), stored[1])
            else:
                tables[name] = (list(records), list(map(pack, records.values())))
        meta = {name: pack(table.info()) for name, table in engine.tables.items()}
        self.writer.load(engine.seq, tables, meta)

    def reserve(self, nbytes: int) -> None:
        """Before a recovery of about *nbytes* stored: make the arena generation
        :meth:`publish_state` will fill, beside the recovery (``ArenaWriter.reserve``)."""
        self.writer.reserve(nbytes)

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
