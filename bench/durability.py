"""Durable write throughput per fsync policy and restart time (issue 5), in one run.

    python bench/durability.py [--seconds S] [--restart-records N] [--no-postgres]

Writes go through the store directly (``store.write(change_set)``, as the server's pass
calls it), with change sets a real engine produced beforehand, so engine time is not
counted. Two shapes:

* ``1/pass`` — one writer, one record per pass: every write pays its own fsync;
* ``128/pass`` — group commit: each pass holds 16 clients × 8 pipelined writes, one
  change set, one fsync.

Next to it, py-lmdb ``put`` with ``sync=True`` (one put per transaction, the fsync per
put an LMDB user pays for durability; and 128 puts per transaction), same ~70-byte
records. Then restart: a snapshot of N records (default 10^6) is written and loaded, and
the time a forked snapshot stalls the writer is measured.

Targets (issue 5): group-commit ``always`` ≥ 0.7× ``no``; ≥ 3× LMDB put with sync;
restart of 10^6 records ≤ 10 s. Results go to ``bench/results/durability-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from bench.records import record
except ImportError:  # run as a script (python bench/durability.py): bench/ is sys.path[0]
    from records import record  # type: ignore[no-redef]

from stateengine.server.engine import ChangeSet, Table, TableEngine
from stateengine.server.persist_base import decode_change_set, encode_change_set
from stateengine.server.persist_log import LogStore
from stateengine.server.persistence import open_store

GROUP = 16 * 8
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def change_sets(count: int, per_pass: int) -> list[ChangeSet]:
    """*count* passes of *per_pass* CREATE_RECORDs each, as the server would persist them."""
    engine = TableEngine()
    out = []
    n = 0
    for _ in range(count):
        dirty: dict[Any, None] = {}
        tables: set[str] = set()
        for _ in range(per_pass):
            engine.execute({"command": "CREATE_RECORD", "state": "t", "record": record(n)})
            dirty.update(engine.changes)
            tables |= engine.table_changes
            n += 1
        out.append(decode_change_set(encode_change_set(engine.change_set(dirty, tables))))
    return out


def bench_store(
    backend: str, policy: str, per_pass: int, seconds: float, options: dict[str, Any]
) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="se-bench-"))
    try:
        store = open_store(tmp, backend, policy, **options)
        store.recover(TableEngine())
        # Calibrate a batch size that runs ~seconds/4, then time whole batches.
        sets = change_sets(max(2, 200 // per_pass), per_pass)
        writes = passes = 0
        start = time.perf_counter()
        deadline = start + seconds
        i = 0
        while time.perf_counter() < deadline:
            store.write(sets[i % len(sets)])
            i += 1
            passes += 1
            writes += per_pass
        elapsed = time.perf_counter() - start
        store.close()
        return {"writes_per_s": writes / elapsed, "passes_per_s": passes / elapsed}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_lmdb(per_txn: int, seconds: float) -> dict[str, float] | None:
    try:
        import lmdb
        import msgpack
    except ImportError:
        return None
    tmp = tempfile.mkdtemp(prefix="se-lmdb-")
    try:
        env = lmdb.open(tmp, map_size=1 << 30, sync=True, metasync=True)
        values = [msgpack.packb(record(i)) for i in range(1000)]
        writes = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            with env.begin(write=True) as txn:
                for _ in range(per_txn):
                    txn.put(b"k%09d" % writes, values[writes % 1000])
                    writes += 1
        elapsed = time.perf_counter() - start
        env.close()
        return {"writes_per_s": writes / elapsed, "passes_per_s": writes / per_txn / elapsed}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def big_engine(n: int) -> TableEngine:
    """An engine of *n* records built directly (the engine's own path would take minutes)."""
    engine = TableEngine()
    table = Table("t", fields=["id", *record(0)], types=dict.fromkeys(["id", *record(0)], "any"))
    table.version = n
    table.next_id = n + 1
    for i in range(1, n + 1):
        table.records[i] = {"id": i, **record(i), "_version": i}
    engine.tables["t"] = table
    engine.seq = n
    return engine


def bench_restart(n: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="se-restart-"))
    try:
        engine = big_engine(n)
        store = open_store(tmp, "log", "always", snapshot_mode="fork")
        assert isinstance(store, LogStore)
        store.recover(TableEngine())
        start = time.perf_counter()
        store.snapshot(engine, wait=False)
        stall = time.perf_counter() - start
        store.close()  # waits for the child
        dump = time.perf_counter() - start
        inline = open_store(tmp, "log", "always", snapshot_mode="inline")
        assert isinstance(inline, LogStore)
        inline.recover(TableEngine())
        start = time.perf_counter()
        inline.snapshot(engine)
        inline_dump = time.perf_counter() - start
        inline.close()
        del engine
        size = (tmp / "snapshot.sesnap").stat().st_size
        restored = TableEngine()
        start = time.perf_counter()
        report = open_store(tmp, "log").recover(restored)
        load = time.perf_counter() - start
        assert report.records == n, report
        return {
            "records": n,
            "snapshot_bytes": size,
            "fork_stall_s": stall,
            "fork_dump_s": dump,
            "inline_dump_s": inline_dump,
            "restart_s": load,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per configuration")
    parser.add_argument("--restart-records", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []

    def add(name: str, policy: str, per_pass: int, result: dict[str, float] | None) -> None:
        if result is None:
            print(f"{name:10} {policy:9} {per_pass:>4}/pass  (unavailable)")
            return
        rows.append({"store": name, "policy": policy, "per_pass": per_pass, **result})
        print(
            f"{name:10} {policy:9} {per_pass:>4}/pass  {result['writes_per_s']:>11,.0f} writes/s"
            f"  {result['passes_per_s']:>9,.0f} passes/s",
            flush=True,
        )

    backends: list[tuple[str, dict[str, Any]]] = [("log", {}), ("sqlite", {})]
    if not args.no_postgres:
        try:
            import psycopg

            psycopg.connect(PG_DSN).close()
            backends.append(("postgres", {"dsn": PG_DSN, "schema": "se_bench"}))
        except Exception as exc:  # reported, not fatal: the log figures still stand
            print(f"postgres skipped: {exc}")
    for name, options in backends:
        for per_pass in (1, GROUP):
            for policy in ("always", "everysec", "no"):
                add(
                    name,
                    policy,
                    per_pass,
                    bench_store(name, policy, per_pass, args.seconds, options),
                )
        if name == "postgres":
            import psycopg

            with psycopg.connect(PG_DSN, autocommit=True) as con:
                con.execute(b'DROP SCHEMA IF EXISTS "se_bench" CASCADE')
    add("json", "always", GROUP, bench_store("json", "always", GROUP, min(args.seconds, 1.0), {}))
    add("lmdb", "sync", 1, bench_lmdb(1, args.seconds))
    add("lmdb", "sync", GROUP, bench_lmdb(GROUP, args.seconds))

    def rate(store: str, policy: str, per_pass: int) -> float:
        for row in rows:
            if (row["store"], row["policy"], row["per_pass"]) == (store, policy, per_pass):
                return float(row["writes_per_s"])
        return float("nan")

    always_g, no_g = rate("log", "always", GROUP), rate("log", "no", GROUP)
    lmdb1 = rate("lmdb", "sync", 1)
    ratios = {
        "group always / group no (target >= 0.7)": always_g / no_g,
        "group always / lmdb put sync (target >= 3)": always_g / lmdb1,
        "1/pass always / lmdb put sync": rate("log", "always", 1) / lmdb1,
    }
    print()
    for name, value in ratios.items():
        print(f"{name:45} {value:8.2f}")
    print(f"\nrestart of {args.restart_records:,} records (target <= 10 s):", flush=True)
    restart = bench_restart(args.restart_records)
    for key, value in restart.items():
        print(f"  {key:16} {value:,.3f}" if isinstance(value, float) else f"  {key:16} {value:,}")
    out = Path(__file__).parent / "results" / time.strftime("durability-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": sys.version.split()[0],
                "seconds": args.seconds,
                "rows": rows,
                "ratios": ratios,
                "restart": restart,
            },
            indent=1,
        )
    )
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
