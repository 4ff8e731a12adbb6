"""The shared-memory arena: one writer publishes versions, workers read lock-free.

Design, layout table and invariants: ``shm/DESIGN.md``. Imports nothing of ours
but :mod:`stateengine.errors`.

Writer side (the server process only)::

    w = ArenaWriter.create("stateengine", initial_size=16 << 20, max_size=4 << 30,
                           reader_slots=128, grace=0.05, expiry=10.0)
    w.name                                   # what readers attach to (a file path)
    w.commit(seq, puts=[(table, id, msgpack_bytes)], deletes=[(table, id)],
             dropped_tables=(), meta={table: bytes_or_None})
    w.reclaim(); w.stats(); w.close(unlink=True)

Reader side (any process, child or not)::

    r = ArenaReader.attach(name)
    r.version; r.get(table, id); r.get_raw(table, id); r.get_cached(table, id)
    with r.snapshot() as snap:
        snap.version; snap.get(t, id); snap.items(t); snap.ids(t); snap.tables(); snap.meta(t)
    r.wait_for(seq, timeout); r.writer_pid; r.writer_alive(); r.close()

Leftovers of a killed writer: :func:`cleanup_stale` (dry run: :func:`find_stale`).

Errors: ``CapacityError`` (names the setting to raise), ``SnapshotExpired`` (a
snapshot held past ``expiry``, or reads that could not be validated — retry),
``PayloadTooLarge`` (a record over ``max_record_size``).
"""

from stateengine.shm.codec import MsgpackCodec
from stateengine.shm.reader import ArenaReader, Snapshot
from stateengine.shm.stale import cleanup_stale, find_stale
from stateengine.shm.writer import META_TABLE, ArenaWriter

__all__ = [
    "META_TABLE",
    "ArenaReader",
    "ArenaWriter",
    "MsgpackCodec",
    "Snapshot",
    "cleanup_stale",
    "find_stale",
]
