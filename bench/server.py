"""Server benchmark: the writer behind its ZeroMQ ROUTER, against its floors and Redis.

    python bench/server.py [--quick] [--repeats R] [--records N] [--no-json]

Everything in the table is measured in this one run, every row in its own processes the
way a deployment runs it (the server, each echo server and Redis in a process of their
own; the client in this one), over ``ipc://`` in a private temporary directory:

* **stateengine** (``python -m stateengine serve --store none`` through ``ServerProcess``:
  no persistence, so transport + engine only, comparable to the echoes), with N records
  of the 6-field, ~70-byte benchmark shape preloaded by ``SET_STATE``: one acknowledged
  ``PATCH_RECORD`` at a time (the client API, and a raw REQ socket with pre-encoded
  requests), 100 writes in flight (``Client.send_many`` and a raw DEALER), ``BATCH`` of
  100 writes per frame, and ``get_record`` over the socket (a client given only the
  endpoint).
* **get from a worker via the arena** (this process is not the server): ``get_record``
  of a ``Client(endpoint, data_dir)``, which reads the shared-memory arena, and the raw
  ``ArenaReader.attach(server.info["arena"]).get(table, id)``.
* **durable writes** per fsync policy: one server each with ``--store log --fsync
  always|everysec|no`` (the default store): one ``client.patch_record`` at a time, and
  8 writer processes (spawned once, kept for the run) each with a raw DEALER keeping 16
  pre-encoded ``PATCH_RECORD`` requests in flight, aggregate acknowledged writes/s over
  a fixed wall-clock window (every process counts the replies it receives inside the
  same ``CLOCK_MONOTONIC`` window, after a ramp-up); the same 8 × 16 against the
  ``--store none`` server for reference. Next to them py-lmdb ``put`` with ``sync=True``
  on the same ~70-byte records in a temporary directory on the same disk: one
  transaction per put, and 16 puts per transaction.
* **floors**: a ROUTER echo server on a plain ``zmq.Poller`` loop (the writer's loop
  with the work taken out) and the same echo on ``zmq.asyncio`` + uvloop, each with one
  request in flight (REQ) and 100 in flight (DEALER); a ``socketpair`` ping-pong between
  two processes.
* **Redis** through redis-py on 127.0.0.1:6379: SET and GET one at a time, and SET
  pipelined 100 per round trip (rows skipped, with a line saying so, when unreachable).

Targets: one write ≤ 1.3× REQ echo and faster than redis-py SET; 100 in flight ≤ 1.3×
the DEALER echo; BATCH ≥ pipelined SET; arena get (``client.get_record``) ≥ 25× faster
than redis-py GET; under 8 × 16, ``always`` ≥ 0.7× the writes/s of ``no`` and ≥ 3× LMDB
put with sync (one put per transaction).

Rows are measured round-robin (repeat 1 of every row, then repeat 2, ...), so a burst of
machine noise spreads over all rows instead of landing on one. Each repeat is sized to
take about the same time (rows that touch the disk — the durable and LMDB rows — run
for that fixed wall time instead, so a slow disk cannot stretch them); figures are
medians of the repeats, spread min..max. Results
also go to ``bench/results/server-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import zmq

try:
    from bench.measure import Row, calibrate, for_seconds, measure
    from bench.records import record
except ImportError:  # run as a script (python bench/server.py): bench/ is sys.path[0]
    from measure import Row, calibrate, for_seconds, measure  # type: ignore[no-redef]
    from records import record  # type: ignore[no-redef]

from stateengine.client.client import Client
from stateengine.shm import ArenaReader
from stateengine.testing import ServerProcess

HERE = Path(__file__).resolve().parent
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_PREFIX = "stateengine-bench-server:"
WINDOW = 100  # requests in flight / writes per BATCH / SETs per pipeline
RECV_TIMEOUT_MS = 10_000  # every socket wait in the benchmark is bounded by this
START_TIMEOUT = 20.0
TABLE = "bench"

FSYNC_POLICIES = ("always", "everysec", "no")
PURE_POOL = "always_pure"  # the fsync-always pool row's server on the pure-Python write path
PURE_ENV = "STATEENGINE_PURE_PYTHON"
WRITERS = 8  # writer processes in the concurrent durable rows
WRITER_INFLIGHT = 16  # pre-encoded PATCH_RECORDs each writer keeps in flight
WRITER_RAMP = 0.15  # s between the start command and the counted window
DURABLE_RECORDS = 20_000  # records preloaded into each durable server
LMDB_TXN = 16  # puts per transaction in the second LMDB row

# Targets (the issue): ratio limits.
ONE_WRITE_VS_REQ_ECHO = 1.3
INFLIGHT_VS_DEALER_ECHO = 1.3
ARENA_GET_VS_REDIS_GET = 25.0  # arena get at least this many times faster
ALWAYS_VS_NO = 0.7  # writes/s under 8 x 16, fsync always / fsync no
ALWAYS_VS_LMDB = 3.0  # writes/s under 8 x 16, fsync always / LMDB put with sync


def patch_request(i: int, n_records: int) -> dict[str, Any]:
    return {
        "command": "PATCH_RECORD",
        "state": TABLE,
        "id": i % n_records + 1,
        "fields": {"status": "running", "tries": i},
    }


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


# --- child processes: echo servers and the socketpair pong ------------------------------


def _parent_gone(ppid: int) -> bool:
    return os.getppid() != ppid


def run_echo_poll(endpoint: str) -> None:
    """ROUTER echo on a plain poll loop, structured as the writer's pass: drain, then reply."""
    ppid = os.getppid()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while True:
        if not poller.poll(200):
            if _parent_gone(ppid):
                break
            continue
        received: list[list[bytes]] = []
        while len(received) < 1024:
            try:
                received.append(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        for message in received:
            sock.send_multipart(message, zmq.NOBLOCK)
    sock.close(0)
    ctx.term()


def run_echo_asyncio(endpoint: str) -> None:
    """ROUTER echo on zmq.asyncio with uvloop: await a message, await its reply."""
    import uvloop
    import zmq.asyncio

    async def main() -> None:
        ppid = os.getppid()
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)

        async def echo() -> None:
            while True:
                frames = await sock.recv_multipart()
                await sock.send_multipart(frames)

        task = asyncio.ensure_future(echo())
        while not _parent_gone(ppid) and not task.done():
            await asyncio.sleep(0.2)
        task.cancel()
        sock.close(0)
        ctx.term()

    uvloop.run(main())


def run_pong(fd: int) -> None:
    """Echo every chunk read from an inherited socketpair end, until the parent goes."""
    ppid = os.getppid()
    sock = socket.socket(fileno=fd)
    sock.settimeout(0.2)
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if _parent_gone(ppid):
                break
            continue
        if not data:
            break
        sock.sendall(data)


def writer_requests(index: int, n_records: int, count: int = 1024) -> list[bytes]:
    """Pre-encoded PATCH_RECORDs of writer *index*: its own stride of ids, unique req_ids."""
    return [
        pack({**patch_request(index * 7919 + k * WRITERS, n_records), "req_id": k + 1})
        for k in range(count)
    ]


def pipeline_window(
    sock: zmq.Socket[bytes], requests: list[bytes], inflight: int, start: float, end: float
) -> int:
    """Keep *inflight* requests outstanding until *end*; count replies in [start, end).

    Every reply is checked (``ok``); every wait is bounded by the socket's RCVTIMEO.
    """
    send, recv, unpack = sock.send, sock.recv, msgpack.unpackb
    cycle = len(requests)
    k = 0
    for _ in range(inflight):
        send(requests[k % cycle])
        k += 1
    outstanding = inflight
    counted = 0
    while outstanding:
        reply = recv()  # zmq.Again after RCVTIMEO: propagates as an error
        outstanding -= 1
        now = time.monotonic()
        if not unpack(reply).get("ok"):
            raise RuntimeError(f"server error: {unpack(reply).get('error')}")
        if now < end:
            if now >= start:
                counted += 1
            send(requests[k % cycle])
            k += 1
            outstanding += 1
    return counted


def run_writer(control: str, endpoints: list[str], index: int, n_records: int) -> None:
    """A writer process: on each command, pipeline writes to one server over a window.

    Commands (msgpack on a DEALER to the parent's ROUTER): ``{"server": i, "start": t0,
    "end": t1}`` with ``time.monotonic()`` times (one clock for every process), answered
    with ``{"count": n}`` or ``{"error": text}``; ``{"stop": True}`` ends the process, as
    does the parent going away.
    """
    ppid = os.getppid()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        ctl = zmq_socket(ctx, zmq.DEALER, control)
        servers = [zmq_socket(ctx, zmq.DEALER, ep) for ep in endpoints]
        requests = writer_requests(index, n_records)
        ctl.send(pack({"ready": index}))
        while True:
            if not ctl.poll(200, zmq.POLLIN):
                if _parent_gone(ppid):
                    break
                continue
            command = msgpack.unpackb(ctl.recv(), raw=False)
            if command.get("stop"):
                break
            try:
                count = pipeline_window(
                    servers[command["server"]],
                    requests,
                    WRITER_INFLIGHT,
                    command["start"],
                    command["end"],
                )
                answer: dict[str, Any] = {"count": count}
            except Exception as exc:  # reported to the parent, which raises
                answer = {"error": f"writer {index}: {type(exc).__name__}: {exc}"}
                # A socket with requests still queued must not poison the next window.
                servers[command["server"]].close(0)
                servers[command["server"]] = zmq_socket(
                    ctx, zmq.DEALER, endpoints[command["server"]]
                )
            ctl.send(pack(answer))
    finally:
        ctx.destroy(linger=0)


# --- process management -----------------------------------------------------------------


class Children:
    """Every process this benchmark starts; all killed on exit, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.servers: list[ServerProcess] = []

    def spawn(self, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.DEVNULL,
            pass_fds=pass_fds,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop(timeout=10)
            with contextlib.suppress(Exception):
                server.kill()
            with contextlib.suppress(Exception):
                server.cleanup()  # arena segments a killed server left behind
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def zmq_socket(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, endpoint: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, RECV_TIMEOUT_MS)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.connect(endpoint)
    return sock


def wait_echo(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, proc: subprocess.Popen[bytes]
) -> None:
    """Bounded wait until an echo server answers (a DEALER queues until the bind)."""
    sock = zmq_socket(ctx, zmq.DEALER, endpoint)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        sock.send(b"ping")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"echo server {endpoint} exited with {proc.returncode}")
            if sock.poll(100, zmq.POLLIN):
                sock.recv()
                return
        raise RuntimeError(f"echo server {endpoint} did not answer within {START_TIMEOUT} s")
    finally:
        sock.close(0)


class WriterPool:
    """``WRITERS`` writer processes, each connected to every server in *endpoints*."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        children: Children,
        control: str,
        endpoints: list[str],
        n_records: int,
    ) -> None:
        self.ctl = ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.setsockopt(zmq.SNDTIMEO, RECV_TIMEOUT_MS)
        self.ctl.bind(control)
        self.procs = [
            children.spawn(
                "--role",
                "writer",
                "--endpoint",
                control,
                "--servers",
                ",".join(endpoints),
                "--index",
                str(i),
                "--records",
                str(n_records),
            )
            for i in range(WRITERS)
        ]
        self.peers: list[bytes] = []
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.peers) < WRITERS:
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"writer processes: {len(self.peers)} of {WRITERS} ready")
            if self.ctl.poll(100, zmq.POLLIN):
                peer, _ = self.ctl.recv_multipart()
                self.peers.append(peer)

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"writer process {proc.pid} exited with {proc.returncode}")

    def run(self, server: int, seconds: float) -> tuple[float, int]:
        """Every writer pipelines to *server*; return (µs per write, writes) in the window."""
        start = time.monotonic() + WRITER_RAMP
        end = start + seconds
        command = pack({"server": server, "start": start, "end": end})
        for peer in self.peers:
            self.ctl.send_multipart([peer, command])
        total = 0
        answered = 0
        deadline = end + RECV_TIMEOUT_MS / 1000 + 5
        while answered < len(self.peers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"writers: {answered} of {len(self.peers)} answered in time")
            if not self.ctl.poll(100, zmq.POLLIN):
                self._check_alive()
                continue
            _, body = self.ctl.recv_multipart()
            answer = msgpack.unpackb(body, raw=False)
            if "error" in answer:
                raise RuntimeError(answer["error"])
            total += answer["count"]
            answered += 1
        if total == 0:
            raise RuntimeError("writers: no write acknowledged inside the window")
        return seconds / total * 1e6, total

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            for peer in self.peers:
                self.ctl.send_multipart([peer, pack({"stop": True})], zmq.NOBLOCK)
        for proc in self.procs:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.ctl.close(0)


# --- measurement ------------------------------------------------------------------------


# --- the rows -----------------------------------------------------------------------------


def echo_rows(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, name: str, body: bytes
) -> tuple[Row, Row]:
    req = zmq_socket(ctx, zmq.REQ, endpoint)
    dealer = zmq_socket(ctx, zmq.DEALER, endpoint)

    def one(n: int) -> None:
        send, recv = req.send, req.recv
        for _ in range(n):
            send(body)
            recv()

    def window(n: int) -> None:
        send, recv = dealer.send, dealer.recv
        for _ in range(n // WINDOW):
            for _ in range(WINDOW):
                send(body)
            for _ in range(WINDOW):
                recv()

    return (
        Row(f"echo_{name}_req", f"bare REQ→ROUTER echo, {name} (1 in flight)", one),
        Row(
            f"echo_{name}_dealer100",
            f"bare DEALER→ROUTER echo, {name} ({WINDOW} in flight)",
            window,
        ),
    )


def client_patch_loops(
    client: Client, n_records: int, counter: list[int]
) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """The client's write rows: *n* ``patch_record`` calls one at a time, and *n* through
    ``send_many`` ``WINDOW`` in flight; both go on with the patch sequence in *counter*."""

    def one(n: int) -> None:
        patch = client.patch_record
        i = counter[0]
        for k in range(i, i + n):
            patch(TABLE, k % n_records + 1, {"status": "running", "tries": k})
        counter[0] = i + n

    def window(n: int) -> None:
        i = counter[0]
        for start in range(i, i + n, WINDOW):
            results = client.send_many(
                [patch_request(k, n_records) for k in range(start, start + WINDOW)]
            )
            if isinstance(results[-1], Exception):
                raise results[-1]
        counter[0] = i + n

    return one, window


def stateengine_rows(
    ctx: zmq.Context[zmq.Socket[bytes]],
    client: Client,
    socket_client: Client,
    endpoint: str,
    n_records: int,
) -> list[Row]:
    # Pre-encoded requests for the raw-socket rows: the server's cost without the client's.
    cycle = min(n_records, 20_000)
    raw = [pack({**patch_request(i, n_records), "req_id": i + 1}) for i in range(cycle)]
    req = zmq_socket(ctx, zmq.REQ, endpoint)
    dealer = zmq_socket(ctx, zmq.DEALER, endpoint)
    counter = [0]

    def check(reply: bytes) -> None:
        decoded = msgpack.unpackb(reply, raw=False)
        if not decoded.get("ok"):
            raise RuntimeError(f"server error: {decoded.get('error')}")

    one_client, window_client = client_patch_loops(client, n_records, counter)

    def one_raw(n: int) -> None:
        send, recv = req.send, req.recv
        i = counter[0]
        reply = b""
        for k in range(i, i + n):
            send(raw[k % cycle])
            reply = recv()
        counter[0] = i + n
        check(reply)

    def window_raw(n: int) -> None:
        send, recv = dealer.send, dealer.recv
        i = counter[0]
        reply = b""
        for start in range(i, i + n, WINDOW):
            for k in range(start, start + WINDOW):
                send(raw[k % cycle])
            for _ in range(WINDOW):
                reply = recv()
        counter[0] = i + n
        check(reply)

    def batch(n: int) -> None:
        i = counter[0]
        for start in range(i, i + n, WINDOW):
            client.batch([patch_request(k, n_records) for k in range(start, start + WINDOW)])
        counter[0] = i + n

    def get(n: int) -> None:
        read = socket_client.get_record
        i = counter[0]
        for k in range(i, i + n):
            read(TABLE, k % n_records + 1)
        counter[0] = i + n

    return [
        Row("write_one", "one write: client.patch_record (1 in flight)", one_client),
        Row("write_one_raw", "one write: raw REQ, pre-encoded (1 in flight)", one_raw),
        Row("write_inflight", f"{WINDOW} writes in flight: client.send_many", window_client),
        Row(
            "write_inflight_raw", f"{WINDOW} writes in flight: raw DEALER, pre-encoded", window_raw
        ),
        Row("write_batch", f"BATCH of {WINDOW} writes per frame: client.batch", batch),
        Row("get_socket", "get (socket): client.get_record, Client(endpoint)", get),
    ]


def arena_rows(arena_client: Client, reader: ArenaReader, n_records: int) -> list[Row]:
    """Gets from the shared-memory arena in this process (a worker, not the server)."""
    counter = [0]

    def client_get(n: int) -> None:
        read = arena_client.get_record
        i = counter[0]
        for k in range(i, i + n):
            read(TABLE, k % n_records + 1)
        counter[0] = i + n

    def raw_get(n: int) -> None:
        read = reader.get
        i = counter[0]
        rec: Any = None
        for k in range(i, i + n):
            rec = read(TABLE, k % n_records + 1)
        counter[0] = i + n
        if rec is None:
            raise RuntimeError("arena get: record missing")

    return [
        Row(
            "get_arena",
            "get via the arena: client.get_record, Client(endpoint, data_dir)",
            client_get,
        ),
        Row("get_arena_raw", "get via the arena: raw ArenaReader.get", raw_get),
    ]


def _no_body(n: int) -> None:
    raise AssertionError("a window row has no body")


def durable_rows(
    clients: dict[str, Client],
    pool: WriterPool,
    servers: dict[str, int],
    seconds: float,
    n_records: int,
) -> list[Row]:
    """One write at a time per fsync policy, then 8 writers x 16 in flight per policy."""
    rows: list[Row] = []
    for policy, client in clients.items():
        counter = [0]

        def one(n: int, client: Client = client, counter: list[int] = counter) -> None:
            patch = client.patch_record
            i = counter[0]
            for k in range(i, i + n):
                patch(TABLE, k % n_records + 1, {"status": "running", "tries": k})
            counter[0] = i + n

        rows.append(
            Row(
                f"durable_one_{policy}",
                f"durable write, fsync {policy}: client.patch_record (1 in flight)",
                one,
                window=for_seconds(one, seconds, 8),
            )
        )
    for name, index in servers.items():

        def window(index: int = index) -> tuple[float, int]:
            return pool.run(index, seconds)

        store = "store none" if name == "none" else f"fsync {name}"
        if name == PURE_POOL:
            store = "fsync always, pure-Python write path"
        rows.append(
            Row(
                f"durable_pool_{name}",
                f"{WRITERS} writers × {WRITER_INFLIGHT} in flight, {store}: raw DEALERs",
                _no_body,
                window=window,
            )
        )
    return rows


def lmdb_rows(path: Path, n_records: int, seconds: float) -> tuple[list[Row], Any, str]:
    """py-lmdb puts with ``sync=True``; ``([], None, reason)`` when lmdb is missing."""
    try:
        import lmdb
    except ImportError as exc:
        return [], None, f"py-lmdb not installed ({exc})"
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)
    values = [pack(record(i)) for i in range(n_records)]
    keys = [b"%09d" % (i + 1) for i in range(n_records)]
    counter = [0]

    def put_one(n: int) -> None:
        begin = env.begin
        i = counter[0]
        for k in range(i, i + n):
            j = k % n_records
            with begin(write=True) as txn:
                txn.put(keys[j], values[j])
        counter[0] = i + n

    def put_group(n: int) -> None:
        begin = env.begin
        i = counter[0]
        for start in range(i, i + n, LMDB_TXN):
            with begin(write=True) as txn:
                for k in range(start, min(start + LMDB_TXN, i + n)):
                    j = k % n_records
                    txn.put(keys[j], values[j])
        counter[0] = i + n

    rows = [
        Row(
            "lmdb_sync_put",
            "py-lmdb put, sync=True, 1 put per txn",
            put_one,
            window=for_seconds(put_one, seconds, 4),
        ),
        Row(
            "lmdb_sync_txn",
            f"py-lmdb put, sync=True, {LMDB_TXN} puts per txn",
            put_group,
            window=for_seconds(put_group, seconds, LMDB_TXN),
        ),
    ]
    return rows, env, ""


def redis_rows(n_records: int, prefix: str = REDIS_PREFIX) -> tuple[list[Row], Any, str]:
    """Redis rows and the connection; ``([], None, reason)`` when Redis is unreachable."""
    try:
        import redis
    except ImportError as exc:
        return [], None, f"redis-py not installed ({exc})"
    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2, socket_timeout=10)
    try:
        r.ping()
    except redis.RedisError as exc:
        return [], None, f"Redis unreachable at {REDIS_HOST}:{REDIS_PORT} ({exc})"
    values = [pack(record(i)) for i in range(n_records)]
    keys = [f"{prefix}{i + 1}" for i in range(n_records)]
    for start in range(0, n_records, 1000):
        pipe = r.pipeline(transaction=False)
        for k in range(start, min(start + 1000, n_records)):
            pipe.set(keys[k], values[k])
        pipe.execute()
    counter = [0]

    def set_one(n: int) -> None:
        i = counter[0]
        for k in range(i, i + n):
            j = k % n_records
            r.set(keys[j], values[j])
        counter[0] = i + n

    def get_one(n: int) -> None:
        i = counter[0]
        for k in range(i, i + n):
            r.get(keys[k % n_records])
        counter[0] = i + n

    def set_pipelined(n: int) -> None:
        i = counter[0]
        for start in range(i, i + n, WINDOW):
            pipe = r.pipeline(transaction=False)
            for k in range(start, start + WINDOW):
                j = k % n_records
                pipe.set(keys[j], values[j])
            pipe.execute()
        counter[0] = i + n

    rows = [
        Row("redis_set", "redis-py SET (1 in flight)", set_one),
        Row("redis_get", "redis-py GET (1 in flight)", get_one),
        Row("redis_set_pipe", f"redis-py SET, pipelined {WINDOW} per round trip", set_pipelined),
    ]
    return rows, r, ""


def redis_cleanup(r: Any, n_records: int, prefix: str = REDIS_PREFIX) -> None:
    with contextlib.suppress(Exception):
        for start in range(0, n_records, 1000):
            r.unlink(*(f"{prefix}{k + 1}" for k in range(start, min(start + 1000, n_records))))
    with contextlib.suppress(Exception):
        r.close()


def socketpair_row(children: Children, size: int) -> tuple[Row, socket.socket]:
    mine, theirs = socket.socketpair()
    children.spawn("--role", "pong", "--fd", str(theirs.fileno()), pass_fds=(theirs.fileno(),))
    theirs.close()
    mine.settimeout(RECV_TIMEOUT_MS / 1000)
    payload = b"x" * size

    def pingpong(n: int) -> None:
        send, recv = mine.sendall, mine.recv
        for _ in range(n):
            send(payload)
            got = len(recv(65536))
            while got < size:
                got += len(recv(65536))

    return Row("socketpair", f"socketpair ping-pong, 2 processes ({size} B)", pingpong), mine


# --- environment and report ----------------------------------------------------------------


def environment(redis_conn: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": list(os.getloadavg()),
    }
    for dist, key in (("uvloop", "uvloop"), ("redis", "redis_py")):
        with contextlib.suppress(Exception):
            env[key] = importlib.metadata.version(dist)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    if redis_conn is not None:
        with contextlib.suppress(Exception):
            env["redis_server"] = redis_conn.info("server")["redis_version"]
    if "redis_server" not in env and shutil.which("redis-server"):
        with contextlib.suppress(Exception):
            out = subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, timeout=5
            ).stdout
            env["redis_server"] = out.split("v=", 1)[1].split()[0] + " (binary)"
    with contextlib.suppress(Exception):
        env["git_commit"] = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return env


def lmdb_version() -> str:
    try:
        return importlib.metadata.version("lmdb")
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def fmt_rate(rate: float) -> str:
    return f"{rate / 1e6:.2f} M" if rate >= 1e6 else f"{rate / 1e3:.1f} k"


def render_table(rows: list[Row]) -> list[str]:
    width = max(len(r.label) for r in rows)
    head = f"{'':{width}}  {'µs/op':>8}  {'min..max µs':>15}  {'ops/s':>9}  {'ops/repeat':>10}"
    lines = [head, "-" * len(head)]
    group = ""
    for row in rows:
        g = row.key.split("_", 1)[0]
        if group and g != group:
            lines.append("")
        group = g
        spread = f"{min(row.samples_us):.2f}..{max(row.samples_us):.2f}"
        lines.append(
            f"{row.label:{width}}  {row.us:8.2f}  {spread:>15}  {fmt_rate(row.rate):>9}"
            f"  {row.ops:>10}"
        )
    return lines


def ratio_lines(
    by_key: dict[str, Row], redis_skipped: str, lmdb_skipped: str
) -> tuple[list[str], list[dict[str, Any]]]:
    lines: list[str] = []
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, limit: float, cmp: str, detail: str) -> None:
        if value is None:
            lines.append(f"  SKIP  {name}: {detail}")
            targets.append({"target": name, "status": "SKIP", "detail": detail})
            return
        ok = value <= limit if cmp == "<=" else value >= limit if cmp == ">=" else value < limit
        status = "PASS" if ok else "MISS"
        lines.append(f"  {status}  {name}: {detail}")
        targets.append(
            {"target": name, "status": status, "value": value, "limit": limit, "cmp": cmp}
        )

    def ratio(a: str, b: str) -> float | None:
        if a in by_key and b in by_key:
            return by_key[a].us / by_key[b].us
        return None

    one = ratio("write_one", "echo_poll_req")
    target(
        "one write ≤ 1.3× bare REQ→ROUTER echo",
        one,
        ONE_WRITE_VS_REQ_ECHO,
        "<=",
        f"client.patch_record / REQ echo (poll) = {one:.2f}× (limit {ONE_WRITE_VS_REQ_ECHO}×)"
        if one is not None
        else "",
    )
    vs_redis = ratio("write_one", "redis_set")
    target(
        "one write faster than redis-py SET",
        vs_redis,
        1.0,
        "<",
        f"client.patch_record / redis-py SET = {vs_redis:.2f}× (must be < 1)"
        if vs_redis is not None
        else f"no Redis: {redis_skipped}",
    )
    inflight = ratio("write_inflight_raw", "echo_poll_dealer100")
    target(
        f"{WINDOW} in flight ≤ 1.3× bare DEALER echo with {WINDOW} in flight",
        inflight,
        INFLIGHT_VS_DEALER_ECHO,
        "<=",
        f"raw DEALER writes / DEALER echo (poll) = {inflight:.2f}× (limit "
        f"{INFLIGHT_VS_DEALER_ECHO}×)"
        if inflight is not None
        else "",
    )
    batch = ratio("redis_set_pipe", "write_batch")  # = rate(batch) / rate(pipelined SET)
    target(
        f"BATCH of {WINDOW} ≥ redis-py pipelined SET writes/s",
        batch,
        1.0,
        ">=",
        f"BATCH {fmt_rate(by_key['write_batch'].rate)}/s / pipelined SET "
        f"{fmt_rate(by_key['redis_set_pipe'].rate)}/s = {batch:.2f}× (must be ≥ 1)"
        if batch is not None
        else f"no Redis: {redis_skipped}",
    )
    arena = ratio("redis_get", "get_arena")  # = how many times faster the arena get is
    target(
        f"arena get ≥ {ARENA_GET_VS_REDIS_GET:g}× faster than redis-py GET",
        arena,
        ARENA_GET_VS_REDIS_GET,
        ">=",
        f"redis-py GET {by_key['redis_get'].us:.2f} µs / client.get_record via the arena "
        f"{by_key['get_arena'].us:.2f} µs = {arena:.1f}× (must be ≥ {ARENA_GET_VS_REDIS_GET:g})"
        if arena is not None
        else f"no Redis: {redis_skipped}",
    )
    pool = f"{WRITERS} × {WRITER_INFLIGHT}"
    always_no = ratio("durable_pool_no", "durable_pool_always")  # = rate(always) / rate(no)
    target(
        f"under {pool}, fsync always ≥ {ALWAYS_VS_NO}× the writes/s of fsync no",
        always_no,
        ALWAYS_VS_NO,
        ">=",
        f"always {fmt_rate(by_key['durable_pool_always'].rate)}/s / no "
        f"{fmt_rate(by_key['durable_pool_no'].rate)}/s = {always_no:.2f}× "
        f"(must be ≥ {ALWAYS_VS_NO})"
        if always_no is not None
        else "",
    )
    always_lmdb = ratio("lmdb_sync_put", "durable_pool_always")
    target(
        f"under {pool}, fsync always ≥ {ALWAYS_VS_LMDB:g}× LMDB put with sync",
        always_lmdb,
        ALWAYS_VS_LMDB,
        ">=",
        f"always {fmt_rate(by_key['durable_pool_always'].rate)}/s / py-lmdb put sync=True "
        f"{fmt_rate(by_key['lmdb_sync_put'].rate)}/s = {always_lmdb:.2f}× "
        f"(must be ≥ {ALWAYS_VS_LMDB:g})"
        if always_lmdb is not None
        else f"no LMDB: {lmdb_skipped}",
    )

    info: list[tuple[str, str, str]] = [
        (
            "write_one_raw",
            "echo_poll_req",
            "one write, raw REQ / REQ echo (poll): the server's own cost",
        ),
        ("write_one", "write_one_raw", "client.patch_record / raw REQ write: the client's cost"),
        ("write_inflight", "echo_poll_dealer100", "send_many / DEALER echo (poll)"),
        (
            "write_inflight",
            "write_inflight_raw",
            "send_many / raw DEALER writes: the client's cost",
        ),
        ("get_socket", "echo_poll_req", "get (socket) / REQ echo (poll)"),
        ("get_socket", "redis_get", "get (socket) / redis-py GET"),
        ("get_arena", "get_socket", "get via the arena, client / get (socket)"),
        ("get_arena_raw", "get_arena", "raw ArenaReader.get / client.get_record via the arena"),
        ("redis_get", "get_arena_raw", "redis-py GET / raw ArenaReader.get"),
        ("durable_one_always", "write_one", "one durable write (always) / one write (store none)"),
        ("durable_one_always", "durable_one_no", "one write: fsync always / fsync no"),
        ("durable_one_always", "lmdb_sync_put", "one write (always) / py-lmdb put sync, 1 per txn"),
        ("durable_pool_always", "durable_pool_no", f"{pool}: fsync always / fsync no"),
        ("durable_pool_everysec", "durable_pool_no", f"{pool}: fsync everysec / fsync no"),
        ("durable_pool_no", "durable_pool_none", f"{pool}: fsync no / store none"),
        ("durable_pool_none", "write_inflight_raw", f"{pool} (store none) / 1 raw DEALER × 100"),
        (
            "durable_pool_always",
            "lmdb_sync_txn",
            f"{pool} (always) / py-lmdb sync, {LMDB_TXN} puts per txn",
        ),
        ("write_inflight_raw", "redis_set_pipe", "raw DEALER writes / redis-py pipelined SET"),
        ("echo_asyncio_req", "echo_poll_req", "asyncio+uvloop / poll loop, REQ echo"),
        (
            "echo_asyncio_dealer100",
            "echo_poll_dealer100",
            f"asyncio+uvloop / poll loop, DEALER echo {WINDOW} in flight",
        ),
        ("echo_poll_req", "socketpair", "REQ echo (poll) / socketpair ping-pong floor"),
        ("redis_set", "echo_poll_req", "redis-py SET / REQ echo (poll)"),
    ]
    lines.append("")
    lines.append("Other ratios (time per op; < 1 means the first is faster):")
    for a, b, text in info:
        value = ratio(a, b)
        if value is not None:
            lines.append(f"  {value:6.2f}×  {text}")
    return lines, targets


# --- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children are killed either way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def preload(client: Client, n: int) -> None:
    """N records into ``TABLE``: one SET_STATE, then BATCHes, checked by size."""
    for start in range(0, n, 20_000):
        records = [{"id": i + 1, **record(i)} for i in range(start, min(start + 20_000, n))]
        if start == 0:
            client.set_state(TABLE, records)
        else:
            client.batch(
                [{"command": "CREATE_RECORD", "state": TABLE, "record": r} for r in records]
            )
    size = client.get_state_info(TABLE)["size"]
    if size != n:
        raise RuntimeError(f"preload: {size} records, expected {n}")


def bench(args: argparse.Namespace) -> int:
    quick: bool = args.quick
    n_records: int = args.records or (10_000 if quick else 100_000)
    repeats: int = args.repeats or (5 if quick else 9)
    seconds: float = args.seconds or (0.25 if quick else 0.9)
    t_start = time.monotonic()
    load_start = list(os.getloadavg())

    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="se-bench-"))  # on disk (fsync is real), not tmpfs
    os.chmod(tmp, 0o700)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    opened: list[Client] = []  # every client, closed in finally
    reader: ArenaReader | None = None
    pool: WriterPool | None = None
    lmdb_env: Any = None
    redis_conn: Any = None
    pair: socket.socket | None = None
    timeout = RECV_TIMEOUT_MS / 1000 * 6
    durable_n = min(n_records, DURABLE_RECORDS)  # records per durable server, LMDB keys

    def banner_of(server: ServerProcess) -> list[str]:
        # What the server says it runs with (arena, durability, ...), minus the paths.
        return [
            " ".join(line.split())
            for line in server.output().splitlines()
            if line.startswith("  ") and not line.strip().startswith(("data dir", "endpoint"))
        ]

    try:
        # stateengine server, no persistence (transport + engine), preloaded.
        server = ServerProcess(tmp / "data", "--store", "none", start_timeout=START_TIMEOUT)
        children.servers.append(server)
        server.start()
        client = server.connect(timeout=timeout)
        opened.append(client)
        t0 = time.perf_counter()
        preload(client, n_records)
        preload_s = time.perf_counter() - t0
        body = pack({**patch_request(0, n_records), "req_id": 1})
        banner = banner_of(server)
        # Socket-only reads: a client given only the endpoint never looks at the arena.
        socket_client = Client(server.endpoint, timeout=timeout)
        opened.append(socket_client)
        # Arena reads, in this process (a worker: not the server).
        if not server.info.get("arena"):
            raise RuntimeError("the server publishes no arena (server.json has no 'arena')")
        arena_client = Client(server.endpoint, server.data_dir, timeout=timeout)
        opened.append(arena_client)
        reader = ArenaReader.attach(str(server.info["arena"]))
        if reader.get(TABLE, n_records) != arena_client.get_record(TABLE, n_records):
            raise RuntimeError("the arena and the client disagree on the last record")

        # Durable servers, one per fsync policy (the default store: log).
        durable: dict[str, ServerProcess] = {}
        durable_clients: dict[str, Client] = {}
        for policy in FSYNC_POLICIES:
            dserver = ServerProcess(
                tmp / f"data-{policy}",
                "--store",
                "log",
                "--fsync",
                policy,
                start_timeout=START_TIMEOUT,
            )
            children.servers.append(dserver)
            dserver.start()
            durable[policy] = dserver
            dclient = Client(dserver.endpoint, timeout=timeout)
            opened.append(dclient)
            preload(dclient, durable_n)
            durable_clients[policy] = dclient
        durable_banners = {policy: banner_of(d) for policy, d in durable.items()}
        pool_targets = {**{p: d.endpoint for p, d in durable.items()}, "none": server.endpoint}
        pool = WriterPool(
            ctx,
            children,
            f"ipc://{tmp}/writers.sock",
            list(pool_targets.values()),
            durable_n,  # the store-none server holds n_records ≥ durable_n
        )
        pool_index = {name: i for i, name in enumerate(pool_targets)}

        # Echo servers.
        ep_poll = f"ipc://{tmp}/echo-poll.sock"
        ep_async = f"ipc://{tmp}/echo-asyncio.sock"
        p_poll = children.spawn("--role", "echo-poll", "--endpoint", ep_poll)
        p_async = children.spawn("--role", "echo-asyncio", "--endpoint", ep_async)
        wait_echo(ctx, ep_poll, p_poll)
        wait_echo(ctx, ep_async, p_async)

        rows: list[Row] = []
        rows += stateengine_rows(ctx, client, socket_client, server.endpoint, n_records)
        rows += arena_rows(arena_client, reader, n_records)
        rows += echo_rows(ctx, ep_poll, "poll", body)
        rows += echo_rows(ctx, ep_async, "asyncio", body)
        redis_list, redis_conn, redis_skipped = redis_rows(n_records)
        rows += redis_list
        floor, pair = socketpair_row(children, len(body))
        rows.append(floor)
        rows += durable_rows(durable_clients, pool, pool_index, seconds, durable_n)
        lmdb_list, lmdb_env, lmdb_skipped = lmdb_rows(tmp / "lmdb", durable_n, seconds)
        rows += lmdb_list

        env = environment(redis_conn)
        env["loadavg_start"] = load_start
        for row in rows:
            calibrate(row, seconds, WINDOW)
        measure(rows, repeats)
        env["loadavg_end"] = list(os.getloadavg())
        elapsed = time.monotonic() - t_start

        by_key = {r.key: r for r in rows}
        lines = [
            f"stateengine server benchmark ({'quick' if quick else 'full'}), "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}, commit {env.get('git_commit', '?')}",
            f"python {env['python']} · pyzmq {env['pyzmq']} / libzmq {env['libzmq']} · "
            f"msgpack {env['msgpack']} · uvloop {env.get('uvloop', 'n/a')} · "
            f"redis-py {env.get('redis_py', 'n/a')} · "
            f"redis-server {env.get('redis_server', 'n/a')}",
            f"{env.get('cpu', platform.machine())} · {env['cpu_count']} cores "
            f"({env['cpu_affinity']} usable) · load average "
            f"{' '.join(f'{x:.2f}' for x in env['loadavg_start'])} at start, "
            f"{' '.join(f'{x:.2f}' for x in env['loadavg_end'])} at end",
            f"records preloaded: {n_records} (6 fields, {len(pack(record(0)))} B msgpack; "
            f"{preload_s:.2f} s); request {len(body)} B; transport ipc:// in {tmp}; "
            f"median of {repeats} repeats (round-robin), spread min..max; "
            f"~{seconds} s per repeat",
        ]
        lines.append(
            "server (write, get rows): python -m stateengine serve --store none (no "
            f"persistence: transport + engine) in its own process (pid {server.pid}); "
            + (" · ".join(banner) or "no settings printed")
        )
        lines.append(
            f"durable servers: --store log --fsync always|everysec|no, {durable_n} "
            f"records each; {WRITERS} writer processes × {WRITER_INFLIGHT} pre-encoded "
            f"PATCH_RECORDs in flight, acknowledged writes counted over a {seconds} s window "
            f"after {WRITER_RAMP} s ramp-up; py-lmdb {lmdb_version()} sync=True in {tmp} "
            "(same disk)"
        )
        for policy, lines_of in durable_banners.items():
            lines.append(f"  fsync {policy}: " + " · ".join(lines_of))
        if redis_skipped:
            lines.append(f"Redis rows skipped: {redis_skipped}")
        if lmdb_skipped:
            lines.append(f"LMDB rows skipped: {lmdb_skipped}")
        busy = env["loadavg_start"][0]
        if busy > 0.5 * (env["cpu_affinity"] or env["cpu_count"] or 1):
            lines.append(
                f"WARNING: the machine was busy before the run (1-minute load {busy:.2f} on "
                f"{env['cpu_affinity'] or env['cpu_count']} cores): absolute figures are noisy; "
                "the ratios, measured round-robin, less so"
            )
        lines.append("")
        lines += render_table(rows)
        lines.append("")
        lines.append("Targets:")
        rlines, targets = ratio_lines(by_key, redis_skipped, lmdb_skipped)
        lines += rlines
        lines.append("")
        lines.append(f"total {elapsed:.1f} s")
        print("\n".join(lines), flush=True)

        if not args.no_json:
            out_dir = HERE / "results"
            out_dir.mkdir(exist_ok=True)
            out = out_dir / f"server-{time.strftime('%Y%m%d-%H%M%S')}.json"
            doc = {
                "benchmark": "bench/server.py",
                "mode": "quick" if quick else "full",
                "environment": env,
                "config": {
                    "records": n_records,
                    "repeats": repeats,
                    "seconds_per_repeat": seconds,
                    "window": WINDOW,
                    "request_bytes": len(body),
                    "record_bytes": len(pack(record(0))),
                    "redis_skipped": redis_skipped or None,
                    "lmdb_skipped": lmdb_skipped or None,
                    "server_store": "none",
                    "server_banner": banner,
                    "durable_records": durable_n,
                    "durable_banners": durable_banners,
                    "writers": WRITERS,
                    "writer_inflight": WRITER_INFLIGHT,
                    "writer_window_s": seconds,
                    "writer_ramp_s": WRITER_RAMP,
                    "lmdb_puts_per_txn": LMDB_TXN,
                },
                "rows": {
                    r.key: {
                        "label": r.label,
                        "us_per_op_median": r.us,
                        "us_per_op_min": min(r.samples_us),
                        "us_per_op_max": max(r.samples_us),
                        "ops_per_s_median": r.rate,
                        "ops_per_repeat": r.ops,
                        "samples_us": r.samples_us,
                        **({"ops_per_repeat_all": r.ops_seen} if r.ops_seen else {}),
                    }
                    for r in rows
                },
                "targets": targets,
                "elapsed_s": elapsed,
            }
            out.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"results: {out.relative_to(HERE.parent)}")
        return 0
    finally:
        if redis_conn is not None:
            redis_cleanup(redis_conn, n_records)
        for opened_client in opened:
            with contextlib.suppress(Exception):
                opened_client.close()
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()
        if lmdb_env is not None:
            with contextlib.suppress(Exception):
                lmdb_env.close()
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close()
        if pair is not None:
            pair.close()
        ctx.destroy(linger=0)
        children.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records, shorter repeats")
    parser.add_argument("--records", type=int, help="records preloaded (default 10^5; quick 10^4)")
    parser.add_argument("--repeats", type=int, help="repeats per row (default 9; quick 5)")
    parser.add_argument("--seconds", type=float, help="target seconds per repeat")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--servers", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "writer":
        run_writer(args.endpoint, args.servers.split(","), args.index, args.records)
        return 0
    if args.role == "echo-poll":
        run_echo_poll(args.endpoint)
        return 0
    if args.role == "echo-asyncio":
        run_echo_asyncio(args.endpoint)
        return 0
    if args.role == "pong":
        run_pong(args.fd)
        return 0
    if args.repeats is not None and args.repeats < 5:
        parser.error("--repeats must be at least 5")
    with sigterm_as_exit():
        return bench(args)


if __name__ == "__main__":
    sys.exit(main())
