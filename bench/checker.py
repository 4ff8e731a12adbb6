"""How fast the linearizability checker is: ``python bench/checker.py [--quick]``.

Generates valid concurrent histories (4 processes, overlapping intervals) from the
real engine with ``stateengine.testing.history.simulate`` and times
``stateengine.testing.checker.check`` on 10⁴ and 10⁵ operations, median of 3, for two
mixes: ``records`` (record commands on 64 records: many small partitions), ``table``
(the load test's mix on 3 hot records with claims, listings and snapshots: one partition)
and ``table+unknown`` (the same with 8 writes of unknown outcome).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from stateengine.testing.checker import check
from stateengine.testing.history import Operation, simulate

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


def history(mix: str, n: int, seed: int) -> list[Operation]:
    """*mix* ``records``, ``table`` or ``table+unknown`` (8 writes of unknown outcome:
    4 applied, 4 lost, as when processes are killed mid-call)."""
    rng = random.Random(seed)
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
    for mix in ("records", "table", "table+unknown"):
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
            print(f"{mix:14} {n:>8} {med:>9.2f} {n / med:>9.0f} {shown:>24} {parts:>10}")


if __name__ == "__main__":
    main()
