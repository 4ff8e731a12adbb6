"""The engine's CPU per claim: the claim rows' loop in one process, no sockets or arena.

    python -m bench.claimcpu [--tasks N] [--table M] [--order fifo|priority] [--repeats R]

``CLAIM_RECORD`` where ``status = pending`` → ``running``, then ``PATCH_RECORD`` →
``done``, until no task is left, on a table declared as the ``claim`` rows declare it
(an index on ``status``; on ``["status", "priority"]`` with ``--order priority``), the
``table - tasks`` finished records ahead of the tasks. Prints the process CPU time per
claim and per patch (``time.process_time`` around each request, the cyclic GC off as in
the server's passes), medians of R fresh engines. CPU time, not wall time, so that the
figure holds on a shared machine; compare trees by interleaving runs.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from typing import Any

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.claimcpu", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--table", type=int, default=0, help="records (default: the tasks)")
    parser.add_argument("--order", choices=["fifo", "priority"], default="fifo")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    table = max(args.table, args.tasks)
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
