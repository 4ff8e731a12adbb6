"""A record may not grow past what the arena stores (issue 14 item 1's class, found after
it: two 10 MiB patches, each under the request limit, built a 20 MiB record and switched
the arena off for every worker)."""

from __future__ import annotations

from stateengine.limits import MAX_RECORD_BYTES, MAX_REQUEST_BYTES
from stateengine.server.engine import TableEngine


def test_patches_cannot_grow_a_record_past_the_record_limit() -> None:
    engine = TableEngine()
    engine.execute({"command": "CREATE_RECORD", "state": "t", "record": {"a": "", "b": ""}})
    big = "x" * (MAX_REQUEST_BYTES * 5 // 8)  # each patch fits a request
    assert engine.execute({"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"a": big}})[
        "ok"
    ]
    before = (engine.seq, engine.tables["t"].version)
    reply = engine.execute({"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"b": big}})
    assert not reply["ok"] and reply["error"]["type"] == "PayloadTooLarge"
    assert str(MAX_RECORD_BYTES) in reply["error"]["message"]
    claim = {"command": "CLAIM_RECORD", "state": "t", "where": {}, "fields": {"b": big}}
    reply = engine.execute(claim)
    assert not reply["ok"] and reply["error"]["type"] == "PayloadTooLarge"
    assert (engine.seq, engine.tables["t"].version) == before  # nothing changed
    assert engine.tables["t"].records[1]["b"] == ""
