"""Arena read latency and scaling, side by side with the floor, LMDB and a dict.

    python bench/arena.py [--quick] [--records N] [--repeats R]

One writer (this process) fills the arena and an LMDB environment with the same
records; every read figure is measured in *another* process (spawn). Each figure
is the median of R >= 5 repeats (ns per get, min..max after it). Rows:

* ``dict get``           — a decoded record from an in-process dict (no decode)
* ``dict get + unpackb`` — msgpack bytes from a dict, decoded (SPEC §8's floor)
* ``floor: copy+unpackb``— bytes copied out of the shared mapping, decoded
* ``arena get``          — ``ArenaReader.get``: seq check, index, copy, CRC, decode
* ``arena get_cached``   — an unchanged record re-read through the per-reader cache
* ``arena snapshot get`` — ``snap.get`` inside one open snapshot
* ``lmdb get+unpackb``   — py-lmdb, one read transaction per get, then decode

Then throughput (gets/s) of one reader process vs two at once, and a breakdown of
``arena get`` into its parts (the profile behind the ratios).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any

import msgpack

try:
    from bench.records import record as small
except ImportError:  # run as a script (python bench/arena.py): bench/ is sys.path[0]
    from records import record as small  # type: ignore[no-redef]

from stateengine.shm import ArenaReader, ArenaWriter

try:
    import lmdb
except ImportError:  # pragma: no cover - optional (pip install .[bench])
    lmdb = None  # type: ignore[assignment]


def medium(i: int) -> dict[str, Any]:
    # 30 fields, ~1 KB
    rec: dict[str, Any] = {f"f{k:02d}": f"value-{i}-{k}-" + "x" * 20 for k in range(24)}
    rec.update(id=i, score=i * 0.5, n=i, ok=True, tags=["a", "b", "c"], _version=1)
    return rec


SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {"small": small, "medium": medium}


def _time(fn: Callable[[], None], ops: int) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / ops


def latency_child(name: str, lmdb_path: str, n: int, ops: int, repeats: int, out: Any) -> None:
    import random

    rnd = random.Random(1)
    keys = [rnd.randrange(n) for _ in range(ops)]
    r = ArenaReader.attach(name)
    unpackb = msgpack.unpackb
    idx = r._idx["t"]
    mm = r._gmm
    spans = {i: (e[0], e[1]) for i, e in idx.items()}
    blobs = {i: mm[a:b] for i, (a, b) in spans.items()}
    decoded = {i: unpackb(b) for i, b in blobs.items()}
    get, get_cached = r.get, r.get_cached

    def arena_get() -> None:
        for k in keys:
            get("t", k)

    def cached() -> None:
        for k in keys:
            get_cached("t", k)

    def floor() -> None:
        for k in keys:
            a, b = spans[k]
            unpackb(mm[a:b])

    def dict_get() -> None:
        d = decoded
        for k in keys:
            d.get(k)

    def dict_unpackb() -> None:
        d = blobs
        for k in keys:
            unpackb(d[k])

    def snap_get() -> None:
        with r.snapshot() as snap:
            sg = snap.get
            for k in keys:
                sg("t", k)

    rows: dict[str, list[float]] = {}
    tests: list[tuple[str, Callable[[], None]]] = [
        ("dict get", dict_get),
        ("dict get + unpackb", dict_unpackb),
        ("floor: copy+unpackb", floor),
        ("arena get", arena_get),
        ("arena get_cached", cached),
        ("arena snapshot get", snap_get),
    ]
    env = None
    if lmdb is not None and lmdb_path:
        env = lmdb.open(lmdb_path, readonly=True, lock=True, max_readers=16)
        bkeys = [struct.pack(">q", k) for k in keys]

        def lmdb_get() -> None:
            begin = env.begin
            for bk in bkeys:
                with begin() as txn:
                    unpackb(txn.get(bk))

        tests.append(("lmdb get+unpackb", lmdb_get))
    cached()  # warm the cache
    for _ in range(repeats):
        for label, fn in tests:
            rows.setdefault(label, []).append(_time(fn, ops))
    # breakdown of one arena get, part by part
    uq = struct.Struct("<Q").unpack_from
    ctl = r._ctl
    ridx = r._idx
    ents = [idx[k] for k in keys]
    crc = zlib.crc32

    def p_seq() -> None:
        for _k in keys:
            uq(ctl, 32)[0]

    def p_lookup() -> None:
        for k in keys:
            ridx["t"].get(k)

    def p_copy() -> None:
        for e in ents:
            mm[e[0] : e[1]]

    def p_crc() -> None:
        for k in keys:
            crc(blobs[k], 0)

    def p_decode() -> None:
        for k in keys:
            unpackb(blobs[k])

    parts = {}
    for label, fn in [
        ("seq word", p_seq),
        ("2 dict lookups", p_lookup),
        ("copy", p_copy),
        ("crc32", p_crc),
        ("unpackb", p_decode),
    ]:
        parts[label] = statistics.median(_time(fn, ops) for _ in range(repeats))
    out.put((rows, parts, len(blobs[keys[0]])))
    if env is not None:
        env.close()
    r.close()


def throughput_child(name: str, n: int, seconds: float, start: Any, out: Any) -> None:
    r = ArenaReader.attach(name) if name else None
    keys = [list(range(lo, min(lo + 1000, n))) for lo in range(0, n, 1000)]
    start.wait(30)
    done = 0
    t0 = time.perf_counter()
    t_end = t0 + seconds
    j = 0
    if r is not None:
        get = r.get
        while time.perf_counter() < t_end:
            chunk = keys[j % len(keys)]
            j += 1
            for k in chunk:
                get("t", k)
            done += len(chunk)
    else:  # the machine's own scaling: a pure-Python loop of the same length
        while time.perf_counter() < t_end:
            for k in keys[j % len(keys)]:
                abs(k)
            j += 1
            done += 1000
    out.put(done / (time.perf_counter() - t0))
    if r is not None:
        r.close()


def run_throughput(ctx: Any, name: str, n: int, procs: int, seconds: float) -> float:
    out, start = ctx.Queue(), ctx.Event()
    ps = [
        ctx.Process(target=throughput_child, args=(name, n, seconds, start, out))
        for _ in range(procs)
    ]
    for p in ps:
        p.start()
    time.sleep(1.0)  # let them import and attach
    start.set()
    total = sum(out.get(timeout=120) for _ in ps)
    for p in ps:
        p.join(30)
    return float(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer ops per repeat")
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    repeats = max(5, args.repeats)
    ops = 20_000 if args.quick else 100_000
    n = args.records
    ctx = mp.get_context("spawn")
    print(
        f"arena bench: python {sys.version.split()[0]}, msgpack {msgpack.version}, "
        f"lmdb {lmdb.version() if lmdb else 'absent'}, {os.cpu_count()} cpus, "
        f"{n} records, {ops} gets x {repeats} repeats (medians, ns/get)"
    )
    for shape, make in SHAPES.items():
        w = ArenaWriter.create("stbench", initial_size=max(64 << 20, n * 2048))
        tmp = tempfile.mkdtemp(prefix="stbench-lmdb-")
        try:
            recs = [(i, msgpack.packb(make(i))) for i in range(n)]
            for lo in range(0, n, 1000):
                w.commit(lo // 1000 + 1, [("t", i, b) for i, b in recs[lo : lo + 1000]])
            lpath = ""
            if lmdb is not None:
                lpath = tmp
                env = lmdb.open(tmp, map_size=1 << 30)
                with env.begin(write=True) as txn:
                    for i, b in recs:
                        txn.put(struct.pack(">q", i), b)
                env.close()
            out = ctx.Queue()
            p = ctx.Process(target=latency_child, args=(w.name, lpath, n, ops, repeats, out))
            p.start()
            rows, parts, size = out.get(timeout=600)
            p.join(60)
            floor = statistics.median(rows["floor: copy+unpackb"])
            print(f"\n[{shape} record: {size} bytes of msgpack]")
            print(f"  {'operation':24} {'median':>9} {'min..max':>17} {'/ floor':>8}")
            for label, vals in rows.items():
                med = statistics.median(vals)
                print(
                    f"  {label:24} {med:9.0f} {min(vals):8.0f}..{max(vals):<8.0f}"
                    f" {med / floor:7.2f}x"
                )
            ag = statistics.median(rows["arena get"])
            if "lmdb get+unpackb" in rows:
                lm = statistics.median(rows["lmdb get+unpackb"])
                print(f"  arena get vs lmdb: {lm / ag:.2f}x faster")
            print(
                "  arena get, part by part (ns): "
                + ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
            )
            if shape == "small":
                secs = 1.0 if args.quick else 3.0
                one = run_throughput(ctx, w.name, n, 1, secs)
                two = run_throughput(ctx, w.name, n, 2, secs)
                s1 = run_throughput(ctx, "", n, 1, secs)
                s2 = run_throughput(ctx, "", n, 2, secs)
                print(
                    f"  throughput: 1 reader {one:,.0f} gets/s, 2 readers {two:,.0f} gets/s "
                    f"= {two / one:.2f}x (a pure-Python loop scales {s2 / s1:.2f}x here)"
                )
        finally:
            w.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
