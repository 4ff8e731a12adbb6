"""``Db``: load rows from SQL databases: SQLite (built in) and PostgreSQL (psycopg 3).

The connection comes from the manifest's ``_load.connection``: a string (a DSN such
as ``postgresql://user:pw@host/db``, ``sqlite:///abs/path.db``, ``sqlite:rel/path.db``,
or a path ending in ``.db``/``.sqlite``/``.sqlite3``) or a mapping (often another key's
value, ``connection: ${connection.common}``) with ``driver`` (``sqlite``,
``postgres``/``postgresql``) and ``path`` (SQLite) or ``host``, ``port``, ``database``,
``username``, ``password``, ``sslmode`` (PostgreSQL).

Placeholders in ``where`` are bound as query parameters (never pasted into the SQL);
table and column names must be plain identifiers (``schema.table`` allowed) and are
quoted. Connections are cached per connection spec, re-opened after ``fork`` (a child
never uses its parent's socket), and closed by :meth:`DbClient.close`. Passwords never
appear in ``repr`` or errors. Thread-safe: one lock serialises queries.

psycopg is imported on the first PostgreSQL query (``pip install 'psycopg[binary]'``).
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from stateengine.errors import LoadNotFound
from stateengine.manifests.clients import ClientAdapter, LoadRequest
from stateengine.manifests.redact import redact

__all__ = [
    "ADAPTER",
    "MARKER",
    "DbAdapter",
    "DbClient",
    "DbError",
    "parse_connection",
]


#: The driver-neutral parameter marker the State puts into ``where``.
MARKER: Final = "{?}"
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?\Z")
_SQLITE_SUFFIXES: Final = (".db", ".sqlite", ".sqlite3")


class DbError(RuntimeError):
    """A bad connection spec, identifier or query; the State reports it as a LoadError."""


def _quote(ident: str) -> str:
    if not _IDENT.match(ident):
        raise DbError(f"Db: {ident!r} is not a plain SQL identifier")
    return ".".join(f'"{part}"' for part in ident.split("."))


def _plain(value: Any) -> Any:
    """A column value as a msgpack value."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def parse_connection(connection: Any) -> tuple[str, dict[str, Any]]:
    """``(driver, params)`` for a connection spec; driver is ``sqlite`` or ``postgres``.

    :raises DbError: an unknown driver or a spec of the wrong shape.
    """
    if isinstance(connection, str):
        spec = connection.strip()
        if spec.startswith(("postgresql://", "postgres://")):
            return "postgres", {"conninfo": spec}
        if spec.startswith("sqlite:"):
            rest = spec.removeprefix("sqlite:")
            if rest.startswith("//"):
                rest = rest[2:]
            return "sqlite", {"path": rest or ":memory:"}
        if spec.endswith(_SQLITE_SUFFIXES) or spec == ":memory:":
            return "sqlite", {"path": spec}
        raise DbError(
            f"Db: cannot tell the driver of connection {redact(spec)!r};"
            " use postgresql://..., sqlite:///path, or a mapping with 'driver'"
        )
    if isinstance(connection, Mapping):
        driver = str(connection.get("driver", "")).lower()
        if driver in ("sqlite", "sqlite3"):
            path = connection.get("path") or connection.get("database")
            if not isinstance(path, str) or not path:
                raise DbError("Db: a sqlite connection needs 'path'")
            return "sqlite", {"path": path}
        if driver in ("postgres", "postgresql", "pgsql"):
            params: dict[str, Any] = {}
            for src, dst in (
                ("host", "host"),
                ("port", "port"),
                ("database", "dbname"),
                ("dbname", "dbname"),
                ("username", "user"),
                ("user", "user"),
                ("password", "password"),
                ("sslmode", "sslmode"),
            ):
                if connection.get(src) is not None:
                    params[dst] = connection[src]
            return "postgres", params
        raise DbError(
            f"Db: unknown driver {connection.get('driver')!r} in connection"
            f" {redact(dict(connection))!r}; use sqlite or postgres"
        )
    raise DbError(
        f"Db: a connection must be a string or a mapping, not {type(connection).__name__}"
    )


class DbClient:
    """SQL loads. :param connect_timeout: seconds to wait for a PostgreSQL connection."""

    def __init__(self, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout
        self._conns: dict[tuple[str, str], Any] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DbClient(open={len(self._conns)})"

    def _connection(self, driver: str, params: dict[str, Any]) -> Any:
        if os.getpid() != self._pid:  # forked: the parent's sockets are not ours to use
            self._conns = {}
            self._pid = os.getpid()
        key = (driver, repr(sorted(params.items())))
        conn = self._conns.get(key)
        if conn is not None:
            return conn
        if driver == "sqlite":
            conn = sqlite3.connect(params["path"], check_same_thread=False, timeout=5.0)
        else:
            try:
                psycopg = importlib.import_module("psycopg")
            except ImportError as exc:
                raise ImportError(
                    "PostgreSQL loads need psycopg 3: pip install -e '.[postgres]'"
                    " (from the checkout)"
                ) from exc
            kwargs = {k: v for k, v in params.items() if k != "conninfo"}
            try:
                conn = psycopg.connect(
                    params.get("conninfo", ""),
                    autocommit=True,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    **kwargs,
                )
            except psycopg.Error as exc:
                raise DbError(f"Db: cannot connect: {redact(str(exc))}") from None
        self._conns[key] = conn
        return conn

    def get(
        self,
        connection: Any,
        table: str,
        columns: Sequence[str],
        where: str | None,
        params: Sequence[Any],
    ) -> list[dict[str, Any]] | None:
        """Rows of *table* matching *where* (``{?}`` markers bound to *params*)."""
        driver, conn_params = parse_connection(connection)
        cols = ", ".join(_quote(c) for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM {_quote(table)}"
        if where:
            if driver == "postgres":
                where = where.replace("%", "%%").replace(MARKER, "%s")
            else:
                where = where.replace(MARKER, "?")
            sql += f" WHERE {where}"
        with self._lock:
            conn = self._connection(driver, conn_params)
            try:
                cur = conn.execute(sql, tuple(params))
                try:
                    names = [d[0] for d in cur.description or ()]
                    rows = cur.fetchall()
                finally:
                    cur.close()
            except Exception as exc:  # sqlite3.Error / psycopg.Error, both drivers
                if driver == "sqlite":
                    pass
                else:
                    self._drop(driver, conn_params)
                raise DbError(
                    f"Db ({driver}) query on {table!r} failed: {redact(str(exc))}"
                ) from None
        return [{n: _plain(v) for n, v in zip(names, row, strict=True)} for row in rows]

    def _drop(self, driver: str, params: dict[str, Any]) -> None:
        conn = self._conns.pop((driver, repr(sorted(params.items()))), None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                pass

    def close(self) -> None:
        """Close every cached connection (idempotent)."""
        with self._lock:
            conns, self._conns = self._conns, {}
        for conn in conns.values():
            try:
                conn.close()
            except Exception:  # closing is best effort; the connection is dropped regardless
                pass


class DbAdapter(ClientAdapter):
    """``_load.client: Db``: the first row of ``table`` matching ``where`` (placeholders
    bound as parameters), its ``columns`` or the fields ``map`` names; load only."""

    name = "Db"
    stores = False
    maps_itself = True

    @classmethod
    def default(cls) -> DbClient:
        return DbClient()

    def load(self, request: LoadRequest) -> Any:
        connection = request.need("connection")
        table = str(request.need("table"))
        mapping: dict[str, str] = dict(request.config.get("map") or {})
        columns: list[str] = list(request.config.get("columns") or mapping.values())
        where, params = request.sql_where()
        rows = self.client.get(connection, table, list(dict.fromkeys(columns)), where, params)
        if not rows:
            raise LoadNotFound(
                f"{request.path}: no row in {table!r}"
                + (f" where {where!r} with {redact(params)!r}" if where else "")
            )
        row = rows[0]
        if mapping:
            return {k: row[col] for k, col in mapping.items() if col in row}
        if len(columns) == 1:
            return row.get(columns[0])
        return row


ADAPTER = DbAdapter
