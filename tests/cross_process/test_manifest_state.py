"""Manifest state shared through the server (``stateengine.client.state.State``).

A real server subprocess, real worker processes (multiprocessing spawn), every wait
bounded, every exit code checked. Loads are File loads through :class:`CountingFile`,
which appends one line per event to a log file the test reads: ``start <pid>`` when a
load begins, ``done <pid>`` when it returns a value, ``fail <pid>`` when it raises.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from stateengine.client.client import Client
from stateengine.client.state import TABLE, LoadTimeout, State
from stateengine.errors import ERROR_TYPES, LoadError, StateEngineError
from stateengine.manifests import FileClient
from stateengine.testing import ServerProcess

CTX = mp.get_context("spawn")
JOIN_TIMEOUT = 60.0
VALUE = {"n": 42, "who": "file"}

MANIFEST = """\
slow:
  _store: {client: InMemory, key: slow}
  _load: {client: File, key: value.json}
plain:
  _store: {client: InMemory, key: plain}
"""


class CountingFile(FileClient):
    """A File client whose loads are slow, logged, and can fail or block (test switches).

    :param delay: seconds each load takes.
    :param block: block (up to 60 s) after logging ``start``: a load to kill mid-way.
    The load raises while ``<root>/fail`` exists.
    """

    def __init__(self, root: Path, log: Path, delay: float = 0.0, block: bool = False) -> None:
        super().__init__(root)
        self.log, self.delay, self.block = log, delay, block

    def _note(self, event: str) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{event} {os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def get(self, key: str) -> str | None:
        self._note("start")
        if self.block:
            end = time.monotonic() + 60
            while time.monotonic() < end:  # until kill -9
                time.sleep(0.01)
        time.sleep(self.delay)
        if (self.root / "fail").exists():
            self._note("fail")
            raise RuntimeError("boom: the source is down")
        text = super().get(key)
        self._note("done")
        return text


def events(log: Path) -> list[str]:
    return log.read_text().split()[::2] if log.exists() else []


@dataclass
class Env:
    server: ServerProcess
    mdir: Path
    root: Path
    log: Path
    marks: Path

    def state(self, client: Client, **kw: Any) -> State:
        delay = kw.pop("delay", 0.0)
        return State(self.mdir, client, {"File": CountingFile(self.root, self.log, delay)}, **kw)


@pytest.fixture
def env(server: ServerProcess, tmp_path: Path) -> Env:
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "m.yml").write_text(textwrap.dedent(MANIFEST))
    root = tmp_path / "files"
    root.mkdir()
    (root / "value.json").write_text(json.dumps(VALUE))
    marks = tmp_path / "marks"
    marks.mkdir()
    return Env(server, mdir, root, tmp_path / "loads.log", marks)


# --- worker processes ---------------------------------------------------------------------


@dataclass
class Job:
    """What one worker process does: build a State, say ready, wait for go, ``get``."""

    name: str
    endpoint: str
    data_dir: Path
    mdir: Path
    root: Path
    log: Path
    marks: Path
    path: str = "m.slow"
    delay: float = 0.3
    block: bool = False
    state_kw: dict[str, Any] = field(default_factory=dict)


def get_worker(job: Job, go: Any) -> None:
    out: dict[str, Any] = {}
    with Client(job.endpoint, job.data_dir) as client:
        files = CountingFile(job.root, job.log, job.delay, job.block)
        with State(job.mdir, client, {"File": files}, **job.state_kw) as state:
            (job.marks / f"{job.name}.ready").touch()
            if not go.wait(JOIN_TIMEOUT):
                raise SystemExit(3)
            try:
                out["value"] = state.get(job.path)
            except StateEngineError as exc:
                out["error"] = [type(exc).__name__, exc.message]
            out["flight"] = state.flight_stats
            out["loads"] = state.stats["loads"]
    (job.marks / f"{job.name}.json").write_text(json.dumps(out))


def job(env: Env, name: str, **kw: Any) -> Job:
    s = env.server
    return Job(name, s.endpoint, s.data_dir, env.mdir, env.root, env.log, env.marks, **kw)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = JOIN_TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def start(jobs: list[Job], go: Any) -> list[Any]:
    procs = [CTX.Process(target=get_worker, args=(j, go), name=j.name) for j in jobs]
    for p in procs:
        p.start()
    marks = [j.marks / f"{j.name}.ready" for j in jobs]
    wait_for(lambda: all(m.exists() for m in marks), "workers ready")
    return procs


def join(procs: list[Any], codes: int | dict[str, int] = 0) -> None:
    for p in procs:
        p.join(JOIN_TIMEOUT)
        if p.exitcode is None:
            p.kill()
            p.join(10)
            raise AssertionError(f"{p.name} did not finish within {JOIN_TIMEOUT} s")
    want = {p.name: codes if isinstance(codes, int) else codes.get(p.name, 0) for p in procs}
    assert {p.name: p.exitcode for p in procs} == want


def results(jobs: list[Job]) -> list[dict[str, Any]]:
    return [json.loads((j.marks / f"{j.name}.json").read_text()) for j in jobs]


def run(env: Env, n: int, **kw: Any) -> list[dict[str, Any]]:
    """*n* workers miss the same key at once (released together); their results."""
    go = CTX.Event()
    jobs = [job(env, f"w{i}", **kw) for i in range(n)]
    procs = start(jobs, go)
    go.set()
    join(procs)
    return results(jobs)


# --- 1. one load per miss -----------------------------------------------------------------


def test_concurrent_misses_load_once(env: Env) -> None:
    out = run(env, 8, delay=0.5)
    assert [r.get("value") for r in out] == [VALUE] * 8
    assert events(env.log) == ["start", "done"]  # exactly one load, in one worker
    assert sum(r["loads"] for r in out) == 1
    assert sum(r["flight"]["leases"] for r in out) == 1
    assert sum(r["flight"]["waits"] for r in out) == 7
    with env.server.connect() as client:
        record = client.get_record(TABLE, "slow")
    assert record["status"] == "ready" and record["value"] == VALUE and record["owner"] is None


def test_control_without_the_lease_loads_in_every_worker(env: Env) -> None:
    """The same run with the lease off: the assertion above would fail."""
    out = run(env, 8, delay=0.5, state_kw={"single_flight": False})
    assert [r.get("value") for r in out] == [VALUE] * 8
    assert events(env.log).count("done") > 1
    assert sum(r["loads"] for r in out) > 1


# --- 2. a failed load ---------------------------------------------------------------------


def test_failed_load_reaches_every_waiter_and_the_next_get_retries(env: Env) -> None:
    (env.root / "fail").touch()
    out = run(env, 4, delay=1.0)
    errors = {tuple(r["error"]) for r in out}
    assert len(errors) == 1 and all("value" not in r for r in out)
    kind, message = errors.pop()
    assert issubclass(ERROR_TYPES[kind], LoadError) and "boom: the source is down" in message
    assert events(env.log) == ["start", "fail"]  # one load; the waiters got its error
    with env.server.connect() as client:
        state = env.state(client)
        assert client.get_record(TABLE, "slow")["status"] == "error"  # no value stored
        assert state.exists("m.slow") is False
        with pytest.raises(LoadError, match="boom"):  # the next get retries: fails again
            state.get("m.slow")
        (env.root / "fail").unlink()
        assert state.get("m.slow") == VALUE  # and retries again, now successfully
        assert events(env.log) == ["start", "fail", "start", "fail", "start", "done"]
        state.close()


# --- 3. the loader dies -------------------------------------------------------------------


def test_a_killed_loader_is_taken_over_after_its_lease(env: Env) -> None:
    kw: dict[str, Any] = {"state_kw": {"load_timeout": 1.5}}
    waiters = [job(env, f"w{i}", delay=0.1, **kw) for i in range(3)]
    go = CTX.Event()
    procs = start(waiters, go)
    loader_go = CTX.Event()
    loader_go.set()
    [loader] = start([job(env, "loader", block=True, **kw)], loader_go)
    wait_for(lambda: events(env.log) == ["start"], "the loader to start loading")
    with env.server.connect() as client:
        lease = client.get_record(TABLE, "slow")
        assert lease["status"] == "loading" and lease["owner"].startswith(f"{loader.pid}:")
        loader.kill()  # kill -9, mid-load
        loader.join(JOIN_TIMEOUT)
        assert loader.exitcode == -9
        go.set()
        join(procs)
        out = results(waiters)
        assert [r.get("value") for r in out] == [VALUE] * 3
        assert sum(r["flight"]["takeovers"] for r in out) == 1
        assert sum(r["flight"]["waits"] for r in out) == 3  # all saw the dead lease first
        assert events(env.log) == ["start", "start", "done"]  # one successful load
        record = client.get_record(TABLE, "slow")
        assert record["status"] == "ready" and time.time() >= lease["expires"]


# --- 4. set, delete and TTL seen across processes ---------------------------------------


def remote_worker(conn: Connection, job: Job) -> None:
    """Run State calls sent over *conn*: ``(method, args)`` → ``("ok", result)``."""
    with Client(job.endpoint, job.data_dir) as client:
        files = CountingFile(job.root, job.log, job.delay)
        with State(job.mdir, client, {"File": files}) as state:
            while conn.poll(JOIN_TIMEOUT):
                msg = conn.recv()
                if msg is None:
                    return
                method, args = msg
                try:
                    if method == "stats":
                        conn.send(("ok", dict(state.stats)))
                    else:
                        conn.send(("ok", getattr(state, method)(*args)))
                except StateEngineError as exc:
                    conn.send(("error", [type(exc).__name__, exc.message]))
                except Exception:
                    conn.send(("error", ["Exception", traceback.format_exc()]))


class Remote:
    """A State in another process."""

    def __init__(self, job: Job) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=remote_worker, args=(child, job), name=job.name)
        self.proc.start()
        child.close()

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.conn.send((method, args))
            assert self.conn.poll(JOIN_TIMEOUT), f"no answer to {method}{args}"
            kind, result = self.conn.recv()
            if kind == "error":
                raise AssertionError(f"remote {method}{args} raised {result}")
            return result

        return call

    def close(self) -> None:
        self.conn.send(None)
        join([self.proc])
        self.conn.close()


@pytest.fixture
def remote(env: Env) -> Iterator[Remote]:
    r = Remote(job(env, "remote", delay=0.0))
    try:
        yield r
    finally:
        r.close()


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_set_delete_and_ttl_are_seen_at_once_by_another_process(env: Env, remote: Remote) -> None:
    clock = Clock()
    with env.server.connect() as client, env.state(client, wall_clock=clock) as state:
        # exists never loads, in either process
        assert remote.exists("m.slow") is False and state.exists("m.slow") is False
        assert events(env.log) == []
        assert remote.get("m.plain") is None  # no _load: a plain miss

        state.set("m.plain", {"a": 1})
        assert remote.get("m.plain") == {"a": 1}
        hits = remote.stats()["cache_hits"]
        assert remote.get("m.plain") == {"a": 1}
        assert remote.stats()["cache_hits"] == hits + 1  # served by its instance cache...
        state.set("m.plain", {"a": 2})
        assert remote.get("m.plain") == {"a": 2}  # ...which saw the other process's set
        remote.set("m.plain", {"a": 3}, None)
        assert state.get("m.plain") == {"a": 3}
        assert remote.delete("m.plain") is True
        assert state.get("m.plain") is None and state.exists("m.plain") is False
        assert remote.get("m.plain") is None

        # TTL: the remote process computes the deadline with the real clock; this one
        # reads with a clock it moves past that deadline (no sleeping).
        remote.set("m.plain", "short", 60)
        assert state.get("m.plain") == "short" and state.exists("m.plain") is True
        clock.offset = 61.0
        assert state.get("m.plain") is None and state.exists("m.plain") is False
        clock.offset = 0.0
        # ttl=None keeps the current deadline (seed 003), across processes
        deadline = client.get_record(TABLE, "plain")["expires"]
        state.set("m.plain", "kept")
        assert client.get_record(TABLE, "plain")["expires"] == deadline
        assert remote.get("m.plain") == "kept"

        # A real, short TTL: the other process's cached entry expires with the record.
        remote.set("m.plain", "brief", 0.3)
        assert state.get("m.plain") == "brief"
        assert remote.get("m.plain") == "brief"
        expires = client.get_record(TABLE, "plain")["expires"]
        wait_for(lambda: remote.get("m.plain") is None, "the TTL to expire", timeout=10)
        assert time.time() >= expires
        assert remote.exists("m.plain") is False and state.exists("m.plain") is False
        assert events(env.log) == []  # nothing ever loaded


# --- 5. persistence -----------------------------------------------------------------------


def test_values_survive_a_server_restart(env: Env, remote: Remote) -> None:
    with env.server.connect() as client, env.state(client) as state:
        assert state.get("m.slow") == VALUE
        state.set("m.plain", [1, 2, 3])
        assert events(env.log) == ["start", "done"]
    assert env.server.stop() == 0
    env.server.start()
    out = run(env, 2)  # fresh processes after the restart
    assert [r.get("value") for r in out] == [VALUE] * 2
    assert remote.get("m.plain") == [1, 2, 3]  # a process that was there all along
    assert remote.get("m.slow") == VALUE
    assert events(env.log) == ["start", "done"]  # never loaded again


# --- bounded waits ------------------------------------------------------------------------


def test_a_wait_for_a_live_lease_is_bounded(env: Env) -> None:
    with env.server.connect() as client, env.state(client, wait_timeout=0.2) as state:
        state.store.ensure_table()
        far = time.time() + 3600
        client.create_record(
            TABLE,
            {"id": "slow", "status": "loading", "owner": "1:x", "expires": far, "value": None}
            | {"error": None},
        )
        t0 = time.monotonic()
        with pytest.raises(LoadTimeout, match=r"m\.slow.*1:x"):
            state.get("m.slow")
        assert 0.2 <= time.monotonic() - t0 < 5
        assert state.exists("m.slow") is False and events(env.log) == []
        assert state.delete("m.slow") is False  # a live lease is left alone
        state.set("m.slow", {"n": 1})  # a set wins over a load in flight
        assert state.get("m.slow") == {"n": 1}
