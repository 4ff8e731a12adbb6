"""One command table (issue 15): every entry has an engine handler, a client method, a
strategy, a checker model (writes) and a README row; and a dummy write command added to
the table (``TOUCH_RECORD``, tests/unit/touch_command.py) is picked up by the engine,
the clients' ``call`` (blocking and asyncio), the gateway's generated route, and refused
by the checker until it has a model."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from touch_command import TOUCH_RECORD, touch_model, touch_registered

import stateengine
from stateengine import command_table
from stateengine.client.aio import connect_async
from stateengine.client.client import RECORDED_READS
from stateengine.client.commands import CommandsMixin
from stateengine.errors import BadRequest, UnknownCommand
from stateengine.server.engine import HANDLERS, check_dispatch
from stateengine.testing import checker
from stateengine.testing.history import Operation, read_history
from stateengine.testing.server import ServerProcess
from stateengine.testing.strategies import command_requests

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"n": "integer", "s": "string?"}


def readme_section(title: str, doc: str = "README.md") -> str:
    return (ROOT / doc).read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


# --- every entry is everywhere ------------------------------------------------------------


def test_the_engine_dispatch_names_exactly_the_table() -> None:
    assert set(HANDLERS) == command_table.names()
    check_dispatch()  # also run at import


def test_an_entry_without_a_handler_stops_the_dispatch_check() -> None:
    with command_table.registered(TOUCH_RECORD):
        with pytest.raises(RuntimeError, match=r"no engine handler for \['TOUCH_RECORD'\]"):
            check_dispatch()
        with pytest.raises(UnknownCommand):
            stateengine.Engine().call("TOUCH_RECORD", state="t", id=1)
    HANDLERS["TOUCH_RECORD"] = HANDLERS["GET_RECORD"]
    try:
        with pytest.raises(RuntimeError, match=r"no command_table entry for \['TOUCH_RECORD'\]"):
            check_dispatch()
    finally:
        del HANDLERS["TOUCH_RECORD"]


@pytest.mark.parametrize("name", sorted(command_table.COMMANDS))
def test_every_entry_has_a_client_method_taking_its_arguments(name: str) -> None:
    spec = command_table.COMMANDS[name]
    method = getattr(CommandsMixin, spec.method, None)
    assert method is not None, f"client/commands.py has no {spec.method}() for {name}"
    params = list(inspect.signature(method).parameters.values())[1:]
    assert {p.name for p in params} == spec.args
    for p in params:
        assert (p.default is inspect.Parameter.empty) == (p.name in spec.required), p


def test_the_client_arena_reads_are_the_tables() -> None:
    assert RECORDED_READS == {s.method: s.name for s in command_table.arena_reads()}
    assert set(RECORDED_READS.values()) <= command_table.names() - command_table.writes()


def test_every_write_has_a_checker_model() -> None:
    assert command_table.writes() <= set(checker.MODELS)


#: One strategy per command, built once (building is the costly part, not drawing).
STRATEGIES = {
    name: command_requests("t", SCHEMA, commands=[name]) for name in command_table.COMMANDS
}


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_entry_has_a_strategy_of_its_shape(data: st.DataObject) -> None:
    for name, strategy in sorted(STRATEGIES.items()):
        request = data.draw(strategy, label=name)
        assert request["command"] == name
        eng = stateengine.Engine()
        eng.create_state("t", schema=SCHEMA)
        reply = eng.execute(request)
        if not reply["ok"]:  # refused for its values, never for its shape
            message = reply["error"]["message"]
            assert "takes no argument" not in message and "requires" not in message, reply


def test_a_command_with_an_argument_without_a_strategy_is_named() -> None:
    odd = command_table.CommandSpec("ODD", ("state", "colour"), writes=False, scope="table")
    with command_table.registered(odd), pytest.raises(ValueError, match="colour"):
        command_requests("t", SCHEMA)


def test_every_entry_has_a_readme_wire_table_row() -> None:
    section = readme_section("Wire protocol")
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", section, flags=re.M))
    assert set(rows) == command_table.names()
    for name, spec in command_table.COMMANDS.items():
        row = rows[name]
        for arg in spec.required:
            assert re.search(rf"`{arg}`(?!\?)", row), (name, arg, row)
        for arg in spec.optional:
            covered = arg in command_table.PRECONDITIONS and "preconditions?" in row
            assert covered or f"`{arg}`?" in row, (name, arg, row)


def test_every_entry_has_a_gateway_route(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from stateengine.app.gateway.app import GatewayConfig, create_app

    def routes() -> set[str]:
        app = create_app(GatewayConfig(tmp_path, token="t" * 32))
        return {r.path for r in app.routes if r.path.startswith("/api/call/")}  # type: ignore[attr-defined]

    assert routes() == {f"/api/call/{name}" for name in command_table.names()}
    with touch_registered():
        assert "/api/call/TOUCH_RECORD" in routes()


# --- the engine's validation and the server-scope entry -----------------------------------


def test_an_unknown_argument_is_named_with_the_ones_the_command_takes() -> None:
    eng = stateengine.Engine()
    eng.create_state("t")
    with pytest.raises(BadRequest) as info:
        eng.call("GET_RECORD", state="t", id=1, ids=2)
    assert info.value.message == "GET_RECORD takes no argument 'ids'; it takes id, state"
    reply = eng.execute({"command": "BATCH", "commands": [{"command": "STATS", "x": 1}]})
    assert (
        reply["error"]["message"]
        == "commands[0]: STATS takes no argument 'x'; it takes no arguments"
    )


def test_stats_is_a_server_scope_command_of_the_table() -> None:
    assert command_table.COMMANDS["STATS"].scope == "server"
    eng = stateengine.Engine()
    eng.create_record("t", {"n": 1})
    assert eng.stats() == {"seq": 1, "tables": {"t": {"records": 1, "version": 1, "leases": 0}}}
    assert eng.call("STATS") == eng.stats()


def test_call_sends_any_command() -> None:
    eng = stateengine.Engine()
    eng.call("CREATE_STATE", state="t", schema=SCHEMA)
    rec = eng.call("CREATE_RECORD", state="t", record={"n": 1, "s": None})
    assert eng.call("INCREMENT", state="t", id=rec["id"], field="n", by=2) == 3
    assert eng.call("LIST_STATES") == ["t"]
    with pytest.raises(UnknownCommand):
        eng.call("NOT_A_COMMAND")


def test_the_engine_snippets_of_docs_client_md_run() -> None:
    section = readme_section("Using the engine in one process", "docs/client.md")
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2 and "eng.call(" in blocks[1]
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)


# --- a dummy write command, end to end --------------------------------------------------


def test_a_registered_command_is_answered_by_the_engine() -> None:
    with touch_registered():
        eng = stateengine.Engine()
        rec = eng.create_record("t", {"n": 1})
        touched = eng.call("TOUCH_RECORD", state="t", id=rec["id"], if_version=rec["_version"])
        assert touched == {**rec, "_version": rec["_version"] + 1}
        with pytest.raises(BadRequest, match="takes no argument 'by'; it takes id, if_version"):
            eng.call("TOUCH_RECORD", state="t", id=rec["id"], by=1)
    with pytest.raises(UnknownCommand):  # gone with its registration
        eng.call("TOUCH_RECORD", state="t", id=rec["id"])


def _op(n: int, command: str, args: dict[str, Any], t: int, result: Any, seq: int) -> Operation:
    return Operation("p", n, command, args, t * 1000, t * 1000 + 500, True, result, None, seq)


def touch_history(stale: bool) -> list[Operation]:
    """Create record 1 (seq 2), touch it (seq 3), read it: stale reads _version 2."""
    rec = {"id": 1, "n": 1}
    return [
        _op(0, "CREATE_STATE", {"state": "t"}, 0, {"name": "t", "version": 0, "size": 0}, 1),
        _op(1, "CREATE_RECORD", {"state": "t", "record": rec}, 1, {**rec, "_version": 2}, 2),
        _op(2, "TOUCH_RECORD", {"state": "t", "id": 1}, 2, {**rec, "_version": 3}, 3),
        _op(3, "GET_RECORD", {"state": "t", "id": 1}, 3, {**rec, "_version": 2 if stale else 3}, 3),
    ]


def test_the_checker_refuses_a_write_it_has_no_model_for() -> None:
    with touch_registered():
        for stale in (False, True):
            with pytest.raises(checker.UnmodelledCommand, match=r"TOUCH_RECORD \(1 operations\)"):
                checker.check(touch_history(stale))
        batch = Operation(
            "p", 9, "BATCH", {"commands": [{"command": "TOUCH_RECORD"}]}, 0, 1, True, [], None, 1
        )
        with pytest.raises(checker.UnmodelledCommand):
            checker.check([batch])
        with checker.modelled("TOUCH_RECORD", touch_model):
            assert checker.check(touch_history(stale=False)).ok
            assert not checker.check(touch_history(stale=True)).ok  # the model is no no-op


def test_a_registered_command_end_to_end(tmp_path: Path) -> None:
    """Real processes: a server and a gateway that registered TOUCH_RECORD; the client's
    ``call`` with a history; the gateway's generated route; the checker on the history."""
    pytest.importorskip("fastapi")
    import httpx

    from stateengine.app.gateway import gateway_info

    launcher = [sys.executable, str(Path(__file__).with_name("touch_command.py"))]
    server = ServerProcess(tmp_path / "data", launcher=launcher).start()
    gateway: subprocess.Popen[bytes] | None = None
    try:
        gateway = subprocess.Popen(
            [*launcher, "http", "--data-dir", str(server.data_dir), "--bind", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        history = tmp_path / "history"
        with server.connect(history=history) as db:  # recorded: the checker reads it below
            rec = db.create_record("t", {"n": 1})
            touched = db.call("TOUCH_RECORD", state="t", id=rec["id"])
            assert touched["_version"] > rec["_version"]
            assert db.get_record("t", rec["id"]) == touched
        info = gateway_info(server.data_dir, 30.0, running=lambda: gateway.poll() is None)
        with httpx.Client(base_url=info.url, headers=info.headers, timeout=10.0) as http:
            reply = http.post("/api/call/TOUCH_RECORD", json={"state": "t", "id": rec["id"]})
            assert reply.status_code == 200, reply.text
            again = reply.json()["result"]
            assert again["_version"] == int(reply.headers["X-Stateengine-Seq"])
            assert again["_version"] > touched["_version"]
            assert "/api/call/TOUCH_RECORD" in http.get("/openapi.json").json()["paths"]
        with server.connect() as db:
            assert db.get_record("t", rec["id"]) == again

        async def touch_async() -> dict[str, Any]:
            async with await connect_async(server.endpoint, server.data_dir) as adb:
                result: dict[str, Any] = await adb.call("TOUCH_RECORD", state="t", id=rec["id"])
                assert await adb.get_record("t", rec["id"]) == result  # read-your-writes
                return result

        assert asyncio.run(touch_async())["_version"] > again["_version"]
        ops = read_history(*history.iterdir())
        assert {o.command for o in ops} >= {"TOUCH_RECORD"}
        with touch_registered():
            with pytest.raises(checker.UnmodelledCommand):
                checker.check(ops)
            with checker.modelled("TOUCH_RECORD", touch_model):
                result = checker.check(ops)
                assert result.ok, result.report()
    finally:
        if gateway is not None:
            gateway.terminate()
            assert gateway.wait(timeout=20) == 0
        assert server.stop() == 0, server.output()
        server.cleanup()
