"""Remote parity (issue 18): over TCP with CurveZMQ, the CLI (`call`, `stats`, `watch`),
`watch()`, `snapshot()` and the asyncio client work as they do locally, and a refused
client is told why at once instead of timing out."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq.auth

from stateengine.client.aio import AsyncClient
from stateengine.client.client import Client
from stateengine.errors import ConnectionRefused, ServerUnavailable
from stateengine.runtime import client_options
from stateengine.runtime.curve import ConnectionProbe
from stateengine.testing import ServerProcess


def free_port_pair() -> int:
    """A port P with P+1 free too (the remote feed listens on --tcp's port + 1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateengine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Remote:
    def __init__(self, server: ServerProcess, endpoint: str, keys: Path) -> None:
        self.server, self.endpoint, self.keys = server, endpoint, keys
        self.curve = client_options(keys / "server.key", keys / "w1.key_secret")

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.endpoint, timeout=timeout, curve=self.curve)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    root = tmp_path_factory.mktemp("remote")
    data, keys = root / "data", root / "keys"
    run = cli("keygen", "w1", "--data-dir", str(data), "--out", str(keys))
    assert run.returncode == 0, run.stderr
    assert f"--curve-keys:          {keys}" in run.stdout  # keygen puts server.key there too
    port = free_port_pair()
    with ServerProcess(data, "--tcp", f"127.0.0.1:{port}", "-v") as server:
        yield Remote(server, f"tcp://127.0.0.1:{port}", keys)


def test_cli_call_stats_watch_over_tcp(remote: Remote) -> None:
    keys = ["--endpoint", remote.endpoint, "--curve-keys", str(remote.keys)]
    run = cli("call", *keys, "create_state", "state=cli")
    assert run.returncode == 0, run.stderr
    watch = subprocess.Popen(
        [sys.executable, "-m", "stateengine", "watch", "cli", *keys, "--count", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The watcher subscribes asynchronously: write until it has seen one change.
        deadline = time.monotonic() + 20
        while watch.poll() is None and time.monotonic() < deadline:
            cli("call", *keys, "create_record", "state=cli", 'record={"n": 1}')
            time.sleep(0.2)
        out, err = watch.communicate(timeout=20)
    finally:
        watch.kill()
        watch.wait(10)
    assert watch.returncode == 0, err
    change = json.loads(out.splitlines()[0])
    assert change["table"] == "cli" and change["puts"][0]["n"] == 1
    stats = cli("stats", *keys)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["tables"]["cli"]["records"] >= 1
    # Explicit files work as the directory does; half a pair is refused clearly.
    files = [
        "--curve-server-key",
        str(remote.keys / "server.key"),
        "--curve-secret",
        str(remote.keys / "w1.key_secret"),
    ]
    assert cli("call", "--endpoint", remote.endpoint, *files, "list_states").returncode == 0
    half = cli("call", "--endpoint", remote.endpoint, *files[:2], "list_states")
    assert half.returncode == 2 and "give both" in half.stderr
    # Without keys: refused with the reason, well before the 30 s timeout.
    started = time.monotonic()
    plain = cli("call", "--endpoint", remote.endpoint, "--timeout", "30", "list_states")
    assert plain.returncode == 2 and "CurveZMQ" in plain.stderr
    assert time.monotonic() - started < 15


def test_watch_and_snapshot_over_tcp(remote: Remote) -> None:
    with remote.client() as db, db.watch("w") as changes:
        db.create_state("w")
        seen: list[int] = []
        deadline = time.monotonic() + 20  # slow joiner: write until the feed delivers
        while not seen and time.monotonic() < deadline:
            db.create_record("w", {"n": len(seen)})
            change = changes.next(timeout=0.2)
            if change is not None:
                seen.append(change.seq)
        assert seen, "no change came over the remote feed"
        db.create_record("w", {"n": 99})
        with db.snapshot() as snap:
            records = snap.list_records("w")
            assert snap.version >= max(seen)
            assert snap.get_record("w", records[-1]["id"])["n"] == 99
            assert "w" in snap.list_states()
            assert snap.get_state_info("w")["size"] == len(records)
        with db.snapshot(tables=["w"]) as only:
            assert only.list_states() == ["w"]
        assert db.list_records("w") == records  # nothing written in between


def test_asyncio_client_over_tcp(remote: Remote) -> None:
    async def main() -> None:
        async with AsyncClient(remote.endpoint, timeout=5, curve=remote.curve) as db:
            rec = await db.create_record("aio", {"x": 1})
            assert await db.get_record("aio", rec["id"]) == rec
            assert "aio" in await db.list_states()

    asyncio.run(main())


def test_refused_clients_are_told_why(remote: Remote, tmp_path: Path) -> None:
    stranger_dir = tmp_path / "stranger"
    stranger_dir.mkdir()
    _, sec = zmq.auth.create_certificates(str(stranger_dir), "stranger")
    stranger = client_options(remote.keys / "server.key", sec)
    started = time.monotonic()
    with Client(remote.endpoint, timeout=20, curve=stranger) as db:
        with pytest.raises(ConnectionRefused, match="allow-list"):
            db.list_states()
    with Client(remote.endpoint, timeout=20) as plain:
        with pytest.raises(ConnectionRefused, match="uses no CurveZMQ"):
            plain.list_states()
    wrong = dict(remote.curve, curve_serverkey=zmq.curve_keypair()[0])
    with Client(remote.endpoint, timeout=20, curve=wrong) as db:
        with pytest.raises(ConnectionRefused, match="wrong server public key"):
            db.list_states()
    assert time.monotonic() - started < 15  # each told at once, not after its 20 s
    with (
        Client(remote.endpoint, timeout=20, curve=stranger) as db,
        db.watch("w") as changes,
        pytest.raises(ConnectionRefused, match="allow-list"),
    ):
        changes.next(timeout=10)

    async def refused_async() -> None:
        async with AsyncClient(remote.endpoint, timeout=20, curve=stranger) as db:
            await db.list_states()

    with pytest.raises(ConnectionRefused):
        asyncio.run(refused_async())
    # Nothing listening: a timeout that says so.
    with Client(f"tcp://127.0.0.1:{free_port_pair()}", timeout=1, curve=remote.curve) as db:
        with pytest.raises(ServerUnavailable, match="nothing accepts connections"):
            db.list_states()


def test_control_without_the_probe_a_refusal_is_a_silent_timeout(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: with the monitor's answer ignored, the stranger only times out."""
    monkeypatch.setattr(ConnectionProbe, "refusal", lambda self: None)
    monkeypatch.setattr(ConnectionProbe, "hint", lambda self, endpoint: "")
    (tmp_path / "s").mkdir()
    _, sec = zmq.auth.create_certificates(str(tmp_path / "s"), "s")
    with Client(
        remote.endpoint, timeout=1, curve=client_options(remote.keys / "server.key", sec)
    ) as db:
        with pytest.raises(ServerUnavailable) as caught:
            db.list_states()
    assert type(caught.value) is ServerUnavailable and "within 1 s" in str(caught.value)


def test_a_taken_feed_port_leaves_requests_served(tmp_path: Path) -> None:
    """--tcp P with P+1 taken: the server starts, says the remote feed is off, and
    serves remote requests."""
    data, keys = tmp_path / "data", tmp_path / "keys"
    assert cli("keygen", "w1", "--data-dir", str(data), "--out", str(keys)).returncode == 0
    port = free_port_pair()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port + 1))
        blocker.listen(1)
        with ServerProcess(data, "--tcp", f"127.0.0.1:{port}") as server:
            assert "tcp feed: off (its port is taken" in server.output()
            assert server.info["tcp_feed"] is None
            remote = Remote(server, f"tcp://127.0.0.1:{port}", keys)
            with remote.client() as db:
                assert db.create_record("t", {"n": 1})["n"] == 1
