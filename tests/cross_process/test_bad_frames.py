"""Malformed frames against a real server: a typed error each, state unchanged, still serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine import command_table
from stateengine.client.client import Client
from stateengine.errors import ERROR_TYPES
from stateengine.testing import ServerProcess

#: Every command of the table, and names no command has.
COMMANDS = [*sorted(command_table.names()), "NOT_A_COMMAND", ""]

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def bad_request(draw: st.DrawFn) -> dict[str, Any]:
    """A request map that must fail: it always carries an argument no command takes."""
    request: dict[str, Any] = {"command": draw(st.sampled_from(COMMANDS) | st.text(max_size=6))}
    for key in draw(
        st.lists(
            st.sampled_from(
                ["state", "id", "record", "fields", "records", "where", "commands", "by", "field"]
            ),
            max_size=4,
        )
    ):
        request[key] = draw(junk | st.just("t"))
    request["zz_bogus"] = draw(junk)
    return request


frames = st.one_of(
    st.lists(st.binary(max_size=40), min_size=1, max_size=4),
    bad_request().map(lambda r: [msgpack.packb(r, use_bin_type=True)]),
    bad_request().map(lambda r: [json.dumps(r, default=repr).encode()]),
    bad_request().map(lambda r: [msgpack.packb(r, use_bin_type=True), b"extra"]),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Client]]:
    with ServerProcess(tmp_path_factory.mktemp("fuzz") / "data") as server:
        with server.connect(timeout=5) as client:
            client.create_state("t", schema={"name": "string", "n": "integer"})
            for i in range(5):
                client.create_record("t", {"name": f"r{i}", "n": i})
            yield server, client


def digest(client: Client) -> Any:
    return [
        (name, client.get_state_info(name), client.list_records(name))
        for name in client.list_states()
    ], client.execute({"command": "LIST_STATES"})["seq"]


@pytest.fixture(scope="module")
def dealer(served: tuple[ServerProcess, Client]) -> Iterator[zmq.Socket[bytes]]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(served[0].endpoint)
    yield sock
    sock.close()
    ctx.term()


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=frames)
def test_fuzzed_frames_get_typed_errors(
    served: tuple[ServerProcess, Client], dealer: zmq.Socket[bytes], message: list[bytes]
) -> None:
    dealer.send_multipart(message)
    assert dealer.poll(5000), "the server stopped answering"
    body = dealer.recv_multipart()[-1]
    reply = json.loads(body) if body[:1] == b"{" else msgpack.unpackb(body, raw=False)
    assert reply["ok"] is False, (message, reply)
    assert reply["error"]["type"] in ERROR_TYPES and reply["error"]["message"]


def test_state_unchanged_after_the_fuzz(served: tuple[ServerProcess, Client]) -> None:
    # Runs after the fuzz in file order; the first digest is the fixture's state.
    _, client = served
    tables, seq = digest(client)
    assert seq == 6
    assert [name for name, _, _ in tables] == ["t"]
    assert [r["n"] for r in tables[0][2]] == [0, 1, 2, 3, 4]
    assert client.create_record("t", {"name": "after", "n": 9})["_version"] == 7
