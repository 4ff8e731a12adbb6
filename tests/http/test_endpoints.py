"""Every endpoint through a real HTTP client against ``serve --http`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from gwutil import Gateway, start

J = {"content-type": "application/json"}


def test_tables_create_info_list_alter_delete(gateway: Gateway) -> None:
    http = gateway.http
    r = http.post("/api/states", json={"state": "e_tables", "schema": {"title": "string"}})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "e_tables" and r.json()["version"] == 0
    assert "X-Stateengine-Seq" in r.headers
    r = http.post("/api/states", json={"name": "e_tables"})
    assert r.status_code == 409 and r.json()["error"]["type"] == "StateExists"
    assert http.get("/api/states/e_tables").json()["types"]["title"] == "string"
    assert http.get("/api/states/e_tables/schema").json() == {"schema": ["id", "title"]}
    names = [s["name"] for s in http.get("/api/states").json()["states"]]
    assert "e_tables" in names
    r = http.patch("/api/states/e_tables", json={"add": {"n": {"type": "integer", "default": 0}}})
    assert r.status_code == 200 and r.json()["schema"] == ["id", "title", "n"]
    r = http.patch("/api/states/e_tables", json={"add": {"n": {"type": "integer"}}})
    assert r.status_code == 422 and r.json()["error"]["type"] == "SchemaError"
    assert http.delete("/api/states/e_tables").json() == {"deleted": "e_tables"}
    r = http.get("/api/states/e_tables")
    assert r.status_code == 404 and r.json()["error"]["type"] == "StateNotFound"
    assert http.delete("/api/states/e_tables").status_code == 404


def test_records_crud_ids_bytes_and_preconditions(gateway: Gateway) -> None:
    http = gateway.http
    base = "/api/states/e_rec/records"
    r = http.post(base, json={"title": "a", "blob": {"$b64": "AAE="}})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["id"] == 1 and rec["blob"] == {"$b64": "AAE="}  # bytes both ways
    assert http.get(f"{base}/1").json() == rec
    # A string id made of digits needs id_type=str; canonical digits are an int.
    assert http.post(base, json={"id": "007", "title": "s", "blob": None}).status_code == 201
    assert http.post(base, json={"id": "42", "title": "s", "blob": None}).status_code == 201
    assert http.get(f"{base}/42").status_code == 404
    assert http.get(f"{base}/42", params={"id_type": "str"}).json()["id"] == "42"
    assert http.get(f"{base}/007").json()["id"] == "007"
    r = http.get(f"{base}/x7", params={"id_type": "int"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequest"
    r = http.delete(f"{base}/1", headers={"If-Match": "*"})
    assert r.status_code == 400 and "If-Match" in r.json()["error"]["message"]
    r = http.post(base, json={"id": 1, "title": "dup", "blob": None})
    assert r.status_code == 409 and r.json()["error"]["type"] == "DuplicateId"
    # Preconditions: query if_version, If-Match header, expected_version.
    r = http.patch(f"{base}/1", params={"if_version": rec["_version"] + 100}, json={"title": "b"})
    assert r.status_code == 409 and r.json()["error"]["type"] == "VersionConflict"
    assert http.get(f"{base}/1").json() == rec  # unchanged
    r = http.patch(f"{base}/1", headers={"If-Match": f'"{rec["_version"]}"'}, json={"title": "b"})
    assert r.status_code == 200 and r.json()["title"] == "b"
    r = http.put(f"{base}/1", json={"id": 2, "title": "c", "blob": None})
    assert r.status_code == 422 and r.json()["error"]["type"] == "ImmutableId"
    r = http.put(
        f"{base}/1", json={"title": "c", "blob": None}, params={"if_match": '{"title":"b"}'}
    )
    assert r.status_code == 200 and r.json()["title"] == "c"
    r = http.patch(f"{base}/1", json={"nope": 1})
    assert r.status_code == 422 and r.json()["error"]["type"] == "SchemaError"
    r = http.get(base, params={"order_by": "-title", "limit": 2, "offset": 0})
    body = r.json()
    assert body["size"] == 3 and [x["title"] for x in body["records"]] == ["s", "s"]
    r = http.get(base, params={"where": json.dumps({"title": "c"})})
    assert [x["id"] for x in r.json()["records"]] == [1]
    r = http.get(base, params={"where": json.dumps({"title": {"$gt": "c"}}), "order_by": "id"})
    assert [x["id"] for x in r.json()["records"]] == ["007", "42"]  # "s" > "c"; 1 is "c"
    r = http.get(base, params={"where": json.dumps({"title": {"$in": "c"}})})
    assert r.status_code == 422 and "$in" in r.json()["error"]["message"], r.text
    assert http.delete(f"{base}/1", params={"expected_version": 0}).status_code == 409
    assert http.delete(f"{base}/1").json() == {"deleted": 1}
    assert http.get(f"{base}/1").status_code == 404
    assert http.delete(f"{base}/1").status_code == 404


def test_set_state_claim_increment_batch_capacity(gateway: Gateway) -> None:
    http = gateway.http
    assert http.post("/api/states", json={"state": "e_q", "max_length": 3}).status_code == 201
    r = http.put(
        "/api/states/e_q/records",
        json={"records": [{"status": "pending", "n": i} for i in range(5)]},
    )
    assert r.status_code == 200 and r.json() == {"kept": 3}
    r = http.post("/api/states/e_q/records", json={"status": "pending", "n": 9})
    assert r.status_code == 507 and r.json()["error"]["type"] == "CapacityError"
    r = http.post(
        "/api/states/e_q/claim",
        json={"where": {"status": "pending"}, "fields": {"status": "running"}, "order_by": "-n"},
    )
    assert r.status_code == 200 and r.json()["record"]["n"] == 2
    r = http.post("/api/states/e_q/records/1/increment", json={"field": "n", "by": 10})
    assert r.json() == {"value": 10}
    r = http.post("/api/states/e_q/records/1/increment", json={"field": "status"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "SchemaError"
    r = http.post(
        "/api/batch",
        json={
            "commands": [
                {"command": "INCREMENT", "state": "e_q", "id": 1, "field": "n"},
                {"command": "GET_RECORD", "state": "e_q", "id": 99},
            ]
        },
    )
    assert r.status_code == 404 and r.json()["error"]["message"].startswith("commands[1]")
    assert http.get("/api/states/e_q/records/1").json()["n"] == 10  # the batch undid itself
    r = http.post(
        "/api/batch",
        json={"commands": [{"command": "INCREMENT", "state": "e_q", "id": 1, "field": "n"}]},
    )
    assert r.status_code == 200 and r.json() == {"results": [11]}
    r = http.post("/api/states/e_q/claim", json={"where": {"status": "x"}, "fields": {}})
    assert r.json() == {"record": None}


def test_stats_health_manifest_openapi_dashboard(gateway: Gateway) -> None:
    http = gateway.http
    stats = http.get("/api/stats").json()
    assert {"seq", "tables", "arena", "last_pass_size", "gateway"} <= set(stats)
    assert stats["arena"]["reader_slots_used"] >= 1  # the gateway reads the arena
    health = http.get("/api/health").json()
    assert health["ok"] is True and health["server_pid"] == gateway.server.pid
    assert http.get("/api/manifest").json() == {"keys": []}
    r = http.get("/api/manifest/cache.user")
    assert r.status_code == 404 and r.json()["error"]["type"] == "KeyNotDefined"
    with gateway.server.connect() as client:  # a value a manifest State would store
        client.create_state(
            "$manifest",
            schema={"id": "string", "value": "any", "status": "string", "expires": "float?"}
            | {"owner": "string?", "error": "string?"},
        )
        client.create_record(
            "$manifest",
            {"id": "cache.flags", "value": {"beta": True}, "status": "ready"}
            | {"expires": None, "owner": None, "error": None},
        )
    keys = http.get("/api/manifest").json()["keys"]
    assert [k["id"] for k in keys] == ["cache.flags"] and "value" not in keys[0]
    key = http.get("/api/manifest/cache.flags").json()
    assert key["value"] == {"beta": True} and key["live"] is True
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/states", "/api/states/{state}/records/{id}", "/api/feed", "/api/batch"):
        assert path in spec["paths"], path
    page = http.get("/")
    assert page.status_code == 200 and "stateengine" in page.text
    assert http.get("/static/dashboard.js").status_code == 200


def test_http_level_errors_keep_the_typed_body(gateway: Gateway) -> None:
    http = gateway.http
    r = http.get("/api/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"
    r = http.put("/api/states")
    assert r.status_code == 405 and r.json()["error"]["type"] == "MethodNotAllowed"
    r = http.post("/api/states/e_err/records", content=b'{"a": 1}')  # no content type
    assert r.status_code == 415
    r = http.post("/api/states/e_err/records", content=b'{"a": ', headers=J)
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequest"
    r = http.post("/api/states/e_err/records", content=b"[1, 2]", headers=J)
    assert r.status_code == 400
    r = http.post("/api/states/e_err/records", content=b"", headers=J)
    assert r.status_code == 400
    r = http.get("/api/states/e_err/records", params={"limit": "many"})
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
    r = http.get("/api/states/e_err/records", params={"where": "{bad"})
    assert r.status_code == 400
    r = http.post("/api/states/e_err/claim", json={"state": "other", "where": {}, "fields": {}})
    assert r.status_code == 422 and r.json()["error"]["type"] == "BadRequest"
    r = http.post("/api/batch", json={"commands": "nope"})
    assert r.status_code == 422
    assert http.get("/api/states/e_err").status_code == 404  # nothing was created


def test_attached_gateway_enforces_its_body_limit_and_stops_with_the_server(
    gateway: Gateway,
) -> None:
    """``stateengine http`` attaches a second gateway to the running server."""
    cmd = [sys.executable, "-m", "stateengine", "http", "--data-dir", str(gateway.data_dir)]
    proc = subprocess.Popen(
        [*cmd, "--bind", "127.0.0.1:0", "--max-body-bytes", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "stateengine http: serving URL"
        assert "serving" in line, line
        url, _, token = line.split("serving ", 1)[1].split()[0].partition("?token=")
        assert token == gateway.info.token  # the token kept in DIR/http.token
        with httpx.Client(base_url=url, headers=gateway.info.headers, timeout=10.0) as http:
            r = http.post("/api/states/e_big/records", json={"blob": "x" * 2000})
            assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
            # Without a Content-Length too (chunked): counted while reading.
            chunks = iter([b'{"blob": "', b"x" * 1500, b'"}'])
            r = http.post("/api/states/e_big/records", content=chunks, headers=J)
            assert r.status_code == 413
            assert http.get("/api/states/e_big").status_code == 404
            assert http.post("/api/states/e_big/records", json={"blob": "x"}).status_code == 201
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        assert proc.stdout is not None
        proc.stdout.close()


def test_gateway_stops_when_the_server_is_killed(tmp_path: Path) -> None:
    server, _url = start(tmp_path)
    try:
        info = json.loads((server.data_dir / "http.json").read_text())
        server.kill()  # kill -9: no cleanup in the server, its gateway must notice
        deadline = time.monotonic() + 15
        alive = True
        while alive and time.monotonic() < deadline:
            try:
                os.kill(info["pid"], 0)
                time.sleep(0.1)
            except ProcessLookupError:
                alive = False
        assert not alive, "the gateway outlived its server"
        assert not (server.data_dir / "http.json").exists()
    finally:
        server.cleanup()


def test_claim_waits_through_the_gateway(gateway: Gateway) -> None:
    http = gateway.http
    body = {"state": "e_wait", "schema": {"s": "integer"}}
    assert http.post("/api/states", json=body).status_code == 201
    started = time.monotonic()
    r = http.post("/api/states/e_wait/claim?wait=0.3", json={"where": {"s": 1}, "fields": {}})
    assert r.status_code == 200 and r.json()["record"] is None, r.text
    assert time.monotonic() - started >= 0.25
    r = http.post("/api/states/e_wait/claim?wait=abc", json={"where": {}, "fields": {}})
    assert r.status_code in (400, 422) and r.json()["error"]["type"] == "BadRequest", r.text


def test_ttl_through_the_gateway(gateway: Gateway) -> None:
    """``?ttl=`` on the record routes, EXPIRE_RECORD through /api/call, and the expiry
    commit deleting the record."""
    http = gateway.http
    assert http.post("/api/states", json={"state": "e_ttl", "schema": {"s": "integer"}}).is_success
    r = http.post("/api/states/e_ttl/records?ttl=3600", json={"s": 1})
    assert r.status_code == 201 and r.json()["_expires"] > time.time() + 3000, r.text
    rid = r.json()["id"]
    r = http.patch(f"/api/states/e_ttl/records/{rid}?ttl=0.2", json={"s": 2})
    assert r.is_success and r.json()["_expires"] < time.time() + 1, r.text
    deadline = time.monotonic() + 10
    while http.get(f"/api/states/e_ttl/records/{rid}").status_code != 404:
        assert time.monotonic() < deadline, "the TTL'd record was never deleted"
        time.sleep(0.05)
    r = http.post("/api/states/e_ttl/records", json={"s": 3})
    rid = r.json()["id"]
    r = http.post("/api/call/EXPIRE_RECORD", json={"state": "e_ttl", "id": rid, "ttl": 60})
    assert r.is_success and "_expires" in r.json()["result"], r.text
    r = http.post("/api/call/EXPIRE_RECORD", json={"state": "e_ttl", "id": rid, "ttl": -1})
    assert r.status_code in (400, 422) and r.json()["error"]["type"] == "BadRequest", r.text
