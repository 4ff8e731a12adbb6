"""How fast the linearizability checker is: ``python bench/checker.py [--quick]``.

Generates valid concurrent histories (4 processes, overlapping intervals) from the
real engine with ``stateengine.testing.history.simulate`` and times
``stateengine.testing.checker.check`` on 10⁴ and 10⁵ operations, median of 3, for two
mixes: ``records`` (record commands on 64 records: many small partitions), ``table``
(the load test's mix on 3 hot records with claims, listings and snapshots: one partition)
and ``table+unknown`` (the same with 8 writes of unknown outcome); and a task queue
(:func:`queue_history`: 10⁴ tasks drained by 8 workers, ~2·10⁴ operations, one partition).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any, Final

from stateengine.testing.checker import check
from stateengine.testing.history import Operation, simulate
from stateengine.testing.invariants import at_most_once

PROCESSES = 4
T = "bench"


def record_steps(n: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    steps: list[tuple[str, dict[str, Any]]] = [
        ("setup", {"command": "CREATE_STATE", "state": T}),
    ]
    steps += [
        ("setup", {"command": "CREATE_RECORD", "state": T, "record": {"id": i, "n": 0, "s": "a"}})
        for i in range(64)
    ]
    versions: dict[int, int] = {}
    while len(steps) < n:
        p = f"p{rng.randrange(PROCESSES)}"
        rid = rng.randrange(64)
        k = rng.random()
        if k < 0.4:
            steps.append((p, {"command": "GET_RECORD", "state": T, "id": rid}))
        elif k < 0.6:
            steps.append((p, {"command": "INCREMENT", "state": T, "id": rid, "field": "n"}))
        elif k < 0.8:
            req: dict[str, Any] = {
                "command": "PATCH_RECORD",
                "state": T,
                "id": rid,
                "fields": {"s": rng.choice("abc")},
            }
            if rid in versions and rng.random() < 0.5:
                req["if_version"] = versions[rid]
            steps.append((p, req))
        else:
            rec = {"n": rng.randrange(5), "s": "a"}
            steps.append((p, {"command": "SET_RECORD", "state": T, "id": rid, "record": rec}))
        versions[rid] = len(steps)  # roughly recent: some CAS succeed, some conflict
    return steps[:n]


def table_steps(n: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    steps: list[tuple[str, dict[str, Any]]] = [
        ("setup", {"command": "CREATE_STATE", "state": T}),
    ]
    steps += [
        ("setup", {"command": "CREATE_RECORD", "state": T, "record": {"n": 0, "status": "free"}})
        for _ in range(3)
    ]
    while len(steps) < n:
        p = f"p{rng.randrange(PROCESSES)}"
        rid = rng.randrange(1, 4)
        k = rng.random()
        if k < 0.3:
            steps.append((p, {"command": "GET_RECORD", "state": T, "id": rid}))
        elif k < 0.5:
            steps.append((p, {"command": "INCREMENT", "state": T, "id": rid, "field": "n"}))
        elif k < 0.65:
            steps.append(
                (
                    p,
                    {
                        "command": "CLAIM_RECORD",
                        "state": T,
                        "where": {"status": "free"},
                        "fields": {"status": "taken"},
                        "lease_seconds": 1000,
                    },
                )
            )
        elif k < 0.8:
            fields = {"status": "free"}
            steps.append((p, {"command": "PATCH_RECORD", "state": T, "id": rid, "fields": fields}))
        elif k < 0.9:
            reads = [{"command": "GET_RECORD", "state": T, "id": i} for i in (1, 2, 3)]
            steps.append((p, {"command": "SNAPSHOT", "reads": reads}))
        else:
            where = {"status": "free"}
            steps.append((p, {"command": "LIST_RECORDS", "state": T, "where": where}))
    return steps[:n]


QUEUE: Final = "tasks"
QUEUE_SHAPE: Final = {
    "schema": {"status": "string", "worker": "integer?", "attempts": "integer"},
    "indexes": ["status"],  # the engine claims through it: the history builds fast
}


def done_of(op: Operation) -> Any:
    """The task a queue operation completed (a ``PATCH_RECORD`` to ``status: done``), or
    None: what the queue tests' exactly-once invariant counts."""
    fields = op.args.get("fields") or {}
    if op.command == "PATCH_RECORD" and fields.get("status") == "done":
        return op.args["id"]
    return None


DONE_ONCE = at_most_once("each task done once", done_of, what="task")


def queue_history(
    tasks: int, rng: random.Random, workers: int = 8, spread: int = 30_000
) -> list[Operation]:
    """A task queue drained by *workers*, as the queue workers' test runs it: each claims
    the first pending task under a lease with an ``$inc`` of its attempts, then completes
    it with ``if_version`` (one in 50 first tries a stale version: ``VersionConflict``);
    a monitor reads tasks now and then; two completions are of unknown outcome (their
    worker died, a new one takes its place) and one is lost; every worker ends with a
    claim that finds nothing and a listing shows what is not done. One table-wide
    partition of about ``2 * tasks`` operations, each overlapping ~*spread*/500 others
    (operations are 1 µs apart, stretched up to *spread* ns either way)."""
    from stateengine.server.engine import TableEngine

    steps: list[tuple[str, dict[str, Any]]] = [
        ("setup", {"command": "CREATE_STATE", "state": QUEUE, **QUEUE_SHAPE})
    ]
    for lo in range(0, tasks, 500):
        creates = [
            {
                "command": "CREATE_RECORD",
                "state": QUEUE,
                "record": {"status": "pending", "worker": None, "attempts": 0},
            }
            for _ in range(min(500, tasks - lo))
        ]
        steps.append(("setup", {"command": "BATCH", "commands": creates}))
    engine = TableEngine()  # to learn each claim's version (simulate replays the steps)
    for _, request in steps:
        assert engine.execute(request)["ok"]
    claim = {
        "command": "CLAIM_RECORD",
        "state": QUEUE,
        "where": {"status": "pending"},
        "lease_seconds": 1000,
    }
    names = [f"w{w}" for w in range(workers)]
    held: list[tuple[int, int] | None] = [None] * workers
    unknown: set[int] = set()
    lost: set[int] = set()
    fates = {rng.randrange(tasks // 4, tasks): "unknown" for _ in range(2)}
    fates[rng.randrange(tasks // 4, tasks)] = "lost"
    finished = 0  # workers whose claim found nothing
    while finished < workers:
        w = rng.randrange(workers)
        if held[w] is None and names[w] == "":
            continue
        if held[w] is None:
            fields = {"status": "running", "worker": w, "attempts": {"$inc": 1}}
            request = {**claim, "fields": fields}
            reply = engine.execute(request)
            steps.append((names[w], request))
            if reply["result"] is None:
                names[w], finished = "", finished + 1
            else:
                held[w] = (reply["result"]["id"], reply["result"]["_version"])
        elif rng.random() < 0.05:
            rid = rng.randrange(1, tasks + 1)
            request = {"command": "GET_RECORD", "state": QUEUE, "id": rid}
            engine.execute(request)
            steps.append(("monitor", request))
        else:
            rid, version = held[w]  # type: ignore[misc]
            stale = rng.random() < 0.02
            request = {
                "command": "PATCH_RECORD",
                "state": QUEUE,
                "id": rid,
                "fields": {"status": "done"},
                "if_version": version - 1 if stale else version,
            }
            fate = None if stale else fates.pop(rid, None)
            if fate == "unknown":
                unknown.add(len(steps))
            elif fate == "lost":
                lost.add(len(steps))
            if fate != "lost":
                engine.execute(request)
            steps.append((names[w], request))
            if fate is not None:  # the worker died: a new one takes its place
                names[w] = f"{names[w]}'"
            if not stale:
                held[w] = None
    where = {"status": {"$ne": "done"}}
    steps.append(("check", {"command": "LIST_RECORDS", "state": QUEUE, "where": where}))
    return simulate(steps, rng=rng, gap=1000, spread=spread, unknown=unknown, lost=lost)


def history(mix: str, n: int, seed: int) -> list[Operation]:
    """*mix* ``records``, ``table`` or ``table+unknown`` (8 writes of unknown outcome:
    4 applied, 4 lost, as when processes are killed mid-call), or ``queue`` (n/2 tasks:
    about n operations)."""
    rng = random.Random(seed)
    if mix == "queue":
        return queue_history(n // 2, rng)
    steps = (record_steps if mix == "records" else table_steps)(n, rng)
    unknown: set[int] = set()
    lost: set[int] = set()
    if mix.endswith("+unknown"):
        writes = [
            i for i in range(10, n) if steps[i][1]["command"] in ("INCREMENT", "CLAIM_RECORD")
        ]
        picked = rng.sample(writes, 8)
        unknown, lost = set(picked[:4]), set(picked[4:])
    return simulate(steps, rng=rng, gap=1000, spread=3000, unknown=unknown, lost=lost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10⁴ only")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [10_000, 100_000]
    print(f"{'mix':14} {'ops':>8} {'median s':>9} {'ops/s':>9} {'runs':>24} {'partitions':>10}")
    for mix in ("records", "table", "table+unknown", "queue"):
        for n in sizes:
            ops = history(mix, n, seed=n)
            runs = []
            parts = 0
            for _ in range(3):
                t0 = time.perf_counter()
                result = check(ops)
                runs.append(time.perf_counter() - t0)
                assert result.ok, result.report()
                parts = result.partitions
            med = statistics.median(runs)
            shown = " ".join(f"{r:.2f}" for r in runs)
            n_ops = len(ops)
            print(f"{mix:14} {n_ops:>8} {med:>9.2f} {n_ops / med:>9.0f} {shown:>24} {parts:>10}")


if __name__ == "__main__":
    main()
