"""A reply that comes after its request timed out never answers a later request.

The server answers in arrival order on one connection, so a client that took the next
reply off its socket as the answer would, after one timeout, get every later answer
shifted by one: a wrong answer, silently. The client guards twice: a timeout drops the
socket (the late reply goes to a peer that is gone), and every reply is matched by its
``req_id`` (one on a kept socket is dropped). The server is held with SIGSTOP so that the
first request times out and is answered when the server goes on. The control reads the
same socket in order, as a client without the matching would: it gets the late reply.

A reply the server holds by design, a blocking claim's, is waited for its ``wait`` in a
pipeline as in a single call: given up earlier, the claim may still take a record that
nobody is then told about (the control).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from stateengine.client import client as client_module
from stateengine.client.client import Client
from stateengine.errors import ServerUnavailable
from stateengine.protocol import decode_reply
from stateengine.testing import ServerProcess


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "data", "--fsync", "no") as proc:
        yield proc


def timed_out_patch(live: ServerProcess, call: Any) -> None:
    """*call* a PATCH_RECORD while the server is stopped: it must time out; the server
    then goes on and answers it late."""
    os.kill(live.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ServerUnavailable, match="no reply"):
            call({"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"n": 2}})
    finally:
        os.kill(live.pid, signal.SIGCONT)


@pytest.mark.parametrize("socket", ["dropped", "kept"])
def test_the_next_call_gets_its_own_answer(
    live: ServerProcess, socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def decode(body: bytes) -> dict[str, Any]:
        reply = decode_reply(body)
        seen.append(reply.get("req_id"))
        return reply

    monkeypatch.setattr(client_module, "decode_reply", decode)
    with Client(live.endpoint, live.data_dir, timeout=0.3, arena=False) as client:
        client.create_record("t", {"n": 1})
        with monkeypatch.context() as patch:
            if socket == "kept":  # only the req_id check stands between the two
                patch.setattr(client, "_reset_socket", lambda: None)
            timed_out_patch(live, client.execute)
        client.timeout = 10.0
        assert client.list_states() == ["t"]
        assert client.get_record("t", 1)["n"] == 2  # the patch was applied, late
    if socket == "kept":
        assert seen == [1, 2, 3, 4], seen  # the late reply (2) came and was dropped
    else:
        assert seen == [1, 3, 4], seen  # it went to the dropped socket


def test_control_taking_replies_in_order_answers_with_the_late_one(
    live: ServerProcess,
) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(live.endpoint)

    def call(request: dict[str, Any], timeout: float = 0.3) -> dict[str, Any]:
        sock.send(msgpack.packb(request))
        if not sock.poll(int(timeout * 1000)):
            raise ServerUnavailable("no reply")
        return decode_reply(sock.recv())

    try:
        call({"command": "CREATE_RECORD", "state": "t", "record": {"n": 1}})
        timed_out_patch(live, call)
        reply = call({"command": "LIST_STATES"}, timeout=10.0)
        assert reply["result"] != ["t"] and reply["result"]["n"] == 2, reply  # the patch's
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("control", [False, True], ids=["waited", "control-not-waited"])
def test_a_pipelined_claim_is_waited_for_its_wait(
    live: ServerProcess, control: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if control:
        monkeypatch.setattr(client_module, "_wait_of", lambda request: 0.0)
    with (
        Client(live.endpoint, live.data_dir, timeout=0.3, arena=False) as client,
        Client(live.endpoint, live.data_dir, timeout=10.0, arena=False) as other,
    ):
        client.create_record("q", {"n": 0})
        # 0.6 s into the claim's wait (past the client's 0.3 s) a record becomes claimable
        timer = threading.Timer(0.6, other.patch_record, ("q", 1, {"n": 1}))
        timer.start()
        try:
            if control:
                with pytest.raises(ServerUnavailable), client.pipeline() as pipe:
                    pipe.claim_record("q", {"n": 1}, {"n": 2}, wait=5)
            else:
                with client.pipeline() as pipe:
                    pipe.claim_record("q", {"n": 1}, {"n": 2}, wait=5)
                assert pipe.results[0]["n"] == 2
        finally:
            timer.join(10)
        if control:  # claimed all the same, and the client that asked was not told
            assert other.get_record("q", 1)["n"] == 2
