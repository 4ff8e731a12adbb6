"""Fixtures for the manifest tests: manifest directories, Redis and PostgreSQL.

Tests that need Redis (127.0.0.1:6379) or PostgreSQL (127.0.0.1:5432, database
``test``, user ``postgres``) skip with the reason when the service or its driver is
missing, except under ``CI=true``, where they fail instead: CI must run them.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REDIS_URL = os.environ.get("STATEENGINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("STATEENGINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(what: str, exc: BaseException) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true but unavailable: {exc!r}")
    pytest.skip(f"{what} unavailable: {exc!r}")


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write("cache", yaml_text, ext=".yml")`` → the manifest dir (dedented text)."""
    mdir = tmp_path / "manifests"
    mdir.mkdir()

    def _write(name: str, text: str, ext: str = ".yml") -> Path:
        (mdir / f"{name}{ext}").write_text(textwrap.dedent(text), encoding="utf-8")
        return mdir

    return _write


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def redis_client() -> Iterator[Any]:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=2)
        client.ping()
    except Exception as exc:  # ImportError or a connection error: both mean "not here"
        unavailable(f"Redis at {REDIS_URL}", exc)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def pg_conn() -> Iterator[Any]:
    try:
        import psycopg

        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:
        unavailable(f"PostgreSQL at {PG_DSN}", exc)
    try:
        yield conn
    finally:
        conn.close()
