"""The cluster tests' helpers: a private ``redis-server`` (AOF ``appendfsync always``,
a free loopback port, never 6379), restartable on its port and directory."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from stateengine.client.client import Client
from stateengine.testing import ServerProcess


def _free_port() -> int:
    for _ in range(20):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port
    raise RuntimeError("no free loopback port")


class RedisServer:
    """``redis-server`` in a subprocess on *directory*, restartable on the same port."""

    def __init__(self, binary: str, directory: Path, *extra: str) -> None:
        self.binary = binary
        self.directory = directory
        self.extra = extra
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")
        with log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--protected-mode",
                    "no",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        with self.client() as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.directory / "redis.log").read_text())
                try:
                    if probe.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


NodeFactory = Callable[..., ServerProcess]
Connect = Callable[[ServerProcess], Client]


def cluster_figures(client: Client) -> dict[str, Any]:
    figures: dict[str, Any] = client.stats()["cluster"]
    return figures


def settled_digests(clients: list[Client], attempts: int = 200) -> list[str]:
    """The nodes' digests at one stream position: every node synced until all report the
    same applied entry (a tick appended meanwhile moves it: bounded retries)."""
    figures: list[dict[str, Any]] = []
    for _ in range(attempts):
        for client in clients:
            client.sync()
        figures = [cluster_figures(client) for client in clients]
        if len({f["applied"] for f in figures}) == 1:
            return [f["digest"] for f in figures]
    raise AssertionError(f"the nodes never stood at one entry: {figures}")


# --- worker processes (spawned: module-level functions) ----------------------------------


def claim_worker(
    node: ServerProcess,
    table: str,
    abandon_every: int,
    seconds: float,
    history: str | None = None,
) -> list[int]:
    """Claim tasks under a 5 s lease and complete them; every *abandon_every*-th claim
    is dropped without completing (a worker dying with its lease: the task comes back
    when the lease runs out). Returns the ids this worker completed. Stops once no task
    is pending nor leased, or after *seconds*. *history*: a directory to record this
    worker's operations in, for the checker."""
    done: list[int] = []
    deadline = time.monotonic() + seconds
    claims = 0
    with node.connect(timeout=30, history=history) as client:
        while time.monotonic() < deadline:
            task = client.claim_record(
                table, {"status": "pending"}, {"status": "running"}, lease_seconds=5, wait=1
            )
            if task is None:
                client.sync()  # a read on a node lags the stream: catch up first
                if not client.list_records(table, where={"status": {"$ne": "done"}}):
                    break
                continue
            claims += 1
            if abandon_every and claims % abandon_every == 0:
                continue
            client.patch_record(table, task["id"], {"status": "done"})
            done.append(task["id"])
    return done


def create_worker(node: ServerProcess, table: str, prefix: str, seconds: float) -> list[str]:
    """Create records as fast as one client can for *seconds*; return the keys of those
    acknowledged (a write that raised is not counted: its outcome is unknown)."""
    acknowledged: list[str] = []
    deadline = time.monotonic() + seconds
    with node.connect(timeout=5) as client:
        i = 0
        while time.monotonic() < deadline:
            key = f"{prefix}-{i}"
            i += 1
            try:
                client.create_record(table, {"key": key})
            except Exception:  # the node was killed: stop, as its worker would
                break
            acknowledged.append(key)
    return acknowledged
