"""Every default that a constructor and the command line share, in one place.

A leaf (it imports nothing of ours): the constructors (``Server``, ``ArenaPublisher`` and
``ArenaWriter``, the stores, the clients, the gateway) and argparse (``stateengine serve``,
``stateengine http``) both read their defaults here, so that ``--help`` and the API cannot
drift apart (tests/unit/test_defaults.py compares them). Limits on what a request may hold
(ids, names, the request size) are not defaults: they live in :mod:`stateengine.limits`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ARENA_EXPIRY",
    "ARENA_GRACE",
    "ARENA_MAX_SIZE",
    "ARENA_SIZE",
    "CLIENT_TIMEOUT",
    "CLI_TIMEOUT",
    "DEMO_LINGER",
    "FEED_HWM",
    "FSYNC",
    "HTTP_BIND",
    "KEYS_DIR",
    "PG_DSN",
    "PG_SCHEMA",
    "READER_SLOTS",
    "SLOW_MS",
    "SNAPSHOT_BYTES",
    "STORE",
    "SYNC_INTERVAL",
]

MiB: Final = 1 << 20

# --- durability (``serve --store ...``) ---------------------------------------------------

#: the store ``serve`` and ``open_store`` use when none is named
STORE: Final = "log"
#: fsync policy: ``always`` (before each reply) | ``everysec`` | ``no``
FSYNC: Final = "always"
#: seconds between fsyncs under ``everysec`` (the log store)
SYNC_INTERVAL: Final = 1.0
#: log size that triggers a snapshot (the log store; Redis's auto-aof-rewrite rule)
SNAPSHOT_BYTES: Final = 64 * MiB
#: libpq connection string of the postgres store: empty means libpq's own defaults and
#: environment ($PGHOST, $PGPORT, $PGDATABASE, $PGUSER, $PGPASSWORD), as ``psql`` has;
#: never a test database
PG_DSN: Final = ""
#: the schema holding the postgres store's tables
PG_SCHEMA: Final = "stateengine"

# --- the shared-memory arena (``serve --arena-size/--arena-max-size/--reader-slots``) ------

#: bytes of the arena's first generation (allocated up front in /dev/shm)
ARENA_SIZE: Final = 16 * MiB
#: the arena grows up to this many bytes; past it a commit is refused
ARENA_MAX_SIZE: Final = 4096 * MiB
#: readers (worker processes, each client with the arena on) that can hold snapshots at once
READER_SLOTS: Final = 128
#: seconds a retired block waits before reuse (covers a pin not yet visible)
ARENA_GRACE: Final = 0.05
#: seconds after which a pinned snapshot is ignored by reclamation (``SnapshotExpired``)
ARENA_EXPIRY: Final = 10.0

# --- the writer ---------------------------------------------------------------------------

#: change-feed messages queued per subscriber before it misses some (both ends)
FEED_HWM: Final = 100_000
#: requests slower than this are logged
SLOW_MS: Final = 100.0

# --- clients and the command line ---------------------------------------------------------

#: seconds a client waits for each reply (``Client``, ``AsyncClient``, the gateway's)
CLIENT_TIMEOUT: Final = 10.0
#: seconds ``stateengine call`` and ``stats`` wait per reply (a person is waiting)
CLI_TIMEOUT: Final = 5.0
#: where ``stateengine http`` and ``serve --http`` examples listen
HTTP_BIND: Final = "127.0.0.1:8080"
#: where ``stateengine keygen`` writes a client's secret certificate
KEYS_DIR: Final = "stateengine-keys"
#: seconds ``stateengine demo --http`` keeps the dashboard up after the demo
DEMO_LINGER: Final = 60.0
