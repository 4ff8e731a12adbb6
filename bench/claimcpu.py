"""The CPU a claim costs: the claim rows' loop in one engine, or the rows themselves.

    python -m bench.claimcpu [--tasks N] [--table M] [--order fifo|priority] [--repeats R]
    python -m bench.claimcpu --server [--tasks N] [--table M] [--order ...] [--repeats R]

``CLAIM_RECORD`` where ``status = pending`` → ``running``, then ``PATCH_RECORD`` →
``done``, until no task is left, on a table declared as the ``claim`` rows declare it
(an index on ``status``; on ``["status", "priority"]`` with ``--order priority``), the
``table - tasks`` finished records ahead of the tasks. Prints the process CPU time per
claim and per patch (``time.process_time`` around each request, the cyclic GC off as in
the server's passes), medians of R fresh engines. CPU time, not wall time, so that the
figure holds on a shared machine; compare trees by interleaving runs.

With ``--server``: the ``claim`` rows' workload itself (``bench.workloads.ClaimBench``:
``--store none`` server, the 4 worker processes), and the CPU the server and the workers
spent per task (``/proc/<pid>/stat`` user + system, read just before the workers start
and after the last one is done; the table's fill is outside), next to the wall time per
task. The server's CPU per task is what a faster claim must lower; on a loaded machine
the wall time says little.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import proc_cpu
from bench.records import record
from bench.workloads import TASK_SCHEMA
from stateengine.server.engine import TableEngine


def engine(tasks: int, table: int, order: str) -> TableEngine:
    """A fresh engine holding the claim rows' table, its index built."""
    eng = TableEngine()
    eng.copy_results = False  # as the server runs it
    schema: dict[str, str] = dict(TASK_SCHEMA)
    index: list[Any] = ["status"]
    if order == "priority":
        schema["priority"] = "integer"
        index = [["status", "priority"]]
    ahead = table - tasks
    rng = random.Random(16)
    rows = []
    for i in range(table):
        row = {"id": i + 1, **record(i), "status": "done" if i < ahead else "pending"}
        if order == "priority":
            row["priority"] = rng.randrange(1000)
        rows.append(row)
    for request in (
        {"command": "CREATE_STATE", "state": "t", "schema": schema, "indexes": index},
        {"command": "SET_STATE", "state": "t", "records": rows},
        {"command": "LIST_RECORDS", "state": "t", "where": {"status": "pending"}, "limit": 1},
    ):
        reply = eng.execute(request)
        assert reply["ok"], reply
    return eng


def drain(eng: TableEngine, tasks: int, order: str) -> tuple[float, float]:
    """Claim and complete every task; µs of CPU per claim and per patch."""
    clock = time.process_time
    claim_cpu = patch_cpu = 0.0
    done = 0
    while True:
        # A new request each time, as each decoded frame is.
        request: dict[str, Any] = {
            "command": "CLAIM_RECORD",
            "state": "t",
            "where": {"status": "pending"},
            "fields": {"status": "running"},
            "req_id": done,
        }
        if order == "priority":
            request["order_by"] = "priority"
        start = clock()
        reply = eng.execute(request)
        claim_cpu += clock() - start
        claimed = reply["result"]
        if claimed is None:
            break
        patch = {
            "command": "PATCH_RECORD",
            "state": "t",
            "id": claimed["id"],
            "fields": {"status": "done"},
            "req_id": done,
        }
        start = clock()
        reply = eng.execute(patch)
        patch_cpu += clock() - start
        assert reply["ok"], reply
        done += 1
    if done != tasks:
        raise RuntimeError(f"{done} tasks claimed, expected {tasks}")
    return claim_cpu / done * 1e6, patch_cpu / done * 1e6


def server_rows(tasks: int, table: int, order: str, repeats: int) -> None:
    """The claim rows' workload, *repeats* windows; CPU of the server and the workers."""
    from bench import workloads
    from stateengine.client.client import Client
    from stateengine.testing import ServerProcess

    with tempfile.TemporaryDirectory(prefix="se-claimcpu-") as tmp:
        server = ServerProcess(Path(tmp) / "data", "--store", "none", start_timeout=60)
        with server:
            pool = workloads.claim_pool(server.endpoint, None)
            try:
                with Client(server.endpoint, timeout=600) as client:
                    name = "claimbig" if table > tasks else "claim"
                    if order == "priority":
                        name = "pqueue"
                    spec = workloads.ClaimSpec(name, tasks, table, order)
                    bench = workloads.ClaimBench(client, pool, None, "", None, spec, [])
                    pids = [p.pid for p in pool.procs]
                    rows = []
                    for _ in range(repeats):
                        state = bench._fill("stateengine")
                        cpu = [proc_cpu(server.pid), sum(map(proc_cpu, pids))]
                        start = time.monotonic() + 0.1
                        pool.send(
                            range(workloads.CLAIM_WORKERS), ("stateengine", state, start, order)
                        )
                        answers = pool.collect(workloads.CLAIM_WORKERS, "done")
                        wall = max(a[3] for a in answers) - start
                        served = proc_cpu(server.pid) - cpu[0]
                        worked = sum(map(proc_cpu, pids)) - cpu[1]
                        claimed = sorted(i for a in answers for i in a[2])
                        if claimed != sorted(bench.expected):
                            raise RuntimeError(f"{len(claimed)} claims of {tasks} tasks")
                        rows.append((served, worked, wall))
            finally:
                pool.close()
    per = [tuple(x / tasks * 1e6 for x in row) for row in rows]
    for label, i in (("server CPU", 0), ("workers' CPU", 1), ("wall", 2)):
        values = [row[i] for row in per]
        print(
            f"claimcpu --server: {tasks:,} tasks in a table of {table:,} ({order}), "
            f"{label} per task {statistics.median(values):.1f} µs "
            f"({min(values):.1f}-{max(values):.1f}, median of {repeats})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.claimcpu", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--table", type=int, default=0, help="records (default: the tasks)")
    parser.add_argument("--order", choices=["fifo", "priority"], default="fifo")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--server", action="store_true", help="the claim rows' own workload")
    args = parser.parse_args(argv)
    table = max(args.table, args.tasks)
    if args.server:
        server_rows(args.tasks, table, args.order, args.repeats)
        return 0
    gc.disable()
    runs = [
        drain(engine(args.tasks, table, args.order), args.tasks, args.order)
        for _ in range(args.repeats)
    ]
    claims = [c for c, _ in runs]
    patches = [p for _, p in runs]
    print(
        f"claimcpu: {args.tasks:,} tasks in a table of {table:,} ({args.order}), "
        f"median of {args.repeats}: CLAIM_RECORD {statistics.median(claims):.2f} µs CPU "
        f"({min(claims):.2f}-{max(claims):.2f}), PATCH_RECORD "
        f"{statistics.median(patches):.2f} µs ({min(patches):.2f}-{max(patches):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
