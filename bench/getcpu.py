"""CPU time of the ``get`` rows, in this process: the floor, the arena gets and py-lmdb.

    PYTHONPATH=. python -m bench.getcpu [--records N] [--ops K] [--repeats R]

The ``get`` workload's rows, each in the loop shape ``python -m bench`` times it (the
floor and py-lmdb through ``workloads.cycle``, the arena rows as ``server.arena_rows``
loops), over N records (default 10^5, the bench's shape) preloaded into a
``serve --store none`` server and into an LMDB environment. Each figure is
``time.process_time`` per get, the median of R repeats of K gets, the rows interleaved
(repeat 1 of every row, then repeat 2, ...). CPU, not wall: on a shared machine the
medians of interleaved runs compare where wall times do not; run two checkouts in turn.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.getcpu", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    n = args.records
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
