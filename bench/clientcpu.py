"""The client's own CPU per request: the write rows' and the claim rows' client side.

    python -m bench.clientcpu [--calls N] [--repeats R] [--only patch,claim,many,raw,raw100]
    python -m bench.clientcpu --profile patch|claim|many   (cProfile of the client loop)
    python -m bench.clientcpu --instructions   (callgrind: instructions per patch_record)

Against a private ``--store none`` server (``stateengine.testing.ServerProcess``), the
process CPU time (``time.process_time``: this process, libzmq's I/O thread included) per
call of

* ``patch``: ``client.patch_record`` one at a time (the ``write1`` row's loop);
* ``claim``: ``client.claim_record`` of a pending task (the claim rows' worker call);
* ``many``: ``client.send_many`` of 100 ``PATCH_RECORD`` (the ``write100`` row), per request;
* ``raw`` / ``raw100``: the floors: a raw REQ socket sending pre-encoded bodies one at a
  time, a raw DEALER 100 in flight (decoding the last reply only, as the bench's rows);
* ``fake_patch``, ``fake_claim``, ``fake_many``: the same client calls with the client's
  socket swapped for a stand-in that takes each body and hands back a pre-encoded reply
  (a 7-field record, ``seq``): the client's Python work alone, without libzmq or the
  server, so that it can be compared between trees on a loaded machine (the real rows'
  CPU swings by +-50 % with the load, libzmq's I/O thread being counted).

With ``--instructions``: the instructions one ``patch_record`` costs the client process
and one raw REQ write of a pre-encoded body (``valgrind --tool=callgrind`` on a child
making 500 and then 1500 calls; the difference over 1000: start-up and imports cancel).
Instructions do not move with the machine's load; the CPU time also pays for the caches
the server and other processes cool between two calls.

Medians of R repeats, the rows interleaved within each repeat. CPU time, not wall time,
so the figure holds on a shared machine; compare trees by running both in turn.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.measure import callgrind_total
from bench.workloads import TASK_SCHEMA
from stateengine.client.client import Client
from stateengine.testing.server import ServerProcess

TABLE = "t"
WINDOW = 100


def _patch(i: int, n: int) -> dict[str, Any]:
    return {
        "command": "PATCH_RECORD",
        "state": TABLE,
        "id": i % n + 1,
        "fields": {"status": "running", "tries": i},
    }


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i + 1,
            "name": f"n{i}",
            "email": f"e{i}@x",
            "status": "pending",
            "score": 1.0,
            "tries": 0,
            "tag": "a",
        }
        for i in range(n)
    ]


class FakeSocket:
    """Stands for the client's DEALER: swallows bodies, answers from a list in order."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.at = 0

    def send(self, body: bytes, *args: Any, **kwargs: Any) -> None:
        pass

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self.at += 1
        return self.replies[self.at - 1]

    def close(self, linger: int | None = None) -> None:
        pass


def fake_loops(client: Client, n: int) -> dict[str, Callable[[], float]]:
    """The client-only rows: *client*'s socket replaced by a :class:`FakeSocket`."""
    record = {"id": 1, "name": "n1", "email": "e1@x", "status": "running", "score": 1.0}
    replies = [
        msgpack.packb(
            {"req_id": i + 1, "ok": True, "result": {**record, "tries": i}, "seq": i + 1},
            use_bin_type=True,
        )
        for i in range(n)
    ]
    client._socket()
    client._reset_socket()

    def timed(body: Callable[[], None]) -> float:
        client._ids = itertools.count(1)
        client._sock = FakeSocket(replies)  # type: ignore[assignment]
        client.seen_seq = 0
        gc.collect()
        start = time.process_time()
        body()
        elapsed = time.process_time() - start
        client._sock = None
        return elapsed / n

    def patch() -> None:
        call = client.patch_record
        for k in range(n):
            call(TABLE, k + 1, {"status": "running", "tries": k})

    def claim() -> None:
        call = client.claim_record
        for _ in range(n):
            call(TABLE, {"status": "pending"}, {"status": "running"})

    def many() -> None:
        for start in range(0, n, WINDOW):
            client.send_many([_patch(k, n) for k in range(start, start + WINDOW)])

    return {
        "fake_patch": lambda: timed(patch),
        "fake_claim": lambda: timed(claim),
        "fake_many": lambda: timed(many),
    }


def loops(client: Client, endpoint: str, n: int) -> dict[str, Callable[[], float]]:
    """Each row: a function that runs *n* calls and returns the CPU seconds per call."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    req = ctx.socket(zmq.REQ)
    dealer = ctx.socket(zmq.DEALER)
    for sock in (req, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
    raw = [msgpack.packb({"req_id": i + 1, **_patch(i, n)}, use_bin_type=True) for i in range(n)]

    def timed(body: Callable[[], None]) -> float:
        gc.collect()
        start = time.process_time()
        body()
        return (time.process_time() - start) / n

    def patch() -> None:
        call = client.patch_record
        for k in range(n):
            call(TABLE, k + 1, {"status": "running", "tries": k})

    def claim() -> None:
        call = client.claim_record
        for _ in range(n):
            if call(TABLE, {"status": "pending"}, {"status": "running"}) is None:
                raise RuntimeError("no pending task left")

    def refill() -> None:
        client.set_state(TABLE, _rows(n))

    def many() -> None:
        for start in range(0, n, WINDOW):
            out = client.send_many([_patch(k, n) for k in range(start, start + WINDOW)])
            if isinstance(out[-1], Exception):
                raise out[-1]

    def raw1() -> None:
        send, recv = req.send, req.recv
        reply = b""
        for body in raw:
            send(body)
            reply = recv()
        assert msgpack.unpackb(reply)["ok"]

    def raw100() -> None:
        send, recv = dealer.send, dealer.recv
        reply = b""
        for start in range(0, n, WINDOW):
            for body in raw[start : start + WINDOW]:
                send(body)
            for _ in range(WINDOW):
                reply = recv()
        assert msgpack.unpackb(reply)["ok"]

    def claim_row() -> float:
        refill()
        return timed(claim)

    return {
        "patch": lambda: timed(patch),
        "claim": claim_row,
        "many": lambda: timed(many),
        "raw": lambda: timed(raw1),
        "raw100": lambda: timed(raw100),
    }


def _child(mode: str, endpoint: str, data_dir: str, n: int) -> None:
    """The loop callgrind counts: *n* patch_record calls, or *n* raw REQ writes."""
    if mode == "client":
        with Client(endpoint, data_dir) as client:
            for k in range(n):
                client.patch_record(TABLE, k % 100 + 1, {"status": "running", "tries": k})
        return
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.connect(endpoint)
    bodies = [msgpack.packb({"req_id": k + 1, **_patch(k, 100)}) for k in range(n)]
    for body in bodies:
        req.send(body)
        req.recv()
    req.close()
    ctx.term()


def instructions(endpoint: str, data_dir: Path) -> None:
    """Print the instructions per call of the client and of the raw REQ floor."""
    for mode in ("raw", "client"):
        counts = []
        for n in (500, 1500):
            args = ["--child", mode, endpoint, str(data_dir), str(n)]
            counts.append(callgrind_total("bench.clientcpu", args))
        label = "patch_record" if mode == "client" else "raw REQ"
        print(f"{label:12s} instructions per call {(counts[1] - counts[0]) / 1000:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--only", default="patch,claim,many,raw,raw100,fake_patch,fake_claim,fake_many"
    )
    parser.add_argument("--profile", default="")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, endpoint, data_dir, count = args.child
        _child(mode, endpoint, data_dir, int(count))
        return
    n = args.calls - args.calls % WINDOW
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(Path(tmp) / "data", "--store", "none") as server,
        server.connect() as client,
        server.connect() as alone,
    ):
        client.create_state(TABLE, schema=TASK_SCHEMA, indexes=["status"])
        client.set_state(TABLE, _rows(100 if args.instructions else n))
        if args.instructions:
            instructions(server.endpoint, server.data_dir)
            return
        rows = loops(client, server.endpoint, n) | fake_loops(alone, n)
        names = [args.profile] if args.profile else args.only.split(",")
        for name in names:  # warm-up: sockets connected, indexes built, code paths hot
            rows[name]()
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(rows[args.profile])
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)
            return
        samples: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.repeats):
            for name in names:
                samples[name].append(rows[name]())
        for name in names:
            cpu = sorted(samples[name])
            print(
                f"{name:7s} CPU/call median {statistics.median(cpu) * 1e6:6.1f} µs"
                f"  (min {cpu[0] * 1e6:.1f}, max {cpu[-1] * 1e6:.1f}; {args.repeats}x{n})"
            )


if __name__ == "__main__":
    main()
