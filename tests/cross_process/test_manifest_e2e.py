"""Manifest state end to end: ``stateengine serve`` as a subprocess, real sources.

``stateengine.client.state.State`` runs in this process and, where stated, in worker
processes (multiprocessing spawn). Loads come from a real SQLite file, the local
PostgreSQL, the environment, files and a local HTTP server; values are stored in the
server's arena (``InMemory``) and in the local Redis (``KVS``). One server serves the
module; every test uses its own manifest directory and unique store keys.

Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, database ``test``, user
``postgres``) tests skip with the reason when the service or driver is missing, except
under ``CI=true``, where they fail.

The single-flight tests extend ``test_manifest_state.py::test_concurrent_misses_load_once``
(workers released together onto a slow load): here the one load blocks until the other
seven workers are seen waiting on the key, so "one load" is not luck of timing.
"""

from __future__ import annotations

import http.server
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from stateengine.client.client import Client
from stateengine.client.state import TABLE, State
from stateengine.errors import (
    RecordNotFound,
    RecursionLimitExceeded,
    StateEngineError,
    StateNotFound,
    StoreConfigMissing,
    StoreError,
)
from stateengine.manifests import EnvClient, FileClient, RedisKVS
from stateengine.testing import ServerProcess

CTX = mp.get_context("spawn")
TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"
REDIS_URL = os.environ.get("STATEENGINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("STATEENGINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(what: str, exc: BaseException) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true but unavailable: {exc!r}")
    pytest.skip(f"{what} unavailable: {exc!r}")


def wait_for(cond: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("e2e") / "data") as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.connect() as c:
        yield c


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    d = tmp_path / "manifests"
    d.mkdir()
    return d


def write(mdir: Path, name: str, text: str, uid: str) -> Path:
    """Write manifest *name* (dedented; ``@U@`` becomes the test's unique id)."""
    (mdir / f"{name}.yml").write_text(textwrap.dedent(text).replace("@U@", uid))
    return mdir


def stored(client: Client, key: str) -> dict[str, Any] | None:
    try:
        return dict(client.get_record(TABLE, key))
    except (RecordNotFound, StateNotFound):
        return None


# --- the example directory and serve --manifests -------------------------------------------


def test_example_manifests_serve_and_load(tmp_path: Path, uid: str) -> None:
    """``serve --manifests examples/manifests`` starts; the example's chain loads from
    Env and a real SQLite file into the arena, with its TTL; tenant_id is a State
    reference; flags load from a file."""
    subprocess.run(
        [sys.executable, str(EXAMPLES / "make_db.py")], check=True, capture_output=True, timeout=30
    )
    with ServerProcess(tmp_path / "data", "--manifests", str(EXAMPLES)) as proc:
        wait_for(lambda: "manifests:" in proc.output(), "the manifests start line", 10)
        assert f"  manifests: {EXAMPLES} (3 files, 8 keys)" in proc.output()
        env = EnvClient({"APP_USER_ID": "2", "APP_DB_PATH": str(EXAMPLES / "data" / "app.db")})
        files = FileClient(EXAMPLES / "data")
        with proc.connect() as c, State(EXAMPLES, c, {"Env": env, "File": files}) as st:
            before = time.time()
            assert st.get("cache.user.tenant_id") == 10  # Env → SQLite → State reference
            assert st.get("cache.user.org_id") == 10
            assert st.get("cache.user.id") == 2
            assert st.get("flags.features") == {"beta": True, "max_upload_mb": 25}
            record = c.get_record(TABLE, "user:2:org")
            assert record["status"] == "ready" and record["value"] == 10
            assert before + 299 <= record["expires"] <= time.time() + 301  # _store.ttl: 300
            assert stored(c, "user:2:tenant") is None  # a State reference is not stored


def identities(manifests: Path, server: ServerProcess) -> list[int]:
    """``cache.user.org_id`` as two processes with different callers see it, one after
    the other (each ``State`` has its own cache, as each process does)."""
    db = str(EXAMPLES / "data" / "app.db")
    out = []
    with server.connect() as c:
        for user in ("2", "3"):  # grace (org 10), then edsger (org 20)
            env = EnvClient({"APP_USER_ID": user, "APP_DB_PATH": db})
            with State(manifests, c, {"Env": env}) as st:
                out.append(st.get("cache.user.org_id"))
    return out


def test_the_example_keeps_each_callers_identity_apart(tmp_path: Path) -> None:
    """A run as user 3 after one as user 2 gets user 3's organisation. The control: with
    the identity stored under one shared key (the example's old ``_store``), the second
    caller is handed the first one's identity for the TTL."""
    subprocess.run(
        [sys.executable, str(EXAMPLES / "make_db.py")], check=True, capture_output=True, timeout=30
    )
    shared = tmp_path / "shared"
    shutil.copytree(EXAMPLES, shared, ignore=shutil.ignore_patterns("data"))
    text = (shared / "cache.yml").read_text()
    assert "    _store: null  # per process" in text
    (shared / "cache.yml").write_text(
        text.replace("    _store: null  # per process", '    _store: {key: "user:current"}  #', 1)
    )
    with ServerProcess(tmp_path / "data") as server:
        assert identities(EXAMPLES, server) == [10, 20]
    with ServerProcess(tmp_path / "data2") as server:
        assert identities(shared, server) == [10, 10]  # user 3 got user 2's organisation


def test_serve_refuses_a_broken_manifest_dir(tmp_path: Path) -> None:
    broken = tmp_path / "manifests"
    shutil.copytree(EXAMPLES, broken, ignore=shutil.ignore_patterns("data"))
    text = (broken / "cache.yml").read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if "_load: {client: State" in t)
    text[line - 1] = text[line - 1].replace("client: State", "client: Stat")
    (broken / "cache.yml").write_text("\n".join(text) + "\n")
    (broken / "more.yml").write_text('a:\n  _load: {client: Env, key: "${nosuch.b}"}\n')
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(data)]
    out = subprocess.run(
        [*cmd, "--manifests", str(broken)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1, out
    assert f"cache.yml:{line}:" in out.stderr and "unknown client 'Stat'" in out.stderr
    assert "more.yml:1: node more.a: _load.key placeholder ${nosuch.b}" in out.stderr
    assert "serving" not in out.stdout
    assert not (data / "server.json").exists()  # it never bound


# --- sources: SQLite, PostgreSQL, Env, File, HTTP ------------------------------------------


def test_sqlite_load_into_the_arena(client: Client, mdir: Path, tmp_path: Path, uid: str) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orgs (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO orgs VALUES (7, 'acme')")
    conn.close()
    write(
        mdir,
        "org",
        f"""\
        id: 7
        name:
          _store: {{client: InMemory, key: "org:@U@"}}
          _load:
            client: Db
            connection: "sqlite:///{db}"
            table: orgs
            columns: [name]
            where: "id = ${{id}}"
        """,
        uid,
    )
    with State(mdir, client) as st:
        assert st.get("org.name") == "acme"
        assert st.stats["loads"] == 1
    assert client.get_record(TABLE, f"org:{uid}")["value"] == "acme"


@pytest.fixture
def pg_table(uid: str) -> Iterator[str]:
    try:
        import psycopg

        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # ImportError or a connection error: both mean "not here"
        unavailable(f"PostgreSQL at {PG_DSN}", exc)
    table = f"e2e_users_{uid}"
    try:
        conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, email text, org integer)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a@x.io', 5), (2, 'b@x.io', 6)")
        yield table
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()


def test_postgres_load_into_the_arena(client: Client, mdir: Path, uid: str, pg_table: str) -> None:
    write(
        mdir,
        "acct",
        f"""\
        id:
          _load: {{client: Env, key: E2E_ID_@U@}}
          _state: {{type: integer}}
        user:
          _store: {{client: InMemory, key: "acct:@U@:${{id}}"}}
          _load:
            client: Db
            connection: "{PG_DSN}"
            table: {pg_table}
            map: {{email: email, org: org}}
            where: "id = ${{id}}"
        """,
        uid,
    )
    env = EnvClient({f"E2E_ID_{uid}": "2"})
    with State(mdir, client, {"Env": env}) as st:
        assert st.get("acct.user") == {"email": "b@x.io", "org": 6}
        assert st.get("acct.user.org") == 6
    assert client.get_record(TABLE, f"acct:{uid}:2")["value"] == {"email": "b@x.io", "org": 6}


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("X-Token")))
        if not self.path.startswith("/users/"):
            self.send_error(404)
            return
        body = json.dumps({"id": self.path.rsplit("/", 1)[-1], "plan": "pro"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    handler = type("Handler", (_Handler,), {"seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_env_file_and_http_loads(
    client: Client,
    mdir: Path,
    tmp_path: Path,
    uid: str,
    http_base: tuple[str, list[tuple[str, str | None]]],
) -> None:
    base, seen = http_base
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "motd.txt").write_text("hello\n")
    write(
        mdir,
        "src",
        f"""\
        _store: {{client: InMemory}}
        user_id:
          _store: {{key: "src:@U@:uid"}}
          _load: {{client: Env, key: E2E_UID_@U@}}
          _state: {{type: integer}}
        token:
          _store: null
          _load: {{client: Env, key: E2E_TOKEN_@U@}}
        motd:
          _store: {{key: "src:@U@:motd"}}
          _load: {{client: File, key: motd.txt}}
        profile:
          _store: {{key: "src:@U@:profile:${{user_id}}"}}
          _load:
            client: Http
            url: "{base}/users/${{user_id}}"
            headers: {{X-Token: "${{token}}"}}
        """,
        uid,
    )
    env = EnvClient({f"E2E_UID_{uid}": "41", f"E2E_TOKEN_{uid}": "s3cret"})
    clients = {"Env": env, "File": FileClient(tmp_path / "files")}
    with State(mdir, client, clients) as st:
        assert st.get("src.user_id") == 41
        assert st.get("src.motd") == "hello"
        assert st.get("src.profile") == {"id": "41", "plan": "pro"}
        assert st.get("src.profile") == {"id": "41", "plan": "pro"}  # cached: one request
    assert seen == [("/users/41", "s3cret")]
    assert client.get_record(TABLE, f"src:{uid}:profile:41")["value"]["plan"] == "pro"
    assert client.get_record(TABLE, f"src:{uid}:motd")["value"] == "hello"


# --- Redis store with TTL -------------------------------------------------------------------


@pytest.fixture
def redis_kvs(uid: str) -> Iterator[tuple[RedisKVS, Any, str]]:
    try:
        import redis

        raw = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=2)
        raw.ping()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    prefix = f"e2e:{uid}:"
    try:
        yield RedisKVS(REDIS_URL, prefix=prefix), raw, prefix
    finally:
        keys = list(raw.scan_iter(f"{prefix}*"))
        if keys:
            raw.delete(*keys)
        raw.close()


def test_redis_store_with_ttl_expires(
    client: Client, mdir: Path, uid: str, redis_kvs: tuple[RedisKVS, Any, str]
) -> None:
    kvs, raw, prefix = redis_kvs
    write(
        mdir,
        "sess",
        """\
        token:
          _store: {client: KVS, key: "token", ttl: 1}
          _load: {client: Env, key: E2E_TOK_@U@}
        """,
        uid,
    )
    calls: list[str] = []

    class CountingEnv(EnvClient):
        def get(self, name: str) -> str | None:
            calls.append(name)
            return super().get(name)

    env = CountingEnv({f"E2E_TOK_{uid}": "abc"})
    with State(mdir, client, {"Env": env, "KVS": kvs}) as st:
        assert st.get("sess.token") == "abc"
        assert json.loads(raw.get(f"{prefix}token")) == "abc"
        assert 0 < raw.pttl(f"{prefix}token") <= 1000
        wait_for(lambda: raw.get(f"{prefix}token") is None, "the Redis key to expire", 5)
        assert raw.pttl(f"{prefix}token") == -2
        assert st.exists("sess.token") is False  # expired in the instance cache too
        assert st.get("sess.token") == "abc"  # a miss again: loads again
        assert len(calls) == 2
        assert st.set("sess.token", "xyz", ttl=30) is True
        assert 1000 < raw.pttl(f"{prefix}token") <= 30_000


# --- the arena across worker processes --------------------------------------------------------


def remote_worker(conn: Connection, endpoint: str, data_dir: str, mdir: str) -> None:
    """Answer ``(method, args)`` with ``("ok", result)`` from a State in this process."""
    with Client(endpoint, Path(data_dir)) as c, State(mdir, c, {"Env": EnvClient({})}) as st:
        while conn.poll(TIMEOUT):
            msg = conn.recv()
            if msg is None:
                return
            method, args = msg
            try:
                result = dict(st.stats) if method == "stats" else getattr(st, method)(*args)
                conn.send(("ok", result))
            except StateEngineError as exc:
                conn.send(("error", [type(exc).__name__, exc.message]))


class Remote:
    """A State in another process."""

    def __init__(self, server: ServerProcess, mdir: Path) -> None:
        self.conn, child = CTX.Pipe()
        args = (child, server.endpoint, str(server.data_dir), str(mdir))
        self.proc = CTX.Process(target=remote_worker, args=args)
        self.proc.start()
        child.close()

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.conn.send((method, args))
            assert self.conn.poll(TIMEOUT), f"remote {method} did not answer"
            status, result = self.conn.recv()
            if status != "ok":
                raise AssertionError(f"remote {method}{args}: {result}")
            return result

        return call

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(TIMEOUT)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(10)
        assert self.proc.exitcode == 0


def test_arena_values_are_seen_by_another_worker_at_once(
    server: ServerProcess, client: Client, mdir: Path, uid: str
) -> None:
    write(
        mdir,
        "shared",
        """\
        greeting:
          _store: {client: InMemory, key: "greeting:@U@"}
          _load: {client: Env, key: E2E_GREETING_@U@}
        flags:
          _store: {client: InMemory, key: "flags:@U@"}
        """,
        uid,
    )
    remote = Remote(server, mdir)
    try:
        env = EnvClient({f"E2E_GREETING_{uid}": "hi"})
        with State(mdir, client, {"Env": env}) as st:
            assert st.get("shared.greeting") == "hi"  # loaded here, stored in the arena
            assert remote.get("shared.greeting") == "hi"  # its Env is empty: no load there
            assert remote.stats()["loads"] == 0
            st.set("shared.flags", {"beta": True})
            assert remote.get("shared.flags") == {"beta": True}  # no wait, no poll
            st.set("shared.flags", {"beta": False})
            assert remote.get("shared.flags") == {"beta": False}  # its cache is validated
            remote.set("shared.flags", {"beta": 1})
            assert st.get("shared.flags") == {"beta": 1}
            assert st.delete("shared.flags") is True
            assert remote.exists("shared.flags") is False
            assert remote.get("shared.flags") is None
    finally:
        remote.close()


# --- placeholders and recursion -----------------------------------------------------------


def test_unresolvable_store_key_placeholder_is_a_typed_error_storing_nothing(
    client: Client, mdir: Path, uid: str
) -> None:
    write(
        mdir,
        "bad",
        """\
        user_id:
          _state: {type: integer}
        profile:
          _store: {client: InMemory, key: "bad:@U@:${user_id}"}
          _load: {client: Env, key: E2E_PROFILE_@U@}
        """,
        uid,
    )
    env = EnvClient({f"E2E_PROFILE_{uid}": "p"})
    with State(mdir, client, {"Env": env}) as st:
        with pytest.raises(StoreConfigMissing, match=r"\$\{bad\.user_id\}") as info:
            st.set("bad.profile", "x")
        assert isinstance(info.value, StoreError)
        with pytest.raises(StoreError, match=r"\$\{bad\.user_id\}"):
            st.get("bad.profile")
        with pytest.raises(StoreConfigMissing):  # exists cannot name the key either
            st.exists("bad.profile")
    records = client.list_records(TABLE) if _has_table(client) else []
    assert not [r for r in records if str(r["id"]).startswith(f"bad:{uid}")]


def _has_table(client: Client) -> bool:
    try:
        client.get_state_info(TABLE)
    except StateNotFound:
        return False
    return True


def test_a_cycle_and_a_too_deep_chain_raise_recursion_limit(
    client: Client, mdir: Path, uid: str
) -> None:
    chain = "\n".join(f"k{i}:\n  _load: {{client: State, key: '${{k{i + 1}}}'}}" for i in range(25))
    write(
        mdir,
        "loop",
        """\
        a:
          _store: {client: InMemory, key: "loop:@U@:a"}
          _load: {client: State, key: "${b}"}
        b:
          _load: {client: State, key: "${c}"}
        c:
          _load: {client: State, key: "${a}"}
        """,
        uid,
    )
    (mdir / "deep.yml").write_text(chain + "\nk25:\n  _load: {client: Env, key: E2E_END}\n")
    with State(mdir, client, {"Env": EnvClient({"E2E_END": "end"})}) as st:
        with pytest.raises(RecursionLimitExceeded) as info:
            st.get("loop.a")
        assert "loop.a -> loop.b -> loop.c -> loop.a" in info.value.message
        with pytest.raises(RecursionLimitExceeded, match="more than 20 nested keys"):
            st.get("deep.k0")
        assert st.get("deep.k6") == "end"  # 20 keys deep: within the limit
    assert stored(client, f"loop:{uid}:a") is None


# --- one load per miss, with all eight workers provably waiting ---------------------------------


@dataclass
class FlightJob:
    name: str
    endpoint: str
    data_dir: str
    mdir: str
    root: str
    marks: str
    single_flight: bool


class GateFile(FileClient):
    """A File load that logs ``start`` and blocks on a gate (bounded) before reading.

    With single flight, the gate opens when the seven other workers have each marked
    that they saw the load lease (``wait-<pid>``); without it, when all eight loads
    have started. A gate that never opens raises after 20 s (the test then fails).
    """

    def __init__(self, job: FlightJob) -> None:
        super().__init__(job.root)
        self.marks = Path(job.marks)
        self.single_flight = job.single_flight

    def count(self, prefix: str) -> int:
        """Marks of other workers (the loader may see its own lease too)."""
        mine = f"{prefix}{os.getpid()}"
        return sum(1 for p in self.marks.iterdir() if p.name.startswith(prefix) and p.name != mine)

    def get(self, key: str) -> str | None:
        (self.marks / f"start-{os.getpid()}").touch()
        prefix, need = ("wait-", 7) if self.single_flight else ("start-", 7)
        end = time.monotonic() + 20
        while self.count(prefix) < need:
            if time.monotonic() > end:
                raise RuntimeError(f"gate: {self.count(prefix)} {prefix} marks, want {need}")
            time.sleep(0.005)
        return super().get(key)


def flight_worker(job: FlightJob, go: Any) -> None:
    marks = Path(job.marks)
    out: dict[str, Any] = {}
    with Client(job.endpoint, Path(job.data_dir)) as c:
        st = State(job.mdir, c, {"File": GateFile(job)}, single_flight=job.single_flight)
        read = st.store.record

        def record(key: str) -> Any:
            rec = read(key)
            if rec is not None and rec.get("status") == "loading":
                (marks / f"wait-{os.getpid()}").touch()  # this worker sees the lease
            return rec

        st.store.record = record  # type: ignore[method-assign]
        (marks / f"{job.name}.ready").touch()
        if not go.wait(TIMEOUT):
            raise SystemExit(3)
        try:
            out["value"] = st.get("slow.value")
        except StateEngineError as exc:
            out["error"] = f"{type(exc).__name__}: {exc.message}"
        out["loads"] = st.stats["loads"]
        out["flight"] = st.flight_stats
        st.close()
    (marks / f"{job.name}.json").write_text(json.dumps(out))


def run_flight(server: ServerProcess, tmp_path: Path, uid: str, single: bool) -> list[Any]:
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    write(
        mdir,
        "slow",
        """\
        value:
          _store: {client: InMemory, key: "slow:@U@"}
          _load: {client: File, key: value.json}
        """,
        uid,
    )
    root, marks = tmp_path / "files", tmp_path / "marks"
    root.mkdir()
    marks.mkdir()
    (root / "value.json").write_text('{"n": 8}')
    jobs = [
        FlightJob(
            f"w{i}", server.endpoint, str(server.data_dir), str(mdir), str(root), str(marks), single
        )
        for i in range(8)
    ]
    go = CTX.Event()
    procs = [CTX.Process(target=flight_worker, args=(j, go)) for j in jobs]
    for p in procs:
        p.start()
    try:
        wait_for(lambda: all((marks / f"{j.name}.ready").exists() for j in jobs), "workers ready")
        go.set()
        for p in procs:
            p.join(TIMEOUT)
    finally:
        for p in procs:
            if p.exitcode is None:
                p.kill()
                p.join(10)
    assert [p.exitcode for p in procs] == [0] * 8
    return [json.loads((marks / f"{j.name}.json").read_text()) for j in jobs]


def test_one_load_while_all_eight_workers_wait(
    server: ServerProcess, tmp_path: Path, uid: str
) -> None:
    out = run_flight(server, tmp_path, uid, single=True)
    assert [r.get("value") for r in out] == [{"n": 8}] * 8, out
    assert sum(r["loads"] for r in out) == 1  # the loader ran while 7 were waiting
    assert sum(r["flight"]["leases"] for r in out) == 1
    assert sum(r["flight"]["waits"] for r in out) == 7
    [start] = (tmp_path / "marks").glob("start-*")  # one load, in one worker
    loader = start.name.removeprefix("start-")
    waiters = {p.name for p in (tmp_path / "marks").glob("wait-*")} - {f"wait-{loader}"}
    assert len(waiters) == 7  # the other seven all saw its lease before it loaded


def test_without_single_flight_all_eight_load(
    server: ServerProcess, tmp_path: Path, uid: str
) -> None:
    out = run_flight(server, tmp_path, uid, single=False)
    assert [r.get("value") for r in out] == [{"n": 8}] * 8, out
    assert sum(r["loads"] for r in out) == 8  # > 1: every worker loaded, concurrently
