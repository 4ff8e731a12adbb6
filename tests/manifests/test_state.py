"""State over in-process clients: the get flow, TTL rules, exists, recursion, types,
and the Env, File, SQLite, Http and State (reference) clients."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stateengine.errors import (
    KeyNotDefined,
    LoadClientNotConfigured,
    LoadConfigMissing,
    LoadError,
    LoadNotFound,
    LoadParseError,
    RecursionLimitExceeded,
    StateTypeMismatch,
    StoreClientNotConfigured,
    StoreError,
    StoreSerializeError,
    UnsupportedClient,
)
from stateengine.manifests import EnvClient, FileClient, InMemoryClient, State
from stateengine.manifests.types import cast_value

Write = Callable[..., Path]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingEnv(EnvClient):
    def __init__(self, environ: dict[str, str]) -> None:
        super().__init__(environ)
        self.calls = 0

    def get(self, name: str) -> str | None:
        self.calls += 1
        return super().get(name)


CONN = """\
common:
  _store:
    client: InMemory
    key: connection.common
  _load:
    client: Env
    map: {host: DB_HOST, port: DB_PORT, debug: DB_DEBUG}
  driver: postgres
  port:
    _state: {type: integer}
  debug:
    _state: {type: "boolean?"}
"""

SESSION = """\
user_id:
  _store: {client: InMemory, key: session.user_id}
  _state: {type: integer}
"""


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def memory(clock: Clock) -> InMemoryClient:
    return InMemoryClient(clock=clock)


def make_state(mdir: Path, memory: InMemoryClient, clock: Clock, **clients: Any) -> State:
    return State(mdir, {"InMemory": memory, **clients}, clock=clock)


# --- the get flow ---------------------------------------------------------------------------


def test_get_loads_once_saves_to_store_and_cache(
    write: Write, memory: InMemoryClient, clock: Clock
) -> None:
    env = CountingEnv({"DB_HOST": "db", "DB_PORT": "5432", "DB_DEBUG": "false"})
    with make_state(write("connection", CONN), memory, clock, Env=env) as state:
        value = state.get("connection.common")
        assert value == {"host": "db", "port": 5432, "debug": False, "driver": "postgres"}
        assert memory.get("connection.common") == value  # saved to the store, typed
        assert state.get("connection.common.port") == 5432  # a field of the record
        assert state.get("connection.common.driver") == "postgres"
        assert state.stats["loads"] == 1 and env.calls == 3
        # a new State (new instance cache) reads the store, no load
        other = make_state(write("connection", CONN), memory, clock, Env=env)
        assert other.get("connection.common.host") == "db"
        assert other.stats["loads"] == 0


def test_get_returns_copies(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("connection", CONN), memory, clock)
    state.set("connection.common", {"host": "h", "port": 1})
    got = state.get("connection.common")
    got["host"] = "mutated"
    assert state.get("connection.common.host") == "h"


def test_no_load_config_means_miss(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("session", SESSION), memory, clock)
    assert state.get("session.user_id") is None
    assert state.exists("session.user_id") is False


def test_key_not_defined_through_state(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("session", SESSION), memory, clock)
    with pytest.raises(KeyNotDefined):
        state.get("session.nope")
    with pytest.raises(KeyNotDefined):
        state.set("nofile.x", 1)


def test_field_set_and_delete(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    env = EnvClient({"DB_HOST": "db", "DB_PORT": "1"})
    state = make_state(write("connection", CONN), memory, clock, Env=env)
    assert state.set("connection.common.port", "6543") is True  # cast to the child's type
    assert memory.get("connection.common") == {"port": 6543}  # set never loads
    assert state.stats["loads"] == 0
    assert state.delete("connection.common.port") is True
    assert state.delete("connection.common.port") is False
    assert memory.get("connection.common") == {}


# --- TTL rules (seed 003) ------------------------------------------------------------------

TTL = """\
plain:
  _store: {client: InMemory, key: plain}
withttl:
  _store: {client: InMemory, key: withttl, ttl: 30}
"""


def test_ttl_argument_wins(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("t", TTL), memory, clock)
    state.set("t.withttl", "v", ttl=5)
    assert memory.ttl("withttl") == pytest.approx(5)


def test_ttl_from_manifest_when_no_argument(
    write: Write, memory: InMemoryClient, clock: Clock
) -> None:
    state = make_state(write("t", TTL), memory, clock)
    state.set("t.withttl", "v")
    assert memory.ttl("withttl") == pytest.approx(30)
    clock.now += 31
    assert state.get("t.withttl") is None  # the cache entry expired with the store's
    assert state.exists("t.withttl") is False


def test_no_ttl_anywhere_keeps_current(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("t", TTL), memory, clock)
    state.set("t.plain", "a", ttl=10)
    clock.now += 4
    state.set("t.plain", "b")  # no argument, no _store.ttl: keep the current TTL
    assert memory.ttl("plain") == pytest.approx(6)
    assert state.get("t.plain") == "b"
    clock.now += 7
    assert state.get("t.plain") is None
    state.set("t.plain", "c")
    assert memory.ttl("plain") is None  # nothing to keep: no TTL


def test_bad_ttl_argument(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("t", TTL), memory, clock)
    for bad in (0, -1, "5", True):
        with pytest.raises(StoreError, match="ttl"):
            state.set("t.plain", 1, ttl=bad)  # type: ignore[arg-type]


# --- the instance cache sees other handles' writes ---------------------------------------------


def test_cache_validated_against_versions(
    write: Write, memory: InMemoryClient, clock: Clock
) -> None:
    mdir = write("t", TTL)
    a = make_state(mdir, memory, clock)
    b = make_state(mdir, memory, clock)
    a.set("t.plain", 1)
    assert b.get("t.plain") == 1
    a.set("t.plain", 2)
    assert b.get("t.plain") == 2  # b's cached 1 is stale by version
    a.delete("t.plain")
    assert b.get("t.plain") is None
    assert b.exists("t.plain") is False


def test_version_of_hook_is_used(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    versions: dict[str, int | None] = {}
    state = State(write("t", TTL), {"InMemory": memory}, version_of=versions.get, clock=clock)
    versions["plain"] = 1
    state.set("t.plain", "x")
    hits = state.stats["cache_hits"]
    assert state.get("t.plain") == "x" and state.stats["cache_hits"] == hits + 1
    versions["plain"] = 2  # "another worker wrote": the entry is stale, re-read the store
    reads = state.stats["store_reads"]
    assert state.get("t.plain") == "x"
    assert state.stats["store_reads"] == reads + 1


# --- exists never loads ---------------------------------------------------------------------


def test_exists_never_loads(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    env = CountingEnv({"DB_HOST": "db", "DB_PORT": "5432"})
    state = make_state(write("connection", CONN), memory, clock, Env=env)
    assert state.exists("connection.common") is False
    assert state.exists("connection.common.host") is False
    assert state.stats["loads"] == 0 and env.calls == 0
    state.get("connection.common")
    assert state.stats["loads"] == 1
    assert state.exists("connection.common") and state.exists("connection.common.host")
    assert not state.exists("connection.common.debug")  # not set in the environment
    assert state.stats["loads"] == 1


# --- recursion ------------------------------------------------------------------------------


def test_cycle_is_named(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    mdir = write(
        "loop",
        """
        a:
          _load: {client: State, key: "${b}"}
        b:
          _load: {client: State, key: "${c}"}
        c:
          _load: {client: State, key: "${a}"}
        """,
    )
    state = make_state(mdir, memory, clock)
    with pytest.raises(
        RecursionLimitExceeded, match=r"cycle: loop\.a -> loop\.b -> loop\.c -> loop\.a"
    ):
        state.get("loop.a")
    # the guard is reset after the error
    with pytest.raises(RecursionLimitExceeded, match=r"loop\.b -> loop\.c -> loop\.a -> loop\.b"):
        state.get("loop.b")


def test_cycle_through_store_key(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    mdir = write(
        "k",
        """
        x:
          _store: {client: InMemory, key: "x:${y}"}
        y:
          _store: {client: InMemory, key: "y:${x}"}
        """,
    )
    with pytest.raises(RecursionLimitExceeded, match=r"k\.x -> k\.y -> k\.x"):
        make_state(mdir, memory, clock).get("k.x")


def test_depth_limit_20(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    def chain(n: int) -> str:
        lines = [f"n{i}:\n  _load: {{client: State, key: '${{n{i + 1}}}'}}\n" for i in range(n)]
        lines.append(f"n{n}:\n  _store: {{client: InMemory, key: end}}\n")
        return "".join(lines)

    memory.set("end", "bottom")
    assert make_state(write("ok", chain(19)), memory, clock).get("ok.n0") == "bottom"
    with pytest.raises(RecursionLimitExceeded, match="more than 20 nested keys"):
        make_state(write("deep", chain(20)), memory, clock).get("deep.n0")


# --- _state.type ----------------------------------------------------------------------------

TYPED = """\
n:
  _store: {client: InMemory, key: n}
  _state: {type: integer}
f:
  _store: {client: InMemory, key: f}
  _state: {type: float}
b:
  _store: {client: InMemory, key: b}
  _state: {type: boolean}
l:
  _store: {client: InMemory, key: l}
  _state: {type: list}
m:
  _store: {client: InMemory, key: m}
  _state: {type: map}
s:
  _store: {client: InMemory, key: s}
  _state: {type: "string?"}
fromenv:
  _load: {client: Env, key: NUM}
  _state: {type: integer}
"""


@pytest.mark.parametrize(
    ("path", "given", "stored"),
    [
        ("t.n", "42", 42),
        ("t.n", " -7 ", -7),
        ("t.n", 3.0, 3),
        ("t.f", "2.5", 2.5),
        ("t.f", 2, 2.0),
        ("t.b", "true", True),
        ("t.b", "FALSE", False),
        ("t.b", 1, True),
        ("t.l", "[1, 2]", [1, 2]),
        ("t.m", '{"a": 1}', {"a": 1}),
        ("t.s", None, None),
        ("t.s", "x", "x"),
    ],
)
def test_type_cast_on_set(
    write: Write, memory: InMemoryClient, clock: Clock, path: str, given: Any, stored: Any
) -> None:
    state = make_state(write("t", TYPED), memory, clock)
    state.set(path, given)
    assert memory.get(path.split(".")[1]) == stored
    result = state.get(path)
    assert result == stored and type(result) is type(stored)


@pytest.mark.parametrize(
    ("path", "given"),
    [
        ("t.n", "4x"),
        ("t.n", 1.5),
        ("t.n", True),
        ("t.b", "maybe"),
        ("t.l", "{}"),
        ("t.m", [1]),
        ("t.s", 5),
        ("t.f", "abc"),
        ("t.n", None),
    ],
)
def test_type_mismatch_names_key_and_type(
    write: Write, memory: InMemoryClient, clock: Clock, path: str, given: Any
) -> None:
    state = make_state(write("t", TYPED), memory, clock)
    with pytest.raises(StateTypeMismatch, match=rf"^{path}: value .* _state\.type"):
        state.set(path, given)
    assert memory.get(path.split(".")[1]) is None  # nothing stored


def test_loaded_value_cast_and_mismatch(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    mdir = write("t", TYPED)
    assert make_state(mdir, memory, clock, Env=EnvClient({"NUM": "42"})).get("t.fromenv") == 42
    with pytest.raises(StateTypeMismatch, match=r"t\.fromenv.*'integer' \(loaded\)"):
        make_state(mdir, memory, clock, Env=EnvClient({"NUM": "forty"})).get("t.fromenv")


def test_stored_value_of_wrong_type_is_reported(
    write: Write, memory: InMemoryClient, clock: Clock
) -> None:
    memory.set("n", "not a number")
    with pytest.raises(StateTypeMismatch, match=r"t\.n.*stored in InMemory"):
        make_state(write("t", TYPED), memory, clock).get("t.n")


def test_cast_value_untyped_passthrough() -> None:
    assert cast_value("42", None, "k") == "42"
    assert cast_value("null", "integer?", "k") is None


# --- Env ---------------------------------------------------------------------------------------


def test_env_key_and_missing(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    mdir = write("t", TYPED)
    with pytest.raises(LoadNotFound, match=r"t\.fromenv.*Env"):
        make_state(mdir, memory, clock, Env=EnvClient({})).get("t.fromenv")


def test_env_real_environment(
    write: Write, memory: InMemoryClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUM", "7")
    state = State(write("t", TYPED), {"InMemory": memory}, clock=clock)  # default Env client
    assert state.get("t.fromenv") == 7
    state.close()


def test_load_client_not_configured(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    mdir = write("t", "x:\n  _load: {client: KVS, key: k}\ny:\n  _store: {client: KVS, key: k}\n")
    state = State(mdir, {"InMemory": memory}, defaults=False)
    with pytest.raises(LoadClientNotConfigured, match=r"t\.x: _load\.client is KVS"):
        state.get("t.x")
    with pytest.raises(StoreClientNotConfigured, match=r"t\.y: _store\.client is KVS"):
        state.set("t.y", 1)


def test_load_config_missing(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    mdir = write(
        "t",
        """
        nokey:
          _load: {client: Env}
        unresolved:
          _load: {client: Env, key: "${other}"}
        other:
          _store: {client: InMemory, key: other}
        """,
    )
    state = make_state(mdir, memory, clock)
    with pytest.raises(LoadConfigMissing, match=r"t\.nokey: a Env _load needs key"):
        state.get("t.nokey")
    with pytest.raises(LoadConfigMissing, match=r"\$\{t\.other\} resolved to nothing"):
        state.get("t.unresolved")
    state.set("t.other", "NUM")
    state.clients["Env"] = EnvClient({"NUM": "5"})
    assert state.get("t.unresolved") == "5"


# --- State references ------------------------------------------------------------------------


def test_state_reference(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    mdir = write(
        "cache",
        """
        user:
          _store: {client: InMemory, key: "user:${session.user_id}"}
          _load:
            client: Env
            map: {org_id: ORG}
          org_id:
            _state: {type: integer}
          tenant_id:
            _state: {type: integer}
            _load:
              client: State
              key: ${org_id}
        """,
    )
    write("session", SESSION)
    state = make_state(mdir, memory, clock, Env=EnvClient({"ORG": "12"}))
    state.set("session.user_id", 3)
    assert state.get("cache.user.tenant_id") == 12
    assert memory.get("user:3") == {"org_id": 12}  # the reference itself is not stored
    state.set("cache.user.org_id", 13)
    assert state.get("cache.user.tenant_id") == 13  # follows the referenced key
    assert state.exists("cache.user.tenant_id")
    with pytest.raises(StoreError, match="references another key"):
        state.set("cache.user.tenant_id", 1)


# --- File -----------------------------------------------------------------------------------

FILES = """\
secret:
  _load: {client: File, key: "${name}"}
name:
  _store: {client: InMemory, key: filename}
cfg:
  _load: {client: File, key: conf/app.json, map: {port: port}}
  port:
    _state: {type: integer}
saved:
  _store: {client: File, key: "saved/${name}.json"}
raw:
  _store: {client: File, key: "${name}"}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "conf").mkdir(parents=True)
    (r / "token.txt").write_text("s3cret\n")
    (r / "conf" / "app.json").write_text('{"port": "8080", "other": 1}')
    (r / "bad.json").write_text("{nope")
    return r


def test_file_load_and_store(
    write: Write, memory: InMemoryClient, clock: Clock, root: Path
) -> None:
    state = make_state(write("f", FILES), memory, clock, File=FileClient(root))
    state.set("f.name", "token.txt")
    assert state.get("f.secret") == "s3cret"
    assert state.get("f.cfg") == {"port": 8080}
    state.set("f.name", "x")
    assert state.set("f.saved", {"a": [1, 2]}) is True
    assert json.loads((root / "saved" / "x.json").read_text()) == {"a": [1, 2]}
    fresh = make_state(write("f", FILES), memory, clock, File=FileClient(root))
    assert fresh.get("f.saved") == {"a": [1, 2]}
    assert fresh.exists("f.saved") and fresh.delete("f.saved")
    assert not (root / "saved" / "x.json").exists()
    with pytest.raises(UnsupportedClient, match="no TTL"):
        fresh.set("f.saved", 1, ttl=5)


def test_file_json_parse_error(
    write: Write, memory: InMemoryClient, clock: Clock, root: Path
) -> None:
    state = make_state(write("f", FILES), memory, clock, File=FileClient(root))
    state.set("f.name", "bad.json")
    with pytest.raises(LoadParseError, match="not JSON"):
        state.get("f.secret")
    state.set("f.name", "missing.txt")
    with pytest.raises(LoadNotFound):
        state.get("f.secret")


@pytest.mark.parametrize(
    "key",
    ["../outside.txt", "conf/../../outside.txt", "/etc/passwd", "link/outside.txt", "esc.txt", ""],
)
def test_file_root_escape_refused(
    write: Write, memory: InMemoryClient, clock: Clock, root: Path, tmp_path: Path, key: str
) -> None:
    (tmp_path / "outside.txt").write_text("secret outside")
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    (root / "esc.txt").symlink_to(tmp_path / "outside.txt")
    state = make_state(write("f", FILES), memory, clock, File=FileClient(root))
    state.set("f.name", key)
    with pytest.raises(LoadError) as info:
        state.get("f.secret")
    assert "secret outside" not in str(info.value)
    assert any(
        w in info.value.message for w in ("absolute", "climbs out", "symlink", "invalid key")
    )
    with pytest.raises(StoreError):
        state.set("f.raw", 1)  # refused for writes too
    with pytest.raises(StoreError):
        state.get("f.raw")
    assert (tmp_path / "outside.txt").read_text() == "secret outside"


# --- SQLite -------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("create table users (id integer primary key, org integer, name text)")
        conn.executemany("insert into users values (?, ?, ?)", [(1, 10, "ann"), (2, 20, "o'brien")])
    conn.close()
    return path


DB = """\
user:
  _store: {client: InMemory, key: "user:${session.user_id}"}
  _load:
    client: Db
    connection: "sqlite:///${connection.path}"
    table: users
    where: "id = '${session.user_id}'"
    map: {org_id: org, name: name}
  org_id:
    _state: {type: integer}
byname:
  _load:
    client: Db
    connection: {driver: sqlite, path: "${connection.path}"}
    table: users
    columns: [id]
    where: "name = ${session.name}"
badtable:
  _load: {client: Db, connection: "sqlite:///${connection.path}", table: "users; drop table users"}
"""

DB_SESSION = """\
user_id:
  _store: {client: InMemory, key: session.user_id}
name:
  _store: {client: InMemory, key: session.name}
"""


def test_sqlite_load(write: Write, memory: InMemoryClient, clock: Clock, sqlite_db: Path) -> None:
    write("session", DB_SESSION)
    write("connection", "path:\n  _store: {client: InMemory, key: dbpath}\n")
    state = make_state(write("db", DB), memory, clock)
    try:
        state.set("connection.path", str(sqlite_db))
        state.set("session.user_id", 2)
        assert state.get("db.user") == {"org_id": 20, "name": "o'brien"}
        assert state.get("db.user.org_id") == 20
        assert memory.get("user:2") == {"org_id": 20, "name": "o'brien"}
        state.set("session.name", "o'brien")  # bound as a parameter, quotes are harmless
        assert state.get("db.byname") == 2
        state.set("session.name", "ann")  # a store-less node's cache follows its placeholders
        assert state.get("db.byname") == 1
        state.set("session.user_id", 99)
        with pytest.raises(LoadNotFound, match="no row in 'users'"):
            state.get("db.user")
        with pytest.raises(LoadError, match="not a plain SQL identifier"):
            state.get("db.badtable")
    finally:
        state.close()
    conn = sqlite3.connect(sqlite_db)
    assert conn.execute("select count(*) from users").fetchone() == (2,)
    conn.close()


# --- Http ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    store: ClassVar[dict[str, bytes]] = {}
    seen_auth: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization", ""))
        path = self.path.split("?")[0]
        if path == "/broken":
            self._reply(200, b"{not json")
        elif path == "/fail":
            self._reply(500, b"{}")
        elif self.path in self.store:
            self._reply(200, self.store[self.path])
        else:
            self._reply(404)

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        self.store[self.path] = self.rfile.read(length)
        self._reply(204)

    def do_DELETE(self) -> None:
        self._reply(204 if self.store.pop(self.path, None) is not None else 404)


@pytest.fixture
def http_base() -> Iterator[str]:
    _Handler.store = {"/users/5": b'{"name": "eve", "age": "33", "x": 1}'}
    _Handler.seen_auth = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


HTTP = """\
base:
  _store: {client: InMemory, key: base}
token:
  _store: {client: InMemory, key: token}
user:
  _load:
    client: Http
    url: "${base}/users/5"
    allow_hosts: [127.0.0.1]
    headers: {Authorization: "Bearer ${token}"}
    map: {name: name, age: age}
  age:
    _state: {type: integer}
remote:
  _store:
    client: Http
    url: "${base}/kv/remote"
    allow_hosts: [127.0.0.1]
    headers: {Authorization: "Bearer ${token}"}
broken:
  _load: {client: Http, url: "${base}/broken", allow_hosts: [127.0.0.1]}
fail:
  _load:
    client: Http
    url: "${base}/fail?token=abc"
    allow_hosts: [127.0.0.1]
    headers: {Authorization: "Bearer ${token}"}
"""


def test_http_load_and_store(
    write: Write, memory: InMemoryClient, clock: Clock, http_base: str
) -> None:
    state = make_state(write("h", HTTP), memory, clock)
    state.set("h.base", http_base)
    state.set("h.token", "TOPSECRET")
    assert state.get("h.user") == {"name": "eve", "age": 33}
    assert _Handler.seen_auth[-1] == "Bearer TOPSECRET"
    assert state.set("h.remote", {"v": [1, 2]}) is True
    assert json.loads(_Handler.store["/kv/remote"]) == {"v": [1, 2]}
    fresh = make_state(write("h", HTTP), memory, clock)
    assert fresh.get("h.remote") == {"v": [1, 2]}
    assert fresh.delete("h.remote") is True and fresh.exists("h.remote") is False
    with pytest.raises(LoadParseError, match="invalid JSON"):
        fresh.get("h.broken")
    with pytest.raises(LoadError) as info:
        fresh.get("h.fail")
    assert "TOPSECRET" not in str(info.value) and "abc" not in str(info.value)
    assert "status 500" in str(info.value)


# --- store errors -----------------------------------------------------------------------------


def test_store_serialize_error(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("t", TTL), memory, clock)
    with pytest.raises(StoreSerializeError):
        state.set("t.plain", object())


def test_set_without_store_stays_in_instance(
    write: Write, memory: InMemoryClient, clock: Clock
) -> None:
    state = make_state(write("t", "loose:\n  _state: {type: integer}\n"), memory, clock)
    assert state.set("t.loose", "5") is False
    assert state.get("t.loose") == 5
    assert state.delete("t.loose") is True
    assert state.get("t.loose") is None


def test_thread_safety_smoke(write: Write, memory: InMemoryClient, clock: Clock) -> None:
    state = make_state(write("t", TTL), memory, clock)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                state.set("t.plain", n * 1000 + i)
                assert isinstance(state.get("t.plain"), int)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors


def test_repr_has_no_secrets() -> None:
    assert "s3cret" not in repr(EnvClient({"A": "s3cret"}))
    assert os.environ is not None
