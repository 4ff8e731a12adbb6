"""The ``stateengine`` command line.

``serve`` runs the writer; ``demo`` runs the table engine in this process and prints
each request and its reply: the wire shape a client will see.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from stateengine import __version__
from stateengine.protocol import encode_reply
from stateengine.server.engine import TableEngine
from stateengine.server.server import DEFAULT_MAX_REQUEST, DataDirLocked, Server

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


def serve(args: argparse.Namespace) -> int:
    """Run the writer until SIGINT/SIGTERM; exit 0 after answering what was received."""
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server = Server(args.data_dir, args.endpoint, max_request_bytes=args.max_request_bytes)
    try:
        server.start()
    except (DataDirLocked, OSError) as exc:
        print(f"stateengine serve: {exc}", file=sys.stderr)
        return 1
    server.install_signal_handlers()
    print(f"stateengine {__version__} serving", flush=True)
    print(f"  data dir: {server.data_dir}", flush=True)
    print(f"  endpoint: {server.endpoint}", flush=True)
    print(f"  arena:    {server.publisher.name if server.publisher else 'off'}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
    st = server.stats
    print(
        f"stateengine: stopped after {st['requests']} requests in {st['passes']} passes;"
        f" {st['dropped_replies']} replies dropped",
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stateengine", description="A local state server for Python processes."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the writer server")
    p.add_argument("--data-dir", help="default: $STATEENGINE_DATA_DIR or ./.stateengine")
    p.add_argument("--endpoint", help="default: a private ipc:// socket for the data dir")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p = sub.add_parser("demo", help="start a server and a worker pool, kill a worker, watch")
    p.add_argument("--data-dir", help="default: $STATEENGINE_DATA_DIR or ./.stateengine")
    p.add_argument(
        "--wire",
        action="store_true",
        help="instead: run the engine in this process and print requests/replies",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.wire:
        return demo()
    from stateengine.client import demo as pool_demo  # the client side: imported on use

    return pool_demo.run(args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
