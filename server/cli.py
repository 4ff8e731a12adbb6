"""The ``stateengine`` command line.

Today it has one subcommand, ``demo``, which runs the table engine in this process and
prints each request and its reply: the wire shape a client will see. ``serve`` arrives
with the writer server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from stateengine.protocol import encode_reply
from stateengine.server.engine import TableEngine

DEMO: list[dict[str, Any]] = [
    {
        "command": "CREATE_STATE",
        "state": "tasks",
        "schema": {"title": "string", "status": "string", "priority": "integer"},
    },
    {
        "command": "CREATE_RECORD",
        "state": "tasks",
        "record": {"title": "load orders.csv", "status": "pending", "priority": 2},
    },
    {
        "command": "CREATE_RECORD",
        "state": "tasks",
        "record": {"title": "dedupe customers", "status": "pending", "priority": 1},
    },
    {
        "command": "CREATE_RECORD",
        "state": "tasks",
        "record": {"title": "oops", "status": "pending", "priority": "high"},
    },
    {
        "command": "CLAIM_RECORD",
        "state": "tasks",
        "where": {"status": "pending"},
        "fields": {"status": "running"},
        "order_by": "priority",
        "lease_seconds": 30,
    },
    {
        "command": "PATCH_RECORD",
        "state": "tasks",
        "id": 2,
        "fields": {"status": "done"},
        "if_version": 4,
    },
    {
        "command": "PATCH_RECORD",
        "state": "tasks",
        "id": 2,
        "fields": {"status": "again"},
        "if_version": 4,
    },
    {
        "command": "BATCH",
        "commands": [
            {"command": "CREATE_STATE", "state": "counters"},
            {"command": "CREATE_RECORD", "state": "counters", "record": {"id": "rows", "n": 0}},
            {"command": "INCREMENT", "state": "counters", "id": "rows", "field": "n", "by": 500},
        ],
    },
    {"command": "LIST_RECORDS", "state": "tasks", "order_by": "-priority"},
    {"command": "GET_STATE_INFO", "state": "tasks"},
    {"command": "GET_SCHEMA", "state": "tasks"},
    {"command": "LIST_STATES"},
]


def demo() -> int:
    """Run :data:`DEMO` through the engine, printing requests and replies as JSON."""
    engine = TableEngine()
    print("stateengine demo: the table engine in this process; each request, then its reply")
    for request in DEMO:
        print(">>", json.dumps(request))
        print("<<", encode_reply(engine.execute(request), as_json=True).decode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stateengine", description="A local state server for Python processes."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the engine in this process and print what it does")
    args = parser.parse_args(argv)
    assert args.command == "demo"
    return demo()


if __name__ == "__main__":
    sys.exit(main())
