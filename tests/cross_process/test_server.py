"""The writer as a real subprocess: lifecycle, JSON clients, crash and restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from stateengine.errors import ServerUnavailable, StateNotFound
from stateengine.runtime import discovery as paths
from stateengine.testing import ServerProcess


def test_crud_over_the_socket_and_read_your_writes(server: ServerProcess) -> None:
    with server.connect() as client:
        rec = client.create_record("leads", {"name": "ada", "status": "new"})
        assert client.seen_seq == rec["_version"] == 1
        assert client.get_record("leads", rec["id"]) == rec
        assert client.list_records("leads", where={"status": "new"}) == [rec]
        with pytest.raises(StateNotFound):
            client.get_record("nope", 1)


def test_json_client_over_a_plain_req_socket(server: ServerProcess) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        request = {
            "command": "CREATE_RECORD",
            "state": "leads",
            "record": {"name": "bob", "blob": {"$b64": "AP8="}},
            "req_id": "r1",
        }
        sock.send(json.dumps(request).encode())
        reply = json.loads(sock.recv())
        assert reply == {
            "ok": True,
            "result": {"id": 1, "name": "bob", "blob": {"$b64": "AP8="}, "_version": 1},
            "version": 1,
            "seq": 1,
            "req_id": "r1",
        }
        sock.send(b'{"command": "GET_RECORD", "state": "leads"}')
        assert json.loads(sock.recv())["error"]["type"] == "BadRequest"
        sock.send(b"\x01not a body")
        assert b"BadRequest" in sock.recv()
    finally:
        sock.close()
        ctx.term()


def test_second_server_on_the_same_data_dir_is_refused(server: ServerProcess) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"in use by another stateengine server (pid {server.pid})" in out.stderr


def test_sigterm_exits_zero_and_leaves_nothing_behind(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    socket_file = proc.endpoint.removeprefix("ipc://")
    assert os.path.exists(socket_file)
    assert proc.stop() == 0
    assert not os.path.exists(socket_file)
    assert not (proc.data_dir / paths.SERVER_FILE).exists()
    assert "stopped" in proc.output()


def test_kill_9_gives_server_unavailable_in_time_and_restart_is_picked_up(
    tmp_path: Path,
) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    client = proc.connect(timeout=1.0)
    try:
        client.create_state("t")
        proc.kill()
        started = time.monotonic()
        with pytest.raises(ServerUnavailable, match="server process is gone"):
            client.create_record("t", {"x": 1})
        assert time.monotonic() - started < 3.0
        assert not client.server_alive()
        # A restarted server on the same data dir listens on the same endpoint and
        # recovers what was acknowledged.
        with ServerProcess(tmp_path / "data") as again:
            assert again.endpoint == client.endpoint
            client.create_state("after")  # the same client, not restarted
            assert client.list_states() == ["after", "t"]
    finally:
        client.close()
        proc.cleanup()


def test_client_pipeline_and_send_many(server: ServerProcess) -> None:
    with server.connect() as client:
        with client.pipeline() as pipe:
            for i in range(50):
                pipe.create_record("t", {"i": i})
            pipe.get_record("t", 999)
        assert [r["i"] for r in pipe.results[:50]] == list(range(50))
        assert type(pipe.results[50]).__name__ == "RecordNotFound"
        assert client.batch([{"command": "INCREMENT", "state": "t", "id": 1, "field": "i"}]) == [1]
