"""The ``cluster`` workload: writes through a one-node cluster (``serve --cluster``, its
stream on a private ``redis-server`` with AOF ``appendfsync always``) next to a single
server whose log is fsynced per pass (``--store log --fsync always``), in the same run:
both acknowledge a write only once it is on disk.

The single-server rows are the reference: the issue's target is a cluster at ≥ 0.5× a
single server's writes/s with 100 writes in flight (a node appends one stream entry per
pass, so concurrent writes share an entry).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.measure import Row
from bench.server import START_TIMEOUT, TABLE, WINDOW, Children, patch_request, preload
from stateengine.client.client import Client
from stateengine.testing import ServerProcess

#: Records preloaded into each server (the rows patch them in turn).
RECORDS = 2000


def _free_port() -> int:
    for _ in range(20):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:  # the machine's own Redis
            return port
    raise RuntimeError("no free loopback port")


def start_redis(directory: Path, stack: contextlib.ExitStack) -> tuple[int | None, str]:
    """A private ``redis-server`` (AOF always) on a free port: ``(port, "")``, or
    ``(None, why)`` when there is no binary or it does not answer."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None, "the redis-server binary is not installed"
    import redis

    directory.mkdir(mode=0o700)
    port = _free_port()
    log = open(directory / "redis.log", "ab")  # closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(
        [
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
        ],
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


def cluster_rows(
    tmp: Path, stack: contextlib.ExitStack, children: Children
) -> tuple[list[Row], str]:
    """The four rows (cluster and single server, 1 and 100 in flight), or why none."""
    port, why = start_redis(tmp / "cluster-redis", stack)
    if port is None:
        return [], why
    single = ServerProcess(
        tmp / "cluster-single", "--store", "log", "--fsync", "always", start_timeout=START_TIMEOUT
    )
    node = ServerProcess(
        tmp / "cluster-node",
        "--cluster",
        f"redis://127.0.0.1:{port}/bench",
        start_timeout=START_TIMEOUT,
    )
    rows: list[Row] = []
    for name, proc in (("single", single), ("write", node)):
        children.servers.append(proc)
        proc.start()
        client = stack.enter_context(proc.connect(timeout=60))
        preload(client, RECORDS)
        rows += _rows(name, client)
    return rows, ""


def _rows(name: str, client: Client) -> list[Row]:
    counter = [0]

    def one(n: int) -> None:
        patch = client.patch_record
        i = counter[0]
        for k in range(i, i + n):
            patch(TABLE, k % RECORDS + 1, {"status": "running", "tries": k})
        counter[0] = i + n

    def window(n: int) -> None:
        i = counter[0]
        for start in range(i, i + n, WINDOW):
            results = client.send_many(
                [patch_request(k, RECORDS) for k in range(start, start + WINDOW)]
            )
            if isinstance(results[-1], Exception):
                raise results[-1]
        counter[0] = i + n

    return [
        Row(f"cluster_{name}_one", "", one),
        Row(f"cluster_{name}_inflight", "", window),
    ]
