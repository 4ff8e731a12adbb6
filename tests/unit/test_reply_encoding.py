"""The server's replies are the same bytes with and without its msgspec path (issue 17).

``Server._handle`` encodes the reply to a record command (its result made of the
engine's checked values) with ``protocol.encode_valid`` when its ``req_id`` is an int, a
string or nil, and everything else with the msgpack ``Packer`` (``Server._encode``).
Each request here is answered by two fresh servers, one with that path switched off
(the reference), and the reply bodies must be byte-equal: results, versions, errors,
the reply limit, every ``req_id`` the decoder can give.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest

from stateengine.protocol import INT_MAX
from stateengine.server import server as server_module
from stateengine.server.server import Server

REQ_IDS: list[Any] = [
    1,
    -1,
    INT_MAX,
    "r-1",
    "é",
    None,
    1.5,
    [1, 2],
    {"k": 1},
    b"\x00",
    datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),  # a timestamp ext
    msgspec.msgpack.Ext(5, b"x"),
]


def _requests() -> list[dict[str, Any]]:
    record = {"name": "ada", "score": 1.5, "n": 2, "blob": b"\x01", "tags": ["a", 1]}
    setup: list[dict[str, Any]] = [
        {
            "command": "CREATE_STATE",
            "state": "t",
            "indexes": ["name"],
            "schema": {
                "name": "string",
                "score": "float",
                "n": "integer",
                "blob": "bytes",
                "tags": "list",
            },
        },
        {"command": "SET_STATE", "state": "t", "records": [{"id": 1, **record}]},
    ]
    commands: list[dict[str, Any]] = [
        {"command": "CREATE_RECORD", "state": "t", "record": {"id": 2, **record}},
        {"command": "CREATE_RECORD", "state": "t", "record": {**record, "n": 2**63}},
        {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"n": -7, "name": "é"}},
        {"command": "PATCH_RECORD", "state": "t", "id": 9, "fields": {"n": 1}},
        {"command": "SET_RECORD", "state": "t", "id": 2, "record": {**record, "score": 2}},
        {"command": "INCREMENT", "state": "t", "id": 1, "field": "score", "by": 0.25},
        {"command": "INCREMENT", "state": "t", "id": 1, "field": "n"},
        {"command": "EXPIRE_RECORD", "state": "t", "id": 2, "ttl": 100},
        {"command": "GET_RECORD", "state": "t", "id": 1},
        {"command": "LIST_RECORDS", "state": "t", "where": {"name": "ada"}},
        {"command": "LIST_RECORDS", "state": "t", "order_by": "-score"},
        {
            "command": "CLAIM_RECORD",
            "state": "t",
            "where": {"name": "ada"},
            "fields": {"n": {"$inc": 1}},
            "lease_seconds": 30,
        },
        {"command": "CLAIM_RECORD", "state": "t", "where": {"name": "nobody"}, "fields": {}},
        {"command": "SET_STATE", "state": "u", "records": [{"id": "a", "v": None}]},
        {"command": "GET_STATE_INFO", "state": "t"},
        {"command": "DELETE_RECORD", "state": "t", "id": 2},
        {"command": "BATCH", "commands": [{"command": "GET_RECORD", "state": "t", "id": 1}]},
        {
            "command": "BATCH",
            "commands": [
                {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"n": k}}
                for k in (3, -(2**40))
            ],
        },
        {
            "command": "BATCH",
            "commands": [
                {"command": "CREATE_RECORD", "state": "t", "record": {**record, "n": 5}},
                {"command": "DELETE_RECORD", "state": "t", "id": 1},
            ],
        },
        {
            "command": "BATCH",  # results of a command outside _VALID_RESULTS: the Packer
            "commands": [
                {"command": "GET_STATE_INFO", "state": "t"},
                {"command": "GET_RECORD", "state": "t", "id": 1},
            ],
        },
        {"command": "BATCH", "commands": []},
        {"command": "NOPE"},
    ]
    out = list(setup)
    for i, command in enumerate(commands):
        out.append(command)
        for req_id in REQ_IDS:
            out.append({**command, "req_id": req_id} if i % 2 else {"req_id": req_id, **command})
    return out


def _replies(tmp: Path, fast: bool, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> list[bytes]:
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(server_module, "_VALID_RESULTS", frozenset())
        srv = Server(tmp, engine=None, **kw)
        srv.engine.clock = lambda: 1000.0
        pack = msgpack.Packer(use_bin_type=True, datetime=False).pack
        bodies = []
        for request in _requests():
            try:
                body = pack(request)
            except TypeError:  # a datetime: sent as msgspec sends it (a timestamp ext)
                body = msgspec.msgpack.encode(request)
            for frames in ([b"peer", b"", body], [b"peer", body]):
                envelope, reply, waiter = srv._handle(frames)
                assert envelope == frames[:-1] and waiter is None and reply is not None
                bodies.append(reply)
            srv.engine.changes, srv.engine.table_changes, srv.engine.removed = {}, set(), set()
        return bodies


@pytest.mark.parametrize("max_reply_bytes", [1 << 20, 120])
def test_replies_are_the_same_bytes_with_and_without_the_msgspec_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_reply_bytes: int
) -> None:
    reference = _replies(tmp_path / "a", False, monkeypatch, max_reply_bytes=max_reply_bytes)
    fast = _replies(tmp_path / "b", True, monkeypatch, max_reply_bytes=max_reply_bytes)
    assert fast == reference
    assert any(b"PayloadTooLarge" in r for r in fast) == (max_reply_bytes == 120)
    assert any(b"InternalError" in r for r in fast)  # the timestamp req_id, as before


def test_control_an_encoder_that_differs_or_takes_any_req_id_fails_the_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: the comparison sees a float packed as float 32, and a ``req_id`` the
    Packer refuses (a timestamp) echoed by msgspec instead of InternalError."""
    reference = _replies(tmp_path / "a", False, monkeypatch)
    single = msgpack.Packer(use_bin_type=True, use_single_float=True).pack
    with monkeypatch.context() as m:
        m.setattr(server_module, "encode_valid", single)
        assert _replies(tmp_path / "b", True, monkeypatch) != reference
    with monkeypatch.context() as m:
        m.setattr(server_module, "_IDS", frozenset({int, str, type(None), datetime.datetime}))
        assert _replies(tmp_path / "c", True, monkeypatch) != reference


def test_a_batch_of_record_commands_takes_the_msgspec_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison above covers BATCH replies only if they take the path: a BATCH of
    record commands does, one holding another command (GET_STATE_INFO) does not."""
    seen: list[Any] = []
    original = server_module.encode_valid

    def spy(reply: dict[str, Any]) -> bytes:
        seen.append(reply["result"])
        return original(reply)

    monkeypatch.setattr(server_module, "encode_valid", spy)
    srv = Server(tmp_path, engine=None)
    pack = msgpack.Packer(use_bin_type=True).pack
    seed = {"command": "SET_STATE", "state": "t", "records": [{"id": 1, "n": 1}], "req_id": 1}
    patch = {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"n": 2}}
    info = {"command": "GET_STATE_INFO", "state": "t"}
    for request in (
        seed,
        {"command": "BATCH", "commands": [patch, patch], "req_id": 2},
        {"command": "BATCH", "commands": [patch, info], "req_id": 3},
    ):
        srv._handle([b"peer", pack(request)])
    assert [len(r) if isinstance(r, list) else r for r in seen] == [1, 2]
