"""SQL stores: SQLite (standard library) and PostgreSQL (psycopg 3, imported lazily).

Both keep the state itself, not a log: three tables, updated in one transaction per pass.

* ``meta(key, value)`` — ``seq``, ``format``, ``extra`` (msgpack values);
* ``tables(name, ord, state)`` — each table's meta (``Table.state()``, msgpack);
* ``records(tbl, rid, ord, record, lease)`` — ``rid`` is the msgpack of the id (so ``1``
  and ``"1"`` stay apart), ``record`` and ``lease`` are msgpack.

``ord`` keeps insertion order (which ``LIST_RECORDS`` without ``order_by`` shows): a new
row takes the next counter value, an update keeps its row's. That is exactly what
:meth:`TableEngine.apply_change_set` does to a dict, so a restart restores the same order.

fsync policy: SQLite runs in WAL mode with ``synchronous`` FULL (``always``), NORMAL
(``everysec``: the WAL is fsynced at checkpoints; a process crash loses nothing) or OFF
(``no``). PostgreSQL uses ``synchronous_commit`` on (``always``) or off (the WAL writer
flushes within ~3 × ``wal_writer_delay``, 600 ms by default).

Safe across processes as the database is (SQLite file locks, PostgreSQL MVCC); one writer
per data directory or schema is still the rule. Not thread-safe.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from stateengine import defaults
from stateengine.limits import MAX_ID_BYTES, MAX_NAME_BYTES, PG_INDEX_ENTRY_BYTES
from stateengine.server.engine import ChangeSet, TableEngine
from stateengine.server.persist_base import (
    FSYNC_POLICIES,
    CorruptStore,
    PersistenceError,
    Progress,
    RecoveryReport,
    StoreClosed,
    count_records,
    gc_paused,
    lease_in,
    lease_out,
    packb,
    put_record,
    restore_table,
    space_fault,
    unpackb,
)

#: The primary key ``(tbl, rid)`` of the longest table name and id the engine takes (text,
#: plus the msgpack of the id, with headers) stays below PostgreSQL's btree entry limit, so
#: an acknowledged write always fits the index (issue 14 item 1; ``tbl`` holds no NUL).
MAX_KEY_BYTES: Final = MAX_NAME_BYTES + MAX_ID_BYTES + 16
assert MAX_KEY_BYTES < PG_INDEX_ENTRY_BYTES, "stateengine.limits outgrew the SQL stores' key"

SQLITE_NAME: Final = "state.sqlite3"
FORMAT: Final = "stateengine-sql/1"
#: seconds to wait for PostgreSQL when the DSN does not say (libpq would wait forever)
CONNECT_TIMEOUT: Final = 10
_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class _SqlStore:
    """What SQLite and PostgreSQL share; subclasses give the connection and dialect."""

    backend = "sql"
    #: placeholder style of the driver
    ph = "?"

    def __init__(self, fsync: str) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.fsync = fsync
        self._ord = 0
        self._closed = False
        self.stats: dict[str, int] = {"writes": 0}

    # subclass hooks
    def _q(self, name: str) -> str:
        return name

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _blob(self, value: bytes) -> Any:
        return value

    def _create_schema(self) -> None:
        blob = self._blob_type
        for sql in (
            f"CREATE TABLE IF NOT EXISTS {self._q('meta')} (key TEXT PRIMARY KEY, value {blob})",
            f"CREATE TABLE IF NOT EXISTS {self._q('tables')} "
            f"(name TEXT PRIMARY KEY, ord BIGINT NOT NULL, state {blob} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self._q('records')} (tbl TEXT NOT NULL, "
            f"rid {blob} NOT NULL, ord BIGINT NOT NULL, record {blob} NOT NULL, lease {blob}, "
            "PRIMARY KEY (tbl, rid))",
        ):
            self._execute(sql)
        self._commit()

    _blob_type = "BLOB"

    # --- recovery -------------------------------------------------------------------------------

    @gc_paused
    def recover(self, engine: TableEngine, progress: Progress | None = None) -> RecoveryReport:
        """Load every table and record into *engine* (empty), in insertion order.

        :raises CorruptStore: a stored value cannot be decoded, or the format is unknown.
        """
        started = time.monotonic()
        report = RecoveryReport(self.backend)
        p = self.ph
        rows = self._execute(f"SELECT key, value FROM {self._q('meta')}")
        meta = {k: unpackb(bytes(v)) for k, v in rows}
        if meta and meta.get("format") != FORMAT:
            raise CorruptStore(f"{self.backend}: unknown stored format {meta.get('format')!r}")
        total = self._execute(f"SELECT count(*) FROM {self._q('records')}")[0][0]
        try:
            for name, state in self._execute(
                f"SELECT name, state FROM {self._q('tables')} ORDER BY ord"
            ):
                restore_table(engine, name, unpackb(bytes(state)))
            done = 0
            rows = self._execute(
                f"SELECT tbl, rid, record, lease FROM {self._q('records')} ORDER BY ord"
            )
            tables = engine.tables
            for tbl, rid, record, lease in rows:
                put_record(
                    tables[tbl],
                    unpackb(bytes(rid)),
                    unpackb(bytes(record)),
                    lease_in(unpackb(bytes(lease))) if lease is not None else None,
                )
                done += 1
                if progress is not None and done % 65536 == 0:
                    progress(done, total)
            if progress is not None:
                progress(done, total)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptStore(f"{self.backend}: stored state cannot be decoded: {exc}") from None
        engine.seq = int(meta.get("seq", 0))
        report.extra = dict(meta.get("extra") or {})
        ords = self._execute(
            f"SELECT coalesce(max(ord), 0) FROM {self._q('records')} "
            f"UNION ALL SELECT coalesce(max(ord), 0) FROM {self._q('tables')}"
        )
        self._ord = max(int(r[0]) for r in ords)
        if not meta:
            self._execute(
                f"INSERT INTO {self._q('meta')} (key, value) VALUES ({p}, {p})",
                ("format", self._blob(packb(FORMAT))),
            )
            self._commit()
        report.records = count_records(engine)
        report.tables = len(engine.tables)
        report.seq = engine.seq
        report.seconds = time.monotonic() - started
        return report

    # --- writing -------------------------------------------------------------------------------

    def write(self, cs: ChangeSet) -> None:
        """Apply one pass's change set in one transaction (committed per the policy).

        :raises PersistenceError: the database refused or failed; nothing of the pass is
            stored (rolled back). The server must not acknowledge the pass.
        """
        if self._closed:
            raise StoreClosed(f"the {self.backend} store is closed")
        if not cs:
            return
        p = self.ph
        q = self._q
        b = self._blob
        try:
            space_fault()
            for name in cs.dropped:
                self._execute(f"DELETE FROM {q('records')} WHERE tbl = {p}", (name,))
                self._execute(f"DELETE FROM {q('tables')} WHERE name = {p}", (name,))
            if cs.tables:
                rows = []
                for name, state in cs.tables.items():
                    self._ord += 1
                    rows.append((name, self._ord, b(packb(state))))
                self._executemany(
                    f"INSERT INTO {q('tables')} (name, ord, state) VALUES ({p}, {p}, {p}) "
                    "ON CONFLICT (name) DO UPDATE SET state = excluded.state",
                    rows,
                )
            if cs.deletes:
                self._executemany(
                    f"DELETE FROM {q('records')} WHERE tbl = {p} AND rid = {p}",
                    [(t, b(packb(rid))) for t, rid in cs.deletes],
                )
            if cs.puts:
                prow = []
                for t, rid, record, lease in cs.puts:
                    self._ord += 1
                    packed_lease = None if lease is None else b(packb(lease_out(lease)))
                    prow.append((t, b(packb(rid)), self._ord, b(packb(record)), packed_lease))
                self._executemany(
                    f"INSERT INTO {q('records')} (tbl, rid, ord, record, lease) "
                    f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (tbl, rid) DO UPDATE "
                    "SET record = excluded.record, lease = excluded.lease",
                    prow,
                )
            self._upsert_meta("seq", cs.seq)
            self._commit()
        except Exception as exc:
            self._rollback()
            raise PersistenceError(f"{self.backend}: cannot store the pass: {exc}") from exc
        self.stats["writes"] += 1

    def reload(self, engine: TableEngine) -> None:
        """Replace *engine*'s state with the database's (after a failed :meth:`write`,
        whose transaction was rolled back).

        :raises CorruptStore: a stored value cannot be decoded.
        """
        engine.tables = {}
        engine.seq = 0
        self.recover(engine)

    def _upsert_meta(self, key: str, value: Any) -> None:
        p = self.ph
        self._execute(
            f"INSERT INTO {self._q('meta')} (key, value) VALUES ({p}, {p}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, self._blob(packb(value))),
        )

    def maybe_snapshot(self, engine: TableEngine, extra: dict[str, Any] | None = None) -> bool:
        """No snapshots: the database is the state. Stores *extra* when given."""
        if extra is not None:
            self._upsert_meta("extra", extra)
            self._commit()
        return False

    def tick(self) -> None:
        """Nothing periodic to do."""


def _private_sqlite_files(path: str) -> None:
    """The database 0600 before SQLite opens it: SQLite creates it with the umask (0644
    under the usual 022) and gives its ``-wal`` and ``-shm`` files the database's own
    mode, so one private database keeps all three private. Files an older version left
    wider are narrowed (issue 14 item 14)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path + suffix, 0o600)


class SqliteStore(_SqlStore):
    """The state in ``DATA_DIR/state.sqlite3`` (see the module docstring)."""

    backend = "sqlite"

    def __init__(
        self, data_dir: Path, fsync: str = defaults.FSYNC, *, path: str | None = None
    ) -> None:
        super().__init__(fsync)
        self.path = path or str(Path(data_dir) / SQLITE_NAME)
        _private_sqlite_files(self.path)
        self._con = sqlite3.connect(self.path, isolation_level="DEFERRED")
        sync = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}[fsync]
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute(f"PRAGMA synchronous={sync}")
        self._create_schema()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._con.execute(sql, params).fetchall()

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._con.executemany(sql, rows)

    def _commit(self) -> None:
        self._con.commit()

    def _rollback(self) -> None:
        self._con.rollback()

    def close(self) -> None:
        """Commit nothing pending (every write commits), close the connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._con.close()


class PostgresStore(_SqlStore):
    """The state in three tables of a PostgreSQL schema (default ``stateengine``).

    :param dsn: libpq connection string; empty (the default): libpq's defaults and
        environment (``$PGHOST``, ``$PGDATABASE``, ``$PGUSER``, ...). Never logged (it may
        hold a password).
    :param schema: the schema holding the tables, created if missing.
    :raises PersistenceError: psycopg is not installed, or the server cannot be reached.
    """

    backend = "postgres"
    ph = "%s"
    _blob_type = "BYTEA"

    def __init__(
        self,
        data_dir: Path,
        fsync: str = defaults.FSYNC,
        *,
        dsn: str = defaults.PG_DSN,
        schema: str = defaults.PG_SCHEMA,
    ) -> None:
        super().__init__(fsync)
        if not _IDENT.match(schema):
            raise ValueError(f"schema must be a plain identifier, not {schema!r}")
        self.schema = schema
        try:
            import psycopg
        except ImportError as exc:
            raise PersistenceError(
                "the postgres backend needs psycopg 3: pip install 'psycopg[binary]'"
            ) from exc
        try:
            timeout: dict[str, Any] = {}
            if "connect_timeout" not in dsn:
                timeout["connect_timeout"] = CONNECT_TIMEOUT
            self._con = psycopg.connect(dsn, autocommit=False, **timeout)
        except psycopg.Error as exc:
            raise PersistenceError(f"postgres: cannot connect: {exc}") from exc
        sync = "on" if fsync == "always" else "off"
        self._con.execute(f"SET synchronous_commit = {sync}")
        self._con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self._create_schema()

    def __repr__(self) -> str:  # the DSN may carry a password: never shown
        return f"PostgresStore(schema={self.schema!r}, fsync={self.fsync!r})"

    def _q(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self._con.execute(sql.encode(), params)
        return cur.fetchall() if cur.description is not None else []

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._con.cursor() as cur:
            cur.executemany(sql.encode(), rows)

    def _commit(self) -> None:
        self._con.commit()

    def _rollback(self) -> None:
        self._con.rollback()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._con.close()
