"""Table-engine throughput in one process: commands/s for create, patch, get, list, claim.

    python bench/engine.py [--records N] [--repeats R]

This is the engine alone (no sockets, no arena, no persistence): the ceiling the server
can reach per core. Figures are medians of R repeats; the spread is min..max.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

try:
    from bench.records import record
except ImportError:  # run as a script (python bench/engine.py): bench/ is sys.path[0]
    from records import record  # type: ignore[no-redef]

from stateengine.server.engine import TableEngine


def run(n: int) -> dict[str, float]:
    engine = TableEngine()
    ex = engine.execute
    ex({"command": "CREATE_STATE", "state": "t"})
    rates: dict[str, float] = {}

    def timed(name: str, count: int, body: Callable[[int], object]) -> None:
        start = time.perf_counter()
        for i in range(count):
            body(i)
        rates[name] = count / (time.perf_counter() - start)

    timed(
        "create", n, lambda i: ex({"command": "CREATE_RECORD", "state": "t", "record": record(i)})
    )
    timed(
        "patch",
        n,
        lambda i: ex(
            {"command": "PATCH_RECORD", "state": "t", "id": i + 1, "fields": {"tries": 1}}
        ),
    )
    timed("get", n, lambda i: ex({"command": "GET_RECORD", "state": "t", "id": i + 1}))
    timed(
        "list(limit=100)",
        n // 100,
        lambda i: ex({"command": "LIST_RECORDS", "state": "t", "offset": i * 100, "limit": 100}),
    )
    timed(
        "claim",
        n,
        lambda i: ex(
            {
                "command": "CLAIM_RECORD",
                "state": "t",
                "where": {"status": "pending"},
                "fields": {"status": "run"},
                "lease_seconds": 60,
            }
        ),
    )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = [run(args.records) for _ in range(args.repeats)]
    print(f"engine throughput, {args.records} records, median of {args.repeats} (min..max)")
    print(f"{'command':<18}{'ops/s':>12}   spread")
    for name in runs[0]:
        values = [r[name] for r in runs]
        print(
            f"{name:<18}{statistics.median(values):>12,.0f}   "
            f"{min(values):,.0f}..{max(values):,.0f}"
        )


if __name__ == "__main__":
    main()
