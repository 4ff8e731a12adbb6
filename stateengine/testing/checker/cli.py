"""``python -m stateengine.testing.checker FILE...``.

Part of :mod:`stateengine.testing.checker` (its docstring describes the method).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stateengine.testing.checker.model import UnmodelledCommand
from stateengine.testing.checker.run import check
from stateengine.testing.history import read_history


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stateengine.testing.checker FILE...``: exit 0 linearizable, 1 not, 2
    refused (a write command the checker has no model for)."""
    parser = argparse.ArgumentParser(
        prog="python -m stateengine.testing.checker",
        description="Check recorded stateengine histories for linearizability.",
    )
    parser.add_argument("files", nargs="+", help="history files (msgpack streams)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds")
    parser.add_argument("--shrink-time", type=float, default=10.0, help="seconds per failure")
    args = parser.parse_args(argv)
    try:
        result = check(
            read_history(*args.files), time_limit=args.time_limit, shrink_time=args.shrink_time
        )
    except UnmodelledCommand as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.ok else 1
