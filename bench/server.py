"""Server benchmark: the writer behind its ZeroMQ ROUTER, against its floors and Redis.

    python bench/server.py [--quick] [--repeats R] [--records N] [--no-json]

Everything in the table is measured in this one run, every row in its own processes the
way a deployment runs it (the server, each echo server and Redis in a process of their
own; the client in this one), over ``ipc://`` in a private temporary directory:

* **stateengine** (``python -m stateengine serve`` through ``ServerProcess``), with N
  records of the 6-field, ~70-byte benchmark shape preloaded by ``SET_STATE``:
  one acknowledged ``PATCH_RECORD`` at a time (the client API, and a raw REQ socket with
  pre-encoded requests), 100 writes in flight (``Client.send_many`` and a raw DEALER),
  ``BATCH`` of 100 writes per frame, and ``get_record`` over the socket.
* **floors**: a ROUTER echo server on a plain ``zmq.Poller`` loop (the writer's loop
  with the work taken out) and the same echo on ``zmq.asyncio`` + uvloop, each with one
  request in flight (REQ) and 100 in flight (DEALER); a ``socketpair`` ping-pong between
  two processes.
* **Redis** through redis-py on 127.0.0.1:6379: SET and GET one at a time, and SET
  pipelined 100 per round trip (rows skipped, with a line saying so, when unreachable).

Rows are measured round-robin (repeat 1 of every row, then repeat 2, ...), so a burst of
machine noise spreads over all rows instead of landing on one. Each repeat is sized to
take about the same time; figures are medians of the repeats, spread min..max. Results
also go to ``bench/results/server-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from stateengine.client.client import Client
from stateengine.testing import ServerProcess

HERE = Path(__file__).resolve().parent
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_PREFIX = "stateengine-bench-server:"
WINDOW = 100  # requests in flight / writes per BATCH / SETs per pipeline
RECV_TIMEOUT_MS = 10_000  # every socket wait in the benchmark is bounded by this
START_TIMEOUT = 20.0
TABLE = "bench"

# Targets (the issue): ratio limits.
ONE_WRITE_VS_REQ_ECHO = 1.3
INFLIGHT_VS_DEALER_ECHO = 1.3


def record(i: int) -> dict[str, Any]:
    """The benchmark record shape (as bench/engine.py): 6 fields, ~70 bytes of msgpack."""
    return {
        "name": f"user{i:06d}",
        "email": f"u{i}@example.com",
        "status": "pending",
        "score": i * 0.5,
        "tries": 0,
        "tag": "etl",
    }


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


# --- measurement ------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: ``body(n)`` performs *n* operations (writes, gets, echoes)."""

    key: str
    label: str
    body: Callable[[int], None]
    ops: int = 0  # operations per repeat, set by calibration
    samples_us: list[float] = field(default_factory=list)  # µs per operation, per repeat

    @property
    def us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def rate(self) -> float:
        return 1e6 / self.us


def timed(body: Callable[[int], None], n: int) -> float:
    """Seconds for ``body(n)``."""
    gc.collect()
    start = time.perf_counter()
    body(n)
    return time.perf_counter() - start


def calibrate(row: Row, seconds: float, granule: int) -> None:
    """Warm the row up, then size its repeats to take about *seconds* each.

    The estimate is the fastest of three short runs, so one burst of noise during
    calibration does not shrink the row's repeats.
    """
    timed(row.body, granule)  # warm-up: first connections, caches, allocator
    n = granule
    while True:
        dt = timed(row.body, n)
        if dt >= 0.03 or n >= 1_000_000:
            break
        n *= 4
    per_op = min(dt, timed(row.body, n), timed(row.body, n)) / n
    row.ops = max(granule, int(seconds / per_op) // granule * granule)


def measure(rows: list[Row], repeats: int) -> None:
    for _ in range(repeats):
        for row in rows:
            row.samples_us.append(timed(row.body, row.ops) / row.ops * 1e6)


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


def stateengine_rows(
    ctx: zmq.Context[zmq.Socket[bytes]], client: Client, endpoint: str, n_records: int
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

    def one_client(n: int) -> None:
        patch = client.patch_record
        i = counter[0]
        for k in range(i, i + n):
            patch(TABLE, k % n_records + 1, {"status": "running", "tries": k})
        counter[0] = i + n

    def one_raw(n: int) -> None:
        send, recv = req.send, req.recv
        i = counter[0]
        reply = b""
        for k in range(i, i + n):
            send(raw[k % cycle])
            reply = recv()
        counter[0] = i + n
        check(reply)

    def window_client(n: int) -> None:
        i = counter[0]
        for start in range(i, i + n, WINDOW):
            results = client.send_many(
                [patch_request(k, n_records) for k in range(start, start + WINDOW)]
            )
            if isinstance(results[-1], Exception):
                raise results[-1]
        counter[0] = i + n

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
        read = client.get_record
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
        Row("get_socket", "get (socket): client.get_record", get),
    ]


def redis_rows(n_records: int) -> tuple[list[Row], Any, str]:
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
    keys = [f"{REDIS_PREFIX}{i + 1}" for i in range(n_records)]
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


def redis_cleanup(r: Any, n_records: int) -> None:
    with contextlib.suppress(Exception):
        for start in range(0, n_records, 1000):
            r.unlink(
                *(f"{REDIS_PREFIX}{k + 1}" for k in range(start, min(start + 1000, n_records)))
            )
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
    by_key: dict[str, Row], redis_skipped: str
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


def bench(args: argparse.Namespace) -> int:
    quick: bool = args.quick
    n_records: int = args.records or (10_000 if quick else 100_000)
    repeats: int = args.repeats or (5 if quick else 9)
    seconds: float = args.seconds or (0.25 if quick else 0.9)
    t_start = time.monotonic()
    load_start = list(os.getloadavg())

    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="se-bench-"))
    os.chmod(tmp, 0o700)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client: Client | None = None
    redis_conn: Any = None
    pair: socket.socket | None = None
    try:
        # stateengine server, preloaded.
        server = ServerProcess(tmp / "data", start_timeout=START_TIMEOUT)
        children.servers.append(server)
        server.start()
        client = server.connect(timeout=RECV_TIMEOUT_MS / 1000 * 6)
        t0 = time.perf_counter()
        for start in range(0, n_records, 20_000):
            records = [
                {"id": i + 1, **record(i)} for i in range(start, min(start + 20_000, n_records))
            ]
            if start == 0:
                client.set_state(TABLE, records)
            else:
                client.batch(
                    [{"command": "CREATE_RECORD", "state": TABLE, "record": r} for r in records]
                )
        preload_s = time.perf_counter() - t0
        info = client.get_state_info(TABLE)
        if info["size"] != n_records:
            raise RuntimeError(f"preload: {info['size']} records, expected {n_records}")
        body = pack({**patch_request(0, n_records), "req_id": 1})
        # What the server says it runs with (arena, durability, ...), minus the paths.
        banner = [
            " ".join(line.split())
            for line in server.output().splitlines()
            if line.startswith("  ") and not line.strip().startswith(("data dir", "endpoint"))
        ]

        # Echo servers.
        ep_poll = f"ipc://{tmp}/echo-poll.sock"
        ep_async = f"ipc://{tmp}/echo-asyncio.sock"
        p_poll = children.spawn("--role", "echo-poll", "--endpoint", ep_poll)
        p_async = children.spawn("--role", "echo-asyncio", "--endpoint", ep_async)
        wait_echo(ctx, ep_poll, p_poll)
        wait_echo(ctx, ep_async, p_async)

        rows: list[Row] = []
        rows += stateengine_rows(ctx, client, server.endpoint, n_records)
        rows += echo_rows(ctx, ep_poll, "poll", body)
        rows += echo_rows(ctx, ep_async, "asyncio", body)
        redis_list, redis_conn, redis_skipped = redis_rows(n_records)
        rows += redis_list
        floor, pair = socketpair_row(children, len(body))
        rows.append(floor)

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
            f"server: python -m stateengine serve in its own process (pid {server.pid}); "
            + (" · ".join(banner) or "no settings printed")
        )
        if redis_skipped:
            lines.append(f"Redis rows skipped: {redis_skipped}")
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
        rlines, targets = ratio_lines(by_key, redis_skipped)
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
                    "server_banner": banner,
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
        if client is not None:
            client.close()
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
    args = parser.parse_args(argv)
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
