"""A server known to be gone fails a call at once, not after the client's timeout.

A clean stop removes the socket and ``server.json``; ``kill -9`` leaves them but its pid
is dead. Both clients and the CLI say so at once (client/liveness.py). The controls: with
the liveness checks switched off, the same call waits out its whole timeout; a server
that is alive but stopped (SIGSTOP) is never reported gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stateengine.client import liveness
from stateengine.client.aio import AsyncClient
from stateengine.client.client import Client
from stateengine.errors import ServerUnavailable
from stateengine.testing import ServerProcess

TIMEOUT = 10.0  # the clients' default: none of the calls below may wait this long
FAST = 1.0  # seconds a call to a gone server may take (one slice is 0.1 s)


def timed_failure(call: object) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        call()  # type: ignore[operator]
    return time.monotonic() - started, info.value.message


@pytest.fixture
def live(tmp_path: Path) -> ServerProcess:
    server = ServerProcess(tmp_path / "data").start()
    yield server
    server.kill()
    server.cleanup()


def test_after_a_clean_stop_every_client_fails_at_once(live: ServerProcess) -> None:
    by_dir = Client(data_dir=live.data_dir, timeout=TIMEOUT)
    by_endpoint = Client(live.endpoint, timeout=TIMEOUT)
    try:
        by_dir.create_record("t", {"n": 1})
        by_endpoint.create_record("t", {"n": 2})
        assert live.stop() == 0
        for client in (by_dir, by_endpoint):
            took, message = timed_failure(lambda c=client: c.create_record("t", {"n": 3}))
            assert took < FAST, (took, message)
            assert "gone" in message or "stopped" in message, message
        # Reads of the endpoint-only client go over the socket: the same answer.
        took, _ = timed_failure(lambda: by_endpoint.get_record("t", 1))
        assert took < FAST
    finally:
        by_dir.close()
        by_endpoint.close()


def test_after_kill_9_a_call_fails_within_a_slice(live: ServerProcess) -> None:
    with live.connect(timeout=TIMEOUT) as client:
        client.create_record("t", {"n": 1})
        live.kill()  # the socket and server.json stay; the pid is dead
        assert os.path.exists(live.endpoint.removeprefix("ipc://"))
        took, message = timed_failure(lambda: client.patch_record("t", 1, {"n": 2}))
        assert took < FAST and "server process is gone" in message, (took, message)
        took, _ = timed_failure(lambda: client.claim_record("t", {"n": 5}, {"n": 6}, wait=30))
        assert took < FAST  # a blocking claim's wait does not hide it either


def test_the_asyncio_client_fails_at_once_too(live: ServerProcess) -> None:
    async def scenario() -> list[float]:
        took = []
        async with AsyncClient(data_dir=live.data_dir, timeout=TIMEOUT) as db:
            await db.create_record("t", {"n": 1})
            live.kill()
            for _ in range(2):  # in flight when found gone, then refused before sending
                started = time.monotonic()
                with pytest.raises(ServerUnavailable, match="server process is gone"):
                    await db.patch_record("t", 1, {"n": 2})
                took.append(time.monotonic() - started)
        return took

    assert max(asyncio.run(scenario())) < FAST


def test_a_clean_stop_fails_the_asyncio_client_before_sending(live: ServerProcess) -> None:
    async def scenario() -> float:
        async with AsyncClient(live.endpoint, timeout=TIMEOUT) as db:
            await db.create_record("t", {"n": 1})
            assert live.stop() == 0
            started = time.monotonic()
            with pytest.raises(ServerUnavailable, match="socket file is gone"):
                await db.create_record("t", {"n": 2})
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.2


def test_control_without_the_checks_the_call_waits_its_timeout(
    live: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(liveness.Liveness, "fast", lambda self: None)
    monkeypatch.setattr(liveness.Liveness, "gone", lambda self: None)
    with live.connect(timeout=1.0) as client:
        client.create_record("t", {"n": 1})
        live.kill()
        took, message = timed_failure(lambda: client.patch_record("t", 1, {"n": 2}))
        assert took >= 0.9 and "within 1.0 s" in message, (took, message)


def test_a_stopped_but_living_server_is_not_called_gone(live: ServerProcess) -> None:
    with live.connect(timeout=0.5) as client:
        client.create_record("t", {"n": 1})
        os.kill(live.pid, signal.SIGSTOP)
        try:
            took, message = timed_failure(lambda: client.patch_record("t", 1, {"n": 2}))
        finally:
            os.kill(live.pid, signal.SIGCONT)
        assert took >= 0.45 and "no reply" in message and "gone" not in message, message
        assert client.increment("t", 1, "n", by=10) >= 11  # awake again: served as usual


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "stateengine", *args], capture_output=True, text=True, timeout=60
    )
    return time.monotonic() - started, out


def test_the_cli_does_not_wait_on_a_dead_pid_or_a_missing_socket(live: ServerProcess) -> None:
    endpoint = live.endpoint
    live.kill()
    started = time.monotonic()  # the CLI's start-up alone, on this machine now
    subprocess.run([sys.executable, "-c", "import stateengine.app.cli"], check=True, timeout=60)
    baseline = time.monotonic() - started
    for args in (
        ("call", "--data-dir", str(live.data_dir), "list_states"),
        ("stats", "--data-dir", str(live.data_dir)),
        ("watch", "t", "--data-dir", str(live.data_dir)),
    ):
        took, out = cli(*args)
        assert out.returncode == 2, out
        assert "server process is gone" in out.stderr and "Traceback" not in out.stderr
        assert took < baseline + FAST + 1.0, (took, baseline)  # CLI timeout: 5 s
    os.unlink(endpoint.removeprefix("ipc://"))
    took, out = cli("call", "--endpoint", endpoint, "list_states")
    assert out.returncode == 2 and "socket file is gone" in out.stderr, out
    assert took < baseline + FAST + 1.0, (took, baseline)
