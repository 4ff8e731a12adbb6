"""The profiles behind the suite's missed targets: where the time of one operation goes.

    python -m bench.profiles write|inflight|batch|bulk [--records N] [--top K]
    python -m bench.profiles get [--records N]
    python -m bench.profiles restart [--records N]
    python -m bench.profiles claim [--records N] [--ops TASKS] [--top K]

* ``write``, ``inflight``, ``batch``, ``bulk``: the server runs under ``cProfile`` (its
  own process, ``--store none``) while this process drives one workload of the suite
  (``patch_record`` one at a time; 100 in flight through ``send_many``; ``BATCH`` of
  100; ``SET_STATE`` of N records); then the server's top functions by own time, and
  the server's CPU time per operation next to the client's wall time per operation.
* ``get``: ``client.get_record`` via the arena split into its parts in this process
  (the client's reader lookup, the seq-word check, two dict lookups, the slice copy,
  the CRC, the decode), each part timed alone over the same ids, then ``cProfile`` of
  the call.
* ``restart``: a server started on a snapshot of N records, under ``cProfile``, until
  it first answers; its top functions by cumulative time.
* ``claim``: the server under ``cProfile`` while the suite's 4 claim workers claim and
  complete TASKS tasks from a table of N records (the others finished, ahead of them;
  an index on ``status``), as the ``claim``/``claimbig`` rows do; then the server's top
  functions by own time and its CPU per task next to the wall time per task.

The figures are for explaining a ratio, not for quoting: cProfile slows what it sees.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from bench.records import record
from stateengine.client.client import Client
from stateengine.runtime import discovery as paths
from stateengine.shm import ArenaReader

TABLE = "bench"


def start_profiled_server(
    data: Path, prof: Path, store: str = "none", timeout: float = 30
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "stateengine", "serve"]
    log = open(data.parent / "server.log", "ab")
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(data), "--store", store],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            if paths.read_server_file(data).get("pid") == proc.pid:
                return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"profiled server did not start within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def top(stats: pstats.Stats, k: int) -> str:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(k)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:])


def server_profile(workload: str, n: int, ops: int, k: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="se-prof-"))
    data, prof = tmp / "data", tmp / "server.prof"
    proc = start_profiled_server(data, prof)
    try:
        info = paths.read_server_file(data)
        with Client(info["endpoint"], timeout=60) as c:
            records = [{"id": i + 1, **record(i)} for i in range(n)]
            c.set_state(TABLE, records)
            reqs = [
                {
                    "command": "PATCH_RECORD",
                    "state": TABLE,
                    "id": i % n + 1,
                    "fields": {"status": "running", "tries": i},
                }
                for i in range(ops)
            ]
            t0 = time.perf_counter()
            if workload == "write":
                for r in reqs:
                    c.patch_record(TABLE, r["id"], r["fields"])
                done = ops
            elif workload == "inflight":
                for lo in range(0, ops, 100):
                    c.send_many(reqs[lo : lo + 100])
                done = ops
            elif workload == "batch":
                for lo in range(0, ops, 100):
                    c.batch(reqs[lo : lo + 100])
                done = ops
            else:  # bulk
                rounds = max(1, ops // n)
                for _ in range(rounds):
                    c.set_state(TABLE, records)
                done = rounds * n
            wall = (time.perf_counter() - t0) / done * 1e6
    finally:
        stop(proc)
    stats = pstats.Stats(str(prof))
    shutil.rmtree(tmp, ignore_errors=True)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"{workload}: {done} operations, client wall {wall:.1f} µs/op; the server's profiled "
        f"CPU over its whole life {total:.2f} s (includes startup and the preload)"
    )
    print(top(stats, k))


def claim_profile(n: int, tasks: int, k: int) -> None:
    """The claim rows' work (``bench.workloads.ClaimBench``) against a profiled server."""
    from bench import workloads

    tasks = min(tasks, n)
    tmp = Path(tempfile.mkdtemp(prefix="se-prof-"))
    data, prof = tmp / "data", tmp / "server.prof"
    proc = start_profiled_server(data, prof, timeout=60)
    try:
        endpoint = paths.read_server_file(data)["endpoint"]
        pool = workloads.claim_pool(endpoint, None)
        try:
            with Client(endpoint, timeout=600) as c:
                notes: list[str] = []
                spec = workloads.ClaimSpec("claimbig" if n > tasks else "claim", tasks, n)
                bench = workloads.ClaimBench(c, pool, None, "", None, spec, notes)
                run = bench.window("stateengine")
                us, _ = run()  # the fill (and the index build) happen here, before the clock
                wall = us * tasks / 1e6
        finally:
            pool.close()
    finally:
        stop(proc)
    stats = pstats.Stats(str(prof))
    shutil.rmtree(tmp, ignore_errors=True)
    busy = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"claim: {tasks:,} tasks from a table of {n:,} by {workloads.CLAIM_WORKERS} workers, "
        f"{us:.1f} µs wall per task ({wall:.2f} s; {1e6 / us:,.0f} tasks/s); the server's "
        f"profiled CPU over its whole life {busy:.2f} s (includes startup and the fill)"
    )
    for note in notes:
        print(f"  {note}")
    print(top(stats, k))


def restart_profile(n: int, k: int) -> None:
    """A server started on a snapshot of *n* records, under cProfile, until its first reply."""
    from bench.durability import big_engine
    from stateengine.server.engine import TableEngine
    from stateengine.server.persistence import open_store

    tmp = Path(tempfile.mkdtemp(prefix="se-prof-"))
    data, prof = tmp / "data", tmp / "server.prof"
    data.mkdir(mode=0o700)  # a data directory must be private
    store = open_store(data, "log", "always", snapshot_mode="inline")
    store.recover(TableEngine())
    store.snapshot(big_engine(n))
    store.close()
    t0 = time.perf_counter()
    proc = start_profiled_server(data, prof, "log", timeout=600)
    try:
        up = time.perf_counter() - t0
        with Client(paths.read_server_file(data)["endpoint"], timeout=600) as c:
            size = c.get_state_info("t")["size"]
        first = time.perf_counter() - t0
    finally:
        stop(proc)
    stats = pstats.Stats(str(prof))
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"restart of {size:,} records under cProfile: server.json after {up:.2f} s, first "
        f"reply after {first:.2f} s"
    )
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(k)
    lines = buf.getvalue().splitlines()
    print("\n".join(lines[next(i for i, line in enumerate(lines) if "ncalls" in line) :]))


def get_profile(n: int, ops: int) -> None:
    from stateengine.testing import ServerProcess

    tmp = Path(tempfile.mkdtemp(prefix="se-prof-"))
    with ServerProcess(tmp / "data", "--store", "none") as s:
        with s.connect() as c:
            c.set_state(TABLE, [{"id": i + 1, **record(i)} for i in range(n)])
        client = Client(s.endpoint, s.data_dir, timeout=30)
        reader = ArenaReader.attach(str(s.info["arena"]))
        try:
            ids = [i % n + 1 for i in range(ops)]
            client.get_record(TABLE, 1)
            reader.get(TABLE, 1)
            idx = reader._idx
            mm = reader._gmm
            ctl = reader._ctl
            entries = [idx[TABLE][i] for i in ids]
            blobs = [mm[e[0] : e[1]] for e in entries]
            import struct

            uq = struct.Struct("<Q").unpack_from
            unpackb = msgpack.unpackb
            decode = reader._decode

            def loop(body: Callable[[int], Any]) -> float:
                t0 = time.perf_counter()
                for i in ids:
                    body(i)
                return (time.perf_counter() - t0) / ops * 1e6

            parts: list[tuple[str, Callable[[int], Any]]] = [
                ("client.get_record (arena)", lambda i: client.get_record(TABLE, i)),
                ("client._reader() alone", lambda i: client._reader()),
                ("ArenaReader.get", lambda i: reader.get(TABLE, i)),
                ("  seq word check", lambda i: uq(ctl, 32)),
                ("  2 dict lookups", lambda i: idx.get(TABLE).get(i)),
                ("  slice copy", lambda i: mm[entries[i - 1][0] : entries[i - 1][1]]),
                ("  crc32", lambda i: zlib.crc32(blobs[i - 1], entries[i - 1][2])),
                ("  reader._decode", lambda i: decode(blobs[i - 1])),
                ("  msgpack.unpackb (defaults)", lambda i: unpackb(blobs[i - 1])),
                (
                    "floor: copy + unpackb",
                    lambda i: unpackb(mm[entries[i - 1][0] : entries[i - 1][1]]),
                ),
            ]
            print(f"get: {ops} gets over {n} records, µs per get (best of 5 loops)")
            for name, body in parts:
                print(f"  {name:32} {min(loop(body) for _ in range(5)):6.2f}")
            prof = cProfile.Profile()
            prof.enable()
            for i in ids:
                client.get_record(TABLE, i)
            prof.disable()
            print(top(pstats.Stats(prof), 12))
        finally:
            reader.close()
            client.close()
    shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profiles", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "workload", choices=["write", "inflight", "batch", "bulk", "get", "restart", "claim"]
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.workload == "get":
        get_profile(args.records, args.ops)
    elif args.workload == "restart":
        restart_profile(args.records, args.top)
    elif args.workload == "claim":
        claim_profile(args.records, args.ops, args.top)
    else:
        server_profile(args.workload, args.records, args.ops, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
