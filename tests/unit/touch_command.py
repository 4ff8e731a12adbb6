"""A dummy write command, ``TOUCH_RECORD``, with everything a real command needs.

``TOUCH_RECORD`` (``state``, ``id``, ``if_version``?) rewrites one record unchanged: its
``_version`` becomes the commit's ``seq``, so that a reader can tell it was written and
the checker can tell whether a read saw it. Here are its command-table entry, its
engine handler and its checker model; the client (``call``), the gateway
(``POST /api/call/TOUCH_RECORD``) and the strategies (``command_requests``) need no
code. A process sees the command only if it registers it:
``python touch_command.py ARGS...`` is ``stateengine ARGS...`` with it registered (a
server, or a gateway: ``... http --data-dir DIR --bind 127.0.0.1:0``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stateengine import command_table
from stateengine.command_table import CommandSpec
from stateengine.server.engine import HANDLERS, Record, TableEngine
from stateengine.testing.checker import Branches, Ctx, Entry, State, _err, _preconditions

TOUCH_RECORD = CommandSpec(
    "TOUCH_RECORD",
    ("state", "id"),
    ("if_version",),
    writes=True,
    scope="record",
    doc="rewrite one record unchanged (it gets a new _version)",
)


def touch_handler(engine: TableEngine, request: dict[str, Any]) -> Record:
    """The engine's handler: validate everything, then write (the engine's rule)."""
    table = engine._table(request)
    rid, old = engine._existing(table, request)
    engine._check_preconditions(table, request, rid, old)
    engine._touch_table(table)
    record = dict(old)
    engine._put(table, rid, record)
    return engine._out(record)


def touch_model(state: State, req: dict[str, Any], ctx: Ctx) -> Branches:
    """The checker's model: the record, unchanged but for its ``_version``."""
    name = req.get("state")
    table = state.table(name)
    if not table.exists:
        return [(_err("StateNotFound"), state)]
    rid = req.get("id")
    entry = table.get(rid)
    if entry is None:
        return [(_err("RecordNotFound"), state)]
    assert isinstance(name, str)
    out: Branches = []
    for verdict in _preconditions(table, entry, req, ctx):
        if verdict is not None:
            out.append((_err(verdict), state))
            continue
        new = Entry(rid, entry.data, ctx.seq, entry.lease)
        out.append((("ok", "record", new), state.with_table(name, table.put(new))))
    return out


@contextmanager
def touch_registered() -> Iterator[None]:
    """``TOUCH_RECORD`` in the command table and the engine's dispatch, for the block."""
    with command_table.registered(TOUCH_RECORD):
        HANDLERS[TOUCH_RECORD.name] = touch_handler
        try:
            yield
        finally:
            HANDLERS.pop(TOUCH_RECORD.name, None)


if __name__ == "__main__":
    from stateengine.app.cli import main

    with touch_registered():
        sys.exit(main(sys.argv[1:]))
