"""The blocking client's request path on a stand-in socket (no server): the round trip
written out in ``Client._round_trip`` and ``send_many``'s loop keep what ``_send``,
``_receive`` and ``_result`` did: a stale reply dropped, results (and errors) in request
order, ``seen_seq`` the highest ``seq`` of the successful replies only.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateengine.client import client as client_module
from stateengine.client.client import Client
from stateengine.errors import RecordNotFound, StateEngineError


class Socket:
    """Records what is sent; answers with the bodies queued in ``replies``."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.sent: list[dict[str, Any]] = []
        self.replies: list[bytes] = [msgpack.packb(r) for r in replies]

    def send(self, body: bytes) -> None:
        self.sent.append(msgpack.unpackb(body))

    def recv(self) -> bytes:
        return self.replies.pop(0)

    def close(self, linger: int | None = None) -> None:
        pass


def client_on(sock: Socket) -> Client:
    client = Client("ipc://@stateengine-no-such-server", timeout=0.5)  # abstract: no check
    client._sock = sock  # type: ignore[assignment]
    return client


def test_a_stale_reply_is_dropped_and_the_next_one_taken() -> None:
    sock = Socket(
        [
            {"req_id": 99, "ok": True, "result": "stale", "seq": 50},
            {"req_id": 1, "ok": True, "result": {"id": 1}, "seq": 7},
        ]
    )
    client = client_on(sock)
    try:
        assert client.patch_record("t", 1, {"n": 1}) == {"id": 1}
        assert client.seen_seq == 7  # not the stale reply's 50
        assert list(sock.sent[0]) == ["req_id", "command", "state", "id", "fields"]
    finally:
        client.close()


outcomes = st.lists(st.tuples(st.booleans(), st.integers(0, 100)), min_size=1, max_size=30)


@given(outcomes, st.randoms(use_true_random=False))
def test_send_many_results_and_seen_seq(outcome: list[tuple[bool, int]], rnd: Any) -> None:
    replies = []
    for i, (ok, seq) in enumerate(outcome):
        reply: dict[str, Any] = {"req_id": i + 1, "seq": seq}
        if ok:
            reply.update(ok=True, result=i)
        else:
            reply.update(ok=False, error={"type": "RecordNotFound", "message": f"r{i}"})
        replies.append(reply)
    rnd.shuffle(replies)  # replies come in any order
    client = client_on(Socket(replies))
    client.seen_seq = 3
    try:
        out = client.send_many(
            [{"command": "GET_RECORD", "state": "t", "id": i} for i in range(len(outcome))]
        )
    finally:
        client.close()
    for i, ((ok, _), got) in enumerate(zip(outcome, out, strict=True)):
        if ok:
            assert got == i
        else:
            assert isinstance(got, RecordNotFound) and isinstance(got, StateEngineError)
    assert client.seen_seq == max([3] + [seq for ok, seq in outcome if ok])


def test_a_closed_client_refuses_before_sending() -> None:
    sock = Socket([])
    client = client_on(sock)
    client.close()
    with pytest.raises(StateEngineError, match="closed"):
        client.patch_record("t", 1, {"n": 1})
    assert sock.sent == []


def _in_child(check: Any) -> int:
    """Fork; run *check* in the child (its truth is the exit code); the child's code."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = 0 if check() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_makes_its_own_socket() -> None:
    """The fork hook, not a getpid per call, tells the client it was forked. The control:
    a child whose fork count is set back (as if no hook had run) takes the parent's
    socket, so the count is what protects it."""
    parent: object = Socket([])
    client = client_on(Socket([]))
    client._sock = parent  # type: ignore[assignment]

    def own_socket() -> bool:
        sock: object = client._socket()
        fresh = sock is not parent
        client.close()
        return fresh

    def without_the_hook() -> bool:
        client_module._FORKS[0] -= 1
        sock: object = client._socket()
        return sock is parent

    try:
        assert _in_child(own_socket) == 0
        assert _in_child(without_the_hook) == 0
        sock: object = client._socket()
        assert sock is parent  # the parent's own is untouched
    finally:
        client.close()
