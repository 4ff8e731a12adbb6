"""Every default that a constructor and the command line share, in one place.

A leaf (it imports nothing of ours): the constructors (``Server``, ``ArenaPublisher``,
the stores, the clients) and argparse (``stateengine serve``, ``stateengine http``) both
read their defaults here, so ``--help`` and the API cannot drift apart. Limits of what
a request may hold (ids, names, the request size) are not defaults: they live in
:mod:`stateengine.limits`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FSYNC",
    "PG_DSN",
    "PG_SCHEMA",
    "SNAPSHOT_BYTES",
    "STORE",
]

MiB: Final = 1 << 20

# --- durability (``serve --store ...``) ---------------------------------------------------

#: the store ``serve`` and ``open_store`` use when none is named
STORE: Final = "log"
#: fsync policy: ``always`` (before each reply) | ``everysec`` | ``no``
FSYNC: Final = "always"
#: log size that triggers a snapshot (the log store; Redis's auto-aof-rewrite rule)
SNAPSHOT_BYTES: Final = 64 * MiB
#: libpq connection string of the postgres store: empty means libpq's own defaults and
#: environment ($PGHOST, $PGPORT, $PGDATABASE, $PGUSER, $PGPASSWORD), as ``psql`` has
PG_DSN: Final = ""
#: the schema holding the postgres store's tables
PG_SCHEMA: Final = "stateengine"
