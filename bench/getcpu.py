"""CPU time of the ``get`` rows, in this process: the floor, the arena gets and py-lmdb.

    PYTHONPATH=. python -m bench.getcpu [--records N] [--ops K] [--repeats R]
    PYTHONPATH=. python -m bench.getcpu --instructions [--records N]

The ``get`` workload's rows, each in the loop shape ``python -m bench`` times it (the
floor and py-lmdb through ``workloads.cycle``, the arena rows as ``server.arena_rows``
loops), over N records (default 10^5, the bench's shape) preloaded into a
``serve --store none`` server and into an LMDB environment. Each figure is
``time.process_time`` per get, the median of R repeats of K gets, the rows interleaved
(repeat 1 of every row, then repeat 2, ...). CPU, not wall: on a shared machine the
medians of interleaved runs compare where wall times do not; run two checkouts in turn.

With ``--instructions``: the instructions one get of the floor, of the raw
``ArenaReader.get`` and of ``client.get_record`` costs (``valgrind --tool=callgrind`` on a
child making 200 warm-up gets and then 2000, then 6000, over N records, default 1000; the
difference over 4000: start-up and imports cancel). The load does not move them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from bench.measure import callgrind_total
from bench.records import record
from bench.server import TABLE, preload
from bench.workloads import arena_blobs, copy_unpackb_floor, cycle
from stateengine.client.client import Client
from stateengine.shm import ArenaReader
from stateengine.testing import ServerProcess


def rows(
    client: Client, reader: ArenaReader, env: Any, n: int
) -> list[tuple[str, Callable[[int], None]]]:
    """The rows, each ``body(k)`` doing k gets (ids 1..n in turn, as the bench's)."""
    copy_unpackb = copy_unpackb_floor(arena_blobs(reader, n))
    unpackb = msgpack.unpackb

    def arena(read: Callable[[str, int], Any]) -> Callable[[int], None]:
        counter = [0]

        def run(ops: int) -> None:
            i = counter[0]
            for k in range(i, i + ops):
                read(TABLE, k % n + 1)
            counter[0] = i + ops

        return run

    out = [
        ("floor: bytes copy + msgpack.unpackb", cycle(n, copy_unpackb)),
        ("raw ArenaReader.get", arena(reader.get)),
        ("client.get_record via the arena", arena(client.get_record)),
    ]
    if env is not None:
        keys = [b"%09d" % (i + 1) for i in range(n)]

        def lmdb_get(k: int) -> Any:
            with env.begin() as txn:
                return unpackb(txn.get(keys[k - 1]))

        out.append(("py-lmdb: txn + get + unpackb", cycle(n, lmdb_get)))
    return out


INSTRUCTION_ROWS = ("floor", "raw", "client")


def child(mode: str, endpoint: str, data_dir: str, arena: str, records: int, n: int) -> None:
    """The loop callgrind counts: 200 warm-up gets of one row, then *n* more."""
    with (
        Client(endpoint, data_dir, timeout=30) as client,
        ArenaReader.attach(arena) as reader,
    ):
        if mode == "floor":  # one Python frame a get, as the CPU row's cycle() makes
            copy_unpackb = copy_unpackb_floor(arena_blobs(reader, records))
            for k in range(200):
                copy_unpackb(k % records + 1)
            for k in range(n):
                copy_unpackb(k % records + 1)
            return
        read = client.get_record if mode == "client" else reader.get
        for k in range(200):
            read(TABLE, k % records + 1)
        for k in range(n):
            read(TABLE, k % records + 1)


def instructions(records: int, low: int = 2000, high: int = 6000) -> dict[str, float]:
    """Instructions per get of each of INSTRUCTION_ROWS (see the module's docstring)."""
    out: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="se-getinstr-"))
    env = dict(os.environ, PYTHONHASHSEED="0")
    try:
        with ServerProcess(tmp / "data", "--store", "none") as srv:
            with srv.connect(timeout=120) as c:
                preload(c, records)
            for mode in INSTRUCTION_ROWS:
                counts = []
                for n in (low, high):
                    args = [mode, srv.endpoint, str(srv.data_dir), str(srv.info["arena"])]
                    counts.append(
                        callgrind_total(
                            "bench.getcpu", ["--child", *args, str(records), str(n)], env
                        )
                    )
                out[mode] = (counts[1] - counts[0]) / (high - low)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        mode, endpoint, data_dir, arena, records, n = argv[1:7]
        child(mode, endpoint, data_dir, arena, int(records), int(n))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.getcpu", description=__doc__)
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--ops", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--instructions", action="store_true")
    args = parser.parse_args(argv)
    if args.instructions:
        got = instructions(args.records or 1000)
        print(f"get rows, instructions per get (callgrind): {args.records or 1000:,} records")
        for mode, count in got.items():
            print(f"  {mode:8s} {count:9.0f}")
        return 0
    n = args.records or 100_000
    try:
        import lmdb
    except ImportError:  # pip install .[bench]
        lmdb = None
    tmp = Path(tempfile.mkdtemp(prefix="se-getcpu-"))
    try:
        with ServerProcess(tmp / "data", "--store", "none") as srv:
            with srv.connect(timeout=120) as c:
                preload(c, n)
            env = None
            if lmdb is not None:
                env = lmdb.open(str(tmp / "lmdb"), map_size=1 << 30)
                with env.begin(write=True) as txn:
                    for i in range(n):
                        txn.put(b"%09d" % (i + 1), msgpack.packb(record(i)))
            with (
                Client(srv.endpoint, srv.data_dir, timeout=30) as client,
                ArenaReader.attach(str(srv.info["arena"])) as reader,
            ):
                table = rows(client, reader, env, n)
                for _label, body in table:
                    body(min(args.ops, 1000))  # warm: attach, catch up, first pages
                samples: dict[str, list[float]] = {label: [] for label, _b in table}
                for _ in range(args.repeats):
                    for label, body in table:
                        t0 = time.process_time()
                        body(args.ops)
                        samples[label].append((time.process_time() - t0) / args.ops * 1e6)
                if env is not None:
                    env.close()
        med = {label: statistics.median(v) for label, v in samples.items()}
        floor = med["floor: bytes copy + msgpack.unpackb"]
        print(f"get rows, CPU µs per get: {n:,} records, median of {args.repeats} x {args.ops:,}")
        for label, v in samples.items():
            q = sorted(v)
            print(
                f"  {label:38} {med[label]:6.3f}  ({q[0]:.3f}-{q[-1]:.3f})"
                f"  {med[label] / floor:5.2f}x floor"
            )
        lm = med.get("py-lmdb: txn + get + unpackb")
        if lm is not None:
            speed = lm / med["client.get_record via the arena"]
            print(f"  client.get_record vs py-lmdb: {speed:.3f}x its speed (> 1: faster)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
