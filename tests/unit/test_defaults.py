"""One defaults module (issue 15): the command line and the constructors cannot drift apart.

Every ``serve``/``http`` option whose value reaches a constructor defaults to that
constructor's own default (both read :mod:`stateengine.defaults`); every remedy an arena
error names is a ``serve`` flag, and the flags reach a real server.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stateengine import defaults
from stateengine.app.cli import build_parser
from stateengine.app.gateway.__main__ import parser as gateway_parser
from stateengine.client.aio import AsyncClient
from stateengine.client.client import Client
from stateengine.errors import CapacityError
from stateengine.runtime.feed import FEED_HWM
from stateengine.server.persist_log import LogStore
from stateengine.server.persist_sql import PostgresStore
from stateengine.server.persistence import open_store
from stateengine.server.publish import ArenaPublisher
from stateengine.server.server import Server
from stateengine.shm import ArenaReader, ArenaWriter
from stateengine.shm import layout as L
from stateengine.testing import ServerProcess


def default_of(fn: Callable[..., Any], name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def field_default(cls: type, name: str) -> Any:
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def serve_flags() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = sub.choices["serve"]._actions
    return {flag: action for action in actions for flag in action.option_strings}


def test_serve_defaults_are_the_constructors_defaults() -> None:
    args = serve_args()
    create = ArenaWriter.create
    assert args.arena_size == default_of(ArenaPublisher.__init__, "initial_size")
    assert args.arena_size == default_of(create, "initial_size") == defaults.ARENA_SIZE
    assert args.arena_max_size == default_of(create, "max_size") == defaults.ARENA_MAX_SIZE
    assert args.reader_slots == default_of(create, "reader_slots") == defaults.READER_SLOTS
    assert args.feed_hwm == default_of(Server.__init__, "feed_hwm") == FEED_HWM
    assert args.slow_ms == default_of(Server.__init__, "slow_ms")
    assert args.max_request_bytes == default_of(Server.__init__, "max_request_bytes")
    assert args.store == default_of(open_store, "backend") == defaults.STORE
    assert args.fsync == default_of(open_store, "fsync") == field_default(LogStore, "fsync")
    assert args.snapshot_bytes == field_default(LogStore, "snapshot_bytes")
    assert args.pg_dsn == default_of(PostgresStore.__init__, "dsn")
    assert args.pg_schema == default_of(PostgresStore.__init__, "schema")


def test_client_and_gateway_defaults() -> None:
    from stateengine.app.gateway.app import GatewayConfig

    timeout = defaults.CLIENT_TIMEOUT
    assert default_of(Client.__init__, "timeout") == default_of(AsyncClient.__init__, "timeout")
    assert default_of(Client.__init__, "timeout") == timeout
    assert field_default(GatewayConfig, "timeout") == timeout
    assert gateway_parser().parse_args([]).bind == defaults.HTTP_BIND


def test_the_pg_dsn_default_is_no_test_database() -> None:
    """Production default: libpq's environment; tests pass their DSN explicitly."""
    assert serve_args().pg_dsn == "" == defaults.PG_DSN
    assert "test" not in serve_args().pg_dsn


def test_every_arena_remedy_named_in_an_error_is_a_serve_flag() -> None:
    flags = serve_flags()
    for setting, remedy in L.REMEDY.items():
        flag = remedy.split()[-1]
        assert remedy.startswith("stateengine serve --") and flag in flags, remedy
        assert flags[flag].default == default_of(ArenaWriter.create, setting), flag


def test_arena_flags_reach_the_server(tmp_path: Path) -> None:
    args = ["--arena-size", str(1 << 20), "--arena-max-size", str(3 << 20), "--reader-slots", "2"]
    with ServerProcess(tmp_path / "data", *args) as server, server.connect(timeout=30) as client:
        arena = client.execute({"command": "STATS"})["result"]["arena"]
        assert arena["size"] == 1 << 20
        assert arena["max_size"] == 3 << 20
        assert arena["reader_slots"] == 2
        readers = [ArenaReader.attach(arena["name"]) for _ in range(2)]  # every slot
        try:
            with pytest.raises(CapacityError, match="stateengine serve --reader-slots"):
                ArenaReader.attach(arena["name"])
        finally:
            for reader in readers:
                reader.close()
        # Past --arena-max-size the arena turns off (reads go over the socket), and the
        # log says which flag raises it.
        client.create_state("big")
        for i in range(8):
            client.create_record("big", {"id": i, "blob": b"x" * (900 << 10)})
            if client.execute({"command": "STATS"})["result"]["arena"] is None:
                break
        else:
            raise AssertionError("8 records of 900 KiB fitted a 3 MiB arena")
        assert client.get_record("big", i)["id"] == i
    assert "raise max_size (stateengine serve --arena-max-size)" in server.output()
