"""The cluster tests' helpers: a private ``redis-server`` (AOF ``appendfsync always``,
a free loopback port, never 6379), restartable on its port and directory; a TCP proxy
the test can cut; the worker processes."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.cluster import free_port, redis_argv
from stateengine.client.client import Client
from stateengine.errors import VersionConflict
from stateengine.testing import ServerProcess


class _Process:
    """A ``redis-server`` process (a data server or a Sentinel) on a free loopback port,
    its output in *log* under *directory*."""

    log = "redis.log"

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def _start(self, argv: list[str]) -> None:
        """Run *argv*, then wait (10 s at most) until it answers ``PING``."""
        with open(self.directory / self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 10
        with self.client() as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.directory / self.log).read_text())
                try:
                    if probe.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.02)
        raise RuntimeError(f"{' '.join(argv)} did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class RedisServer(_Process):
    """``redis-server`` in a subprocess on *directory*, restartable on the same port."""

    def __init__(self, binary: str, directory: Path, *extra: str) -> None:
        super().__init__(binary, directory)
        self.extra = extra

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._start([*redis_argv(self.binary, self.port, self.directory), *self.extra])

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final AOF rewrite (what was fsynced stays)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class SentinelServer(_Process):
    """``redis-server --sentinel`` on a free loopback port watching master *name* at
    *master_port*, with tight timings (down after 500 ms, failover timeout 3 s)."""

    log = "sentinel.log"

    def __init__(self, binary: str, directory: Path, name: str, master_port: int) -> None:
        super().__init__(binary, directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {directory}\n"
            f"sentinel monitor {name} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {name} 500\n"
            f"sentinel failover-timeout {name} 3000\n"
            f"sentinel parallel-syncs {name} 2\n"
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def start(self) -> None:
        self._start([self.binary, str(self.directory / "sentinel.conf"), "--sentinel"])


class TcpProxy:
    """A loopback TCP proxy to *port* that the test controls: :meth:`cut` drops every
    connection and refuses new ones (a node cut off from Redis), :meth:`restore` takes
    connections again on the same port; :meth:`freeze` goes silent instead (a link whose
    packets are dropped: nothing forwarded, no reset, new connections left unanswered in
    the backlog) until :meth:`cut`. Threads: one acceptor, two pumps a connection."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._frozen = False
        self.restore()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Listen (again) on the proxy's port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)  # the acceptor notices a cut within 50 ms
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        """Forward nothing more and accept no connection (the kernel still completes
        their handshakes): every call through the proxy waits for a reply that never
        comes."""
        self._frozen = True

    def cut(self) -> None:
        """Close the listener (new connections are refused) and every open connection."""
        self._frozen = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            if self._frozen:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self._frozen:  # frozen: dropped, as a dead link drops packets
                    dst.sendall(data)
        for sock in (src, dst):  # one side ended: end both, as a dropped link does
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


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


def check_all_present(
    clients: list[Client],
    acknowledged: list[str],
    table: str = "t",
    ids: dict[str, int] | None = None,
) -> None:
    """Every acknowledged key is on every node (under the id its reply gave, when *ids*
    maps them), and the nodes' digests agree."""
    digests = settled_digests(clients)
    for client in clients:
        held = {r["key"]: r["id"] for r in client.list_records(table)}
        missing = set(acknowledged) - set(held)
        assert not missing, (clients.index(client), len(missing), sorted(missing)[:5])
        wrong = {key: (rid, held[key]) for key, rid in (ids or {}).items() if held[key] != rid}
        assert not wrong, (clients.index(client), "replied id != stored id", wrong)
    assert len(set(digests)) == 1, digests


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
    when the lease runs out). A completion is made under the claim (``if_version``): one
    whose lease ran out first (a node slow to reply) is refused. Returns the ids this
    worker completed. Stops once no task is pending nor leased, or after *seconds*.
    *history*: a directory to record this worker's operations in, for the checker."""
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
            try:  # only under the claim we hold: a reply late past the lease loses the task
                client.patch_record(
                    table, task["id"], {"status": "done"}, if_version=task["_version"]
                )
            except VersionConflict:
                continue  # the lease ran out and another worker took the task
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


def steady_writer(node: ServerProcess, table: str, prefix: str, seconds: float) -> dict[str, Any]:
    """Create records for *seconds*, going on through failures: the keys acknowledged
    (and the id each reply gave), how many writes failed with ``ServerUnavailable``
    (and the slowest of those, in seconds), how many were acknowledged after the first
    failure, and the outage (seconds from the first failure to the next acknowledged
    write). A write that failed is not counted: its outcome is unknown."""
    from stateengine.errors import ServerUnavailable

    acknowledged: list[str] = []
    ids: dict[str, int] = {}
    failed = 0
    slowest_failure = 0.0
    after_failure = 0
    first_failure: float | None = None
    outage = 0.0
    deadline = time.monotonic() + seconds
    with node.connect(timeout=10) as client:
        i = 0
        while time.monotonic() < deadline:
            key = f"{prefix}-{i}"
            i += 1
            started = time.monotonic()
            try:
                ids[key] = client.create_record(table, {"key": key})["id"]
            except ServerUnavailable:
                failed += 1
                if first_failure is None:
                    first_failure = started
                slowest_failure = max(slowest_failure, time.monotonic() - started)
                time.sleep(0.01)
                continue
            acknowledged.append(key)
            if failed:
                if not after_failure:
                    assert first_failure is not None
                    outage = time.monotonic() - first_failure
                after_failure += 1
    return {
        "acknowledged": acknowledged,
        "ids": ids,
        "failed": failed,
        "slowest_failure": slowest_failure,
        "after_failure": after_failure,
        "outage": outage,
    }
