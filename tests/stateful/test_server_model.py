"""The model-based state machine again, this time through the wire: a real server
subprocess, requests over the client's socket, and the arena's reads checked against
the server's own answers after every step.

Differences from the in-process machine (tests/stateful/test_engine_model.py), and why:

* Requests travel as msgpack, so a request is first round-tripped through the codec
  (tuples become lists); values msgpack cannot carry (sets, objects) are skipped here —
  the in-process machine covers them, and the frame fuzz covers bad bytes.
* The server reads the real wall clock, which the test cannot move: the rule that moves
  the clock is dropped and leases and TTLs are 1000 s long, so none expires during a run and the
  model's clock can stay fixed (a model reading the wall clock would make hypothesis's
  data generation depend on timing).
* One server serves every example; each example starts by dropping every table, and
  the model starts from the server's ``seq``.
* A claim with ``wait`` that finds nothing parks in the server (the engine answers it
  null at once): valid waits are cut to :data:`MAX_WAIT` so that it is answered, null,
  within the wire's bound. A request the wire gives up on gets its socket replaced, so
  its late reply cannot answer the next request (see :class:`WireEngine`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import model
import msgpack
import pytest
import test_engine_model as engine_model
import zmq
from hypothesis import Phase, event, settings
from hypothesis.stateful import invariant, run_state_machine_as_test
from model import World
from test_engine_model import Clock, EngineMachine

from stateengine.client.client import Client
from stateengine.protocol import decode_reply
from stateengine.runtime import client_options
from stateengine.server.curve import add_client
from stateengine.testing import ServerProcess

SERVER: dict[str, Any] = {}
#: No shrinking: each example here is real round trips, and a shrink of a failure found
#: in a full run outlasted the suite's 300 s timeout in CI, which then reported only
#: hypothesis's Flaky error and hid the failure. The unshrunk steps (at most 25) print.
WIRE_PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
#: Seconds a claim of the server machine may wait (a longer valid ``wait`` is cut to it).
MAX_WAIT = 0.2


class WireEngine:
    """``execute`` over a raw DEALER socket: the request's own ``req_id`` (or none) is
    what the server sees and echoes, so a reply cannot be matched to its request by it:
    one request at a time, and a request not answered within *timeout* seconds gets its
    socket closed and a new one made (as the client does) before the failure is raised.
    Its late reply then goes to a peer that is gone; on the same socket it would be taken
    as the answer to the next request (a claim parked past the bound did that: KeyError
    'seq' in a later example's LIST_STATES). *replace* False is the control that keeps the
    socket."""

    def __init__(
        self,
        connect: Callable[[], zmq.Socket[bytes]],
        timeout: float = 10.0,
        replace: bool = True,
    ) -> None:
        self._connect = connect
        self.timeout = timeout
        self.replace = replace
        self.sock = connect()

    def execute(self, request: Any) -> dict[str, Any]:
        self.sock.send(msgpack.packb(request, use_bin_type=True))
        if not self.sock.poll(int(self.timeout * 1000)):
            if self.replace:
                self.sock.close(linger=0)
                self.sock = self._connect()
            raise AssertionError(f"the server did not answer within {self.timeout} s")
        return decode_reply(self.sock.recv())

    def close(self) -> None:
        self.sock.close(linger=0)


def short_wait(request: dict[str, Any]) -> None:
    """Cut a valid ``wait`` over :data:`MAX_WAIT` to it (still valid: the same outcome)."""
    wait = request.get("wait")
    if request.get("command") == "CLAIM_RECORD" and type(wait) in (int, float):
        if MAX_WAIT < wait <= 3600:
            request["wait"] = MAX_WAIT
            event("claim wait cut to MAX_WAIT")


class ServerMachine(EngineMachine):
    def __init__(self) -> None:
        super().__init__()
        wire = SERVER["wire"]
        for name in wire.execute({"command": "LIST_STATES"})["result"]:
            wire.execute({"command": "DELETE_STATE", "state": name})
        seq = wire.execute({"command": "LIST_STATES"})["seq"]
        self.clock = Clock(time.time())
        self.engine = wire  # type: ignore[assignment]
        self.worlds = [World(seq=seq)]
        self.digest = None

    def send(self, request: Any) -> None:
        try:
            wire = msgpack.unpackb(
                msgpack.packb(request, use_bin_type=True), raw=False, strict_map_key=False
            )
        except (TypeError, ValueError, OverflowError):
            event("not encodable as msgpack: skipped over the wire")
            return
        if not isinstance(request, dict):
            event("not a map: skipped (the client sends maps only)")
            return
        short_wait(wire)
        super().send(wire)

    # Time moves by itself here.
    advance_clock = None  # type: ignore[assignment]
    # Its 1000 s leases leave later claims nothing to take: a claim drawn with `wait` then
    # parks, and its late reply would answer the next request of this one-at-a-time wire.
    claim_under_a_lease = None  # type: ignore[assignment]

    @invariant()
    def arena_reads_match_the_server(self) -> None:
        """What a worker reads from shared memory is what the server answers."""
        client: Client = SERVER["client"]
        names = client.execute({"command": "LIST_STATES"})["result"]
        assert client.list_states() == names
        for name in names:
            info = client.execute({"command": "GET_STATE_INFO", "state": name})["result"]
            assert client.get_state_info(name) == info
            rows = client.execute({"command": "LIST_RECORDS", "state": name})["result"]
            assert client.list_records(name) == rows
            for row in rows[:3]:
                assert client.get_record(name, row["id"]) == row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["ipc", "tcp+curve"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The same machine against the local endpoint and against an authenticated remote
    one (CurveZMQ over TCP on 127.0.0.1): a remote client must behave exactly alike."""
    base = Path(tmp_path_factory.mktemp("model"))
    data = base / "data"
    args = ["--fsync", "no"]
    curve: dict[str, bytes] = {}
    if request.param == "tcp+curve":
        secret, server_key = add_client(data, "model", base / "keys")
        curve = client_options(server_key, secret)
        args += ["--tcp", f"127.0.0.1:{free_port()}"]
    ctx = zmq.Context()
    with ServerProcess(data, *args) as proc, proc.connect() as client:

        def connect() -> zmq.Socket[bytes]:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            for option, key in curve.items():
                setattr(dealer, option, key)
            dealer.connect(str(proc.info["tcp"]) if curve else proc.endpoint)
            return dealer

        wire = WireEngine(connect)
        SERVER.update(client=client, wire=wire, connect=connect)
        try:
            yield proc
        finally:
            wire.close()
            ctx.destroy(linger=0)
    SERVER.clear()


def test_server_matches_model(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_model, "LEASES", [1000.5, 2000.5])
    monkeypatch.setattr(engine_model, "TTLS", [1000.5, 2000.5])  # none runs out either
    monkeypatch.setattr(model, "WALL_CLOCK", True)  # the server's deadlines: its own clock
    try:
        run_state_machine_as_test(
            ServerMachine,
            settings=settings(
                max_examples=60, stateful_step_count=25, deadline=None, phases=WIRE_PHASES
            ),
        )
    except BaseException:
        alive = server.proc is not None and server.proc.poll() is None
        print(f"server alive: {alive}; its output (last 3000 chars):\n{server.output()[-3000:]}")
        raise


@pytest.mark.parametrize("replace", [True, False], ids=["replaced", "control-kept"])
def test_a_late_reply_never_answers_the_next_request(server: ServerProcess, replace: bool) -> None:
    """The failure the machine once met, made deterministic: a claim parks past the
    wire's bound, the next write wakes it, and the request after gets a reply. With the
    socket replaced it is that request's own; the control keeps the socket and gets the
    claim's late reply instead (the record claimed) where LIST_STATES' list belongs."""
    wire = WireEngine(SERVER["connect"], timeout=0.3, replace=replace)
    try:
        assert wire.execute({"command": "CREATE_RECORD", "state": "late", "record": {"n": 0}})["ok"]
        claim = {"command": "CLAIM_RECORD", "state": "late", "where": {"n": 1}}
        with pytest.raises(AssertionError, match="did not answer"):
            wire.execute({**claim, "fields": {"n": 2}, "wait": 30})  # parks: nothing has n=1
        patched = wire.execute(
            {"command": "PATCH_RECORD", "state": "late", "id": 1, "fields": {"n": 1}}
        )
        assert patched["ok"] and patched["result"]["n"] == 1  # the claim is woken after it
        reply = wire.execute({"command": "LIST_STATES"})
        if replace:
            assert "late" in reply["result"] and reply["seq"] >= patched["seq"], reply
        else:
            assert reply["result"]["n"] == 2, reply  # the claim's answer: shifted by one
    finally:
        wire.execute({"command": "DELETE_STATE", "state": "late"})
        wire.close()
