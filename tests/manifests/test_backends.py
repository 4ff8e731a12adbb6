"""State against real services: Redis (KVS store and load, TTLs) and PostgreSQL (Db load).

Skipped with the reason when a service or driver is missing; under CI=true they fail
instead (see conftest). Every test uses its own key prefix / table and cleans up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stateengine.errors import LoadError, LoadNotFound, LoadParseError, StoreSerializeError
from stateengine.manifests import InMemoryClient, RedisKVS, State

REDIS_URL = os.environ.get("STATEENGINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("STATEENGINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

Write = Callable[..., Path]

KVS = """\
session:
  _store: {client: KVS, key: "session:${id}", ttl: 120}
  id:
    _store: {client: InMemory, key: sid}
  user_id:
    _state: {type: integer}
plain:
  _store: {client: KVS, key: plain}
remote:
  _load: {client: KVS, key: source}
  _state: {type: map}
"""


@pytest.fixture
def kvs(redis_client: Any, unique: str) -> Any:
    client = RedisKVS(REDIS_URL, prefix=f"se-test:{unique}:")
    yield client
    for key in redis_client.scan_iter(f"se-test:{unique}:*"):
        redis_client.delete(key)
    client.close()


def test_redis_store_ttl_lands_in_redis(write: Write, redis_client: Any, kvs: Any) -> None:
    prefix = kvs.prefix
    with State(write("k", KVS), {"KVS": kvs, "InMemory": InMemoryClient()}) as state:
        state.set("k.session.id", "abc")
        state.set("k.session", {"user_id": "7"})  # _store.ttl: 120 from the manifest
        assert redis_client.get(f"{prefix}session:abc") == '{"user_id": 7}'  # JSON, typed
        assert 119_000 < redis_client.pttl(f"{prefix}session:abc") <= 120_000
        state.set("k.session", {"user_id": 8}, ttl=30)  # the argument wins
        assert 29_000 < redis_client.pttl(f"{prefix}session:abc") <= 30_000
        state.set("k.session.user_id", 9)  # a field write keeps the manifest's ttl rule
        assert redis_client.pttl(f"{prefix}session:abc") > 100_000

        state.set("k.plain", [1, "x"], ttl=50)
        state.set("k.plain", [2])  # no argument, no _store.ttl: the TTL is kept
        assert 49_000 < redis_client.pttl(f"{prefix}plain") <= 50_000
        assert redis_client.get(f"{prefix}plain") == "[2]"
        redis_client.delete(f"{prefix}plain")
        state.set("k.plain", True)
        assert redis_client.ttl(f"{prefix}plain") == -1  # nothing to keep: no TTL


def test_redis_expiry_is_seen(write: Write, redis_client: Any, kvs: Any) -> None:
    prefix = kvs.prefix
    mdir = write("k", KVS)
    with State(mdir, {"KVS": kvs, "InMemory": InMemoryClient()}) as state:
        state.set("k.plain", {"a": 1})
        assert state.get("k.plain") == {"a": 1}
        redis_client.pexpire(f"{prefix}plain", 5)
        deadline = time.monotonic() + 5
        while redis_client.exists(f"{prefix}plain") and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not redis_client.exists(f"{prefix}plain")
    fresh = State(mdir, {"KVS": kvs, "InMemory": InMemoryClient()})
    assert fresh.get("k.plain") is None and fresh.exists("k.plain") is False
    assert fresh.delete("k.plain") is False


def test_redis_load_and_errors(write: Write, redis_client: Any, kvs: Any) -> None:
    prefix = kvs.prefix
    with State(write("k", KVS), {"KVS": kvs, "InMemory": InMemoryClient()}) as state:
        with pytest.raises(LoadNotFound):
            state.get("k.remote")
        redis_client.set(f"{prefix}source", "{broken")
        with pytest.raises(LoadParseError, match="not JSON"):
            state.get("k.remote")
        redis_client.set(f"{prefix}source", '{"x": [1, 2]}')
        assert state.get("k.remote") == {"x": [1, 2]}
        with pytest.raises(StoreSerializeError):
            state.set("k.plain", b"bytes are not JSON")


def test_redis_credentials_redacted() -> None:
    pytest.importorskip("redis")
    client = RedisKVS("redis://user:hunter2@127.0.0.1:1/0")
    try:
        assert "hunter2" not in repr(client) and "***" in repr(client)
    finally:
        client.close()


# --- PostgreSQL ---------------------------------------------------------------------------


PG = """\
user:
  _store: {client: InMemory, key: "user:${uid}"}
  _load:
    client: Db
    connection: ${dsn}
    table: TABLE
    where: "id = ${uid} and name <> '%'"
    map: {org_id: org, name: name, score: score}
  org_id:
    _state: {type: integer}
  score:
    _state: {type: float}
uid:
  _store: {client: InMemory, key: uid}
dsn:
  _store: {client: InMemory, key: dsn}
viamap:
  _load:
    client: Db
    connection:
      {driver: postgres, host: 127.0.0.1, port: 5432, database: test,
       username: postgres, password: "${pw}"}
    table: TABLE
    columns: [name]
    where: "id = ${uid}"
pw:
  _store: {client: InMemory, key: pw}
"""


def test_postgres_load(write: Write, pg_conn: Any, unique: str) -> None:
    table = f"se_users_{unique}"
    pg_conn.execute(f"create table {table} (id int primary key, org int, name text, score numeric)")
    try:
        pg_conn.execute(f"insert into {table} values (1, 10, 'ann', 1.5), (2, 20, 'bob', 2)")
        with State(write("pg", PG.replace("TABLE", table))) as state:
            state.set("pg.dsn", PG_DSN)
            state.set("pg.uid", 2)
            assert state.get("pg.user") == {"org_id": 20, "name": "bob", "score": 2.0}
            assert state.get("pg.user.score") == 2.0
            state.set("pg.pw", "pw-not-needed-with-trust")
            assert state.get("pg.viamap") == "bob"
            state.set("pg.uid", 3)
            with pytest.raises(LoadNotFound):
                state.get("pg.user")
            state.set("pg.dsn", "postgresql://postgres:hunter2@127.0.0.1:1/test")
            with pytest.raises(LoadError) as info:
                state.get("pg.user")
            assert "hunter2" not in str(info.value)
    finally:
        pg_conn.execute(f"drop table if exists {table}")
