from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from stateengine.testing import ServerProcess


@pytest.fixture
def server(stateengine_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A real ``stateengine serve`` subprocess on a private data directory, with the
    embedded defaults (the kit's ``stateengine_server`` runs ``--fsync no``)."""
    return stateengine_server_factory()


PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A unique PostgreSQL schema for one test (``serve --pg-schema``), dropped afterwards;
    the test is skipped when PostgreSQL is unreachable (failed under ``CI=true``)."""
    try:
        import psycopg

        psycopg.connect(PG_DSN).close()
    except Exception as exc:  # ImportError or psycopg.Error
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {exc}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unavailable: {exc}")
    schema = f"se_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@pytest.fixture
def pg_serve_args(pg_schema: str) -> list[str]:
    """``serve`` arguments for the postgres store on the test database and *pg_schema*."""
    return ["--pg-dsn", PG_DSN, "--pg-schema", pg_schema]
