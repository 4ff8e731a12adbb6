"""Remote clients over TCP: CurveZMQ only, allow-listed keys; others refused and logged."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from stateengine.client.client import Client
from stateengine.errors import ServerUnavailable
from stateengine.runtime import client_options
from stateengine.testing import ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(data_dir: Path, name: str, out: Path) -> tuple[Path, Path]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "stateengine",
            "keygen",
            name,
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = Path(run.stdout.split("(secret, keep private): ")[1].splitlines()[0])
    server_key = Path(run.stdout.split("(give to the client):")[1].splitlines()[0].strip())
    return secret, server_key


def test_remote_client_with_an_allowed_key_and_refusals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret, server_key = keygen(data, "worker1", tmp_path / "keys")
    port = free_port()
    with ServerProcess(data, "--tcp", f"127.0.0.1:{port}", "-v") as server:
        endpoint = f"tcp://127.0.0.1:{port}"
        with Client(endpoint, timeout=5, curve=client_options(server_key, secret)) as remote:
            rec = remote.create_record("t", {"n": 1})
            assert remote.get_record("t", rec["id"]) == rec  # read-your-writes, over TCP
            remote.patch_record("t", rec["id"], {"n": 2})
            assert remote.list_records("t")[0]["n"] == 2
        # No CURVE at all: the handshake never completes, no request reaches the writer.
        with Client(endpoint, timeout=0.7) as plain, pytest.raises(ServerUnavailable):
            plain.list_states()
        # A well-formed key pair that was never allowed in: refused, and logged.
        (tmp_path / "stranger").mkdir()
        _, sec = zmq.auth.create_certificates(str(tmp_path / "stranger"), "stranger")
        with Client(endpoint, timeout=0.7, curve=client_options(server_key, sec)) as stranger:
            with pytest.raises(ServerUnavailable):
                stranger.create_record("t", {"n": 99})
        with server.connect() as local:
            assert [r["n"] for r in local.list_records("t")] == [2]  # nothing else landed
    log = server.output()
    assert "tcp client refused: DENIED" in log or "DENIED (CURVE)" in log  # the stranger
    assert "tcp client refused: handshake failed" in log  # the client without CurveZMQ


def test_endpoint_must_be_ipc(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stateengine",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--endpoint",
            f"tcp://127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "--tcp HOST:PORT" in out.stderr
