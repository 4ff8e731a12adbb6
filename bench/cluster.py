"""The cluster workloads, on a private ``redis-server`` (AOF ``appendfsync always``):

* ``cluster``: writes through a one-node cluster (``serve --cluster``) next to a single
  server whose log is fsynced per pass (``--store log --fsync always``), in the same
  run: both acknowledge a write only once it is on disk. The single-server rows are the
  reference: the target is a cluster at ≥ 0.5× a single server's writes/s with 100
  writes in flight (a node appends one stream entry per pass, so concurrent writes
  share an entry).
* ``cluster3``: three nodes of one cluster on this one machine, 100 writes in flight
  through each at once: the total writes/s. A figure, not a speed-up: every node
  applies every write.
* ``catchup``: a node of the three is stopped (``SIGSTOP``) while another appends
  entries one write each; then the time from ``SIGCONT`` until its ``sync()`` returns
  (it has applied them all): entries/s.
* ``xclaim``: tasks created on one node, claimed and completed one at a time by a
  worker on another node, next to the same loop on the single server.
* ``stream``: the limit of one stream: ``XADD`` entries/s of that Redis, one at a time
  and pipelined 100 deep, each entry the size of a node's one-write entry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.measure import Row
from bench.server import (
    START_TIMEOUT,
    TABLE,
    WINDOW,
    Children,
    client_patch_loops,
    pack,
    patch_request,
    preload,
)
from stateengine.client.client import Client
from stateengine.testing import ServerProcess

#: Records preloaded into each server (the rows patch them in turn).
RECORDS = 2000


def free_port() -> int:
    """A free loopback port, never the machine's own Redis (6379)."""
    for _ in range(20):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:  # the machine's own Redis
            return port
    raise RuntimeError("no free loopback port")


def redis_argv(binary: str, port: int, directory: Path) -> list[str]:
    """A private ``redis-server`` on loopback *port*: AOF with ``appendfsync always`` in
    *directory*, no RDB saves."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--protected-mode",
        "no",
    ]


def start_redis(directory: Path, stack: contextlib.ExitStack) -> tuple[int | None, str]:
    """A private ``redis-server`` (AOF always) on a free port: ``(port, "")``, or
    ``(None, why)`` when there is no binary or it does not answer."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None, "the redis-server binary is not installed"
    import redis

    directory.mkdir(mode=0o700)
    port = free_port()
    log = open(directory / "redis.log", "ab")  # closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(
        redis_argv(binary, port, directory),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    stack.callback(stop)
    deadline = time.monotonic() + 10
    with redis.Redis(port=port, socket_timeout=2) as probe:
        while time.monotonic() < deadline:
            try:
                if probe.ping():
                    return port, ""
            except redis.RedisError:
                time.sleep(0.02)
    return None, "redis-server did not answer within 10 s"


#: The workloads this module measures (``python -m bench --only ...``).
WORKLOADS = frozenset({"cluster", "cluster3", "catchup", "xclaim", "stream"})
#: Nodes of the ``cluster3``, ``catchup`` and ``xclaim`` rows' cluster.
NODES = 3
#: The claim table of the ``xclaim`` rows.
TASKS = "tasks"


def cluster_rows(
    tmp: Path, stack: contextlib.ExitStack, children: Children, tasks: int, only: set[str]
) -> tuple[list[Row], str]:
    """The rows of the cluster workloads in *only*, or why none.

    :param tasks: entries per catch-up repeat; a tenth of it, tasks per claim repeat.
    """
    port, why = start_redis(tmp / "cluster-redis", stack)
    if port is None:
        return [], why
    url = f"redis://127.0.0.1:{port}"

    def server(name: str, *args: str) -> Client:
        proc = ServerProcess(tmp / name, *args, start_timeout=START_TIMEOUT)
        children.servers.append(proc)
        proc.start()
        procs[name] = proc
        return stack.enter_context(proc.connect(timeout=60))

    procs: dict[str, ServerProcess] = {}
    rows: list[Row] = []
    single: Client | None = None
    if only & {"cluster", "xclaim"}:
        single = server("cluster-single", "--store", "log", "--fsync", "always")
        preload(single, RECORDS)
    if "cluster" in only:
        assert single is not None
        node = server("cluster-node", "--cluster", f"{url}/bench")
        preload(node, RECORDS)
        rows += _rows("single", single) + _rows("write", node)
    if only & {"cluster3", "catchup", "xclaim"}:
        nodes = [server(f"cluster3-{i}", "--cluster", f"{url}/bench3") for i in range(NODES)]
        preload(nodes[0], RECORDS)
        if "cluster3" in only:
            rows.append(Row("cluster3_inflight", "", _three(nodes)))
        if "catchup" in only:
            window = _catch_up(nodes[0], nodes[1], procs["cluster3-1"], tasks)
            rows.append(Row("catchup_node", "", lambda n: None, window=window))
        if "xclaim" in only:
            assert single is not None
            count = max(10, tasks // 10)
            rows.append(
                Row("xclaim_nodes", "", lambda n: None, window=_claims(nodes[0], nodes[1], count))
            )
            rows.append(
                Row("xclaim_single", "", lambda n: None, window=_claims(single, single, count))
            )
    if "stream" in only:
        rows += _xadd_rows(port, stack)
    return rows, ""


def _rows(name: str, client: Client) -> list[Row]:
    one, window = client_patch_loops(client, RECORDS, [0])
    return [
        Row(f"cluster_{name}_one", "", one),
        Row(f"cluster_{name}_inflight", "", window),
    ]


def _three(clients: list[Client]) -> Callable[[int], None]:
    """*n* writes in windows of 100 dealt round-robin to the nodes, each node's windows
    sent one after another, all nodes at once (a thread per node: a client waits for its
    replies outside the GIL)."""
    counter = [0]

    def through(client: Client, starts: list[int], end: int) -> None:
        for start in starts:
            stop = min(start + WINDOW, end)
            results = client.send_many([patch_request(k, RECORDS) for k in range(start, stop)])
            if isinstance(results[-1], Exception):
                raise results[-1]

    def body(n: int) -> None:
        i = counter[0]
        starts = list(range(i, i + n, WINDOW))
        count = len(clients)
        with ThreadPoolExecutor(count) as pool:
            futures = [
                pool.submit(through, client, starts[k::count], i + n)
                for k, client in enumerate(clients)
            ]
            for future in futures:
                future.result()
        counter[0] = i + n

    return body


def _catch_up(
    writer: Client, reader: Client, stopped: ServerProcess, entries: int
) -> Callable[[], tuple[float, int]]:
    """A window: *entries* one-write entries appended through *writer* while *stopped*
    (*reader*'s node) is frozen, then µs per entry from ``SIGCONT`` until *reader*'s
    ``sync()`` returns: it has read and applied every one."""

    def window() -> tuple[float, int]:
        reader.sync()
        before = reader.stats()["cluster"]["entries_applied"]
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            for k in range(entries):
                writer.patch_record(TABLE, k % RECORDS + 1, {"status": "caught", "tries": k})
        finally:
            start = time.perf_counter()
            os.kill(stopped.pid, signal.SIGCONT)
        applied = reader.sync()
        elapsed = time.perf_counter() - start
        behind = reader.stats()["cluster"]["entries_applied"] - before
        if behind < entries or applied is None:
            raise RuntimeError(f"catch-up: {behind} entries applied, expected ≥ {entries}")
        return elapsed / behind * 1e6, behind

    return window


def _claims(creator: Client, worker: Client, count: int) -> Callable[[], tuple[float, int]]:
    """A window: *count* pending tasks created through *creator* (one ``SET_STATE``),
    then *worker* claims and completes them one at a time until none is left: µs per
    task. On a cluster the two are different nodes; on the single server the same."""
    if TASKS not in creator.list_states():
        creator.create_state(TASKS, schema={"status": "string"}, indexes=["status"])

    def window() -> tuple[float, int]:
        creator.set_state(TASKS, [{"id": i + 1, "status": "pending"} for i in range(count)])
        done = 0
        start = time.perf_counter()
        while True:
            task = worker.claim_record(TASKS, {"status": "pending"}, {"status": "running"})
            if task is None:
                break
            worker.patch_record(TASKS, task["id"], {"status": "done"})
            done += 1
        elapsed = time.perf_counter() - start
        if done != count:
            raise RuntimeError(f"claim: {done} tasks completed, expected {count}")
        return elapsed / done * 1e6, done

    return window


def _xadd_rows(port: int, stack: contextlib.ExitStack) -> list[Row]:
    """``XADD`` of entries shaped as a node's one-write entry (its id, ~80 B of request),
    one at a time and pipelined :data:`WINDOW` deep, to a stream capped near 10^4."""
    import redis

    conn = stack.enter_context(redis.Redis(port=port, socket_timeout=30))
    key = "bench:xadd"
    fields = {"n": os.urandom(8).hex(), "r": pack(patch_request(0, RECORDS))}
    stack.callback(conn.delete, key)

    def one(n: int) -> None:
        xadd = conn.xadd
        for _ in range(n):
            xadd(key, fields, maxlen=10_000, approximate=True)

    def pipelined(n: int) -> None:
        for _ in range(0, n, WINDOW):
            pipe = conn.pipeline(transaction=False)
            for _ in range(WINDOW):
                pipe.xadd(key, fields, maxlen=10_000, approximate=True)
            pipe.execute()

    return [Row("stream_xadd_one", "", one), Row("stream_xadd_pipe", "", pipelined)]
