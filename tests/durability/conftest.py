from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stateengine.server.persistence import Store, open_store

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
BACKENDS = ["log", "sqlite", "postgres", "json"]


def _pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        psycopg.connect(PG_DSN).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at 127.0.0.1:5432 (database test) is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_available() -> bool:
    reason = _pg_unreachable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return True


@pytest.fixture
def pg_schema(pg_available: bool) -> Iterator[str]:
    """A unique schema for one test, dropped afterwards."""
    import psycopg

    schema = f"se_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


StoreFactory = Callable[..., Store]


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``make_store(**options)`` opens the parametrized backend on one data directory;
    every store it opened is closed at the end."""
    backend: str = request.param
    options: dict[str, Any] = {}
    if backend == "postgres":
        options = {"dsn": PG_DSN, "schema": request.getfixturevalue("pg_schema")}
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    opened: list[Store] = []

    def factory(**extra: Any) -> Store:
        store = open_store(data_dir, backend, **{**options, **extra})
        opened.append(store)
        return store

    factory.backend = backend  # type: ignore[attr-defined]
    factory.data_dir = data_dir  # type: ignore[attr-defined]
    yield factory
    for store in opened:
        store.close()
