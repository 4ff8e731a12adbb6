"""``POST /api/call/{COMMAND}``: one route per entry of the command table, generated."""

from __future__ import annotations

from typing import Any

from gwutil import Gateway

from stateengine import command_table


def call(gateway: Gateway, command: str, /, **args: Any) -> tuple[int, Any]:
    reply = gateway.http.post(f"/api/call/{command}", json=args)
    return reply.status_code, reply.json()


def test_every_command_of_the_table_has_a_documented_route(gateway: Gateway) -> None:
    paths = gateway.http.get("/openapi.json").json()["paths"]
    for name, spec in command_table.COMMANDS.items():
        route = paths[f"/api/call/{name}"]["post"]
        assert route["summary"] == f"{name}: {spec.doc}"
        body = route["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["properties"]) == spec.args and set(body["required"]) == set(spec.required)


def test_commands_through_the_generic_routes(gateway: Gateway) -> None:
    assert call(gateway, "CREATE_STATE", state="calls", schema={"n": "integer"})[0] == 200
    status, body = call(gateway, "CREATE_RECORD", state="calls", record={"n": "x"})
    assert status == 422 and body["error"]["type"] == "SchemaError"  # the engine judges
    status, body = call(gateway, "CREATE_RECORD", state="calls", record={"n": 1})
    assert status == 200
    rec = body["result"]
    assert call(gateway, "INCREMENT", state="calls", id=rec["id"], field="n", by=4) == (
        200,
        {"result": 5},
    )
    status, body = call(gateway, "GET_RECORD", state="calls", id=rec["id"])
    assert status == 200
    assert body["result"]["n"] == 5 and body["result"]["_version"] > rec["_version"]
    batch = [{"command": "GET_RECORD", "state": "calls", "id": rec["id"]}]
    assert call(gateway, "BATCH", commands=batch)[1] == {"result": [body["result"]]}


def test_commands_without_arguments_take_no_body(gateway: Gateway) -> None:
    reply = gateway.http.post("/api/call/LIST_STATES")
    assert reply.status_code == 200 and isinstance(reply.json()["result"], list)
    stats = gateway.http.post("/api/call/STATS").json()["result"]
    assert {"tables", "seq", "pid", "store", "arena"} <= set(stats)


def test_bad_calls_get_typed_errors(gateway: Gateway) -> None:
    status, body = call(gateway, "GET_RECORD", state="calls", id=1, ids=2)
    assert status == 422
    assert body["error"] == {
        "type": "BadRequest",
        "message": "GET_RECORD takes no argument 'ids'; it takes id, state",
    }
    reply = gateway.http.post("/api/call/GET_RECORD", json={"command": "DELETE_STATE"})
    assert reply.status_code == 422 and "given by the path" in reply.json()["error"]["message"]
    reply = gateway.http.post("/api/call/NOT_A_COMMAND", json={})
    assert reply.status_code == 404
    reply = gateway.http.post(
        "/api/call/GET_RECORD", content=b"[1]", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "BadRequest"
