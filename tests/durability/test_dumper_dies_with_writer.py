"""kill -9 of the writer while its forked child dumps a snapshot (issue 14 item 20).

The dumper used to inherit the data-dir lock (a ``flock`` shared by the fork's copy of
the descriptor) and to run on alone: a restart was refused, naming the dead writer's
pid, until the dump ended. A test-only switch, ``STATEENGINE_TEST_SNAPSHOT_DELAY``,
holds the dumper after the snapshot header so the kill lands mid-dump every time.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from stateengine.testing import ServerProcess


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped (its reaper is not ours)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] == b"Z"


def test_restart_at_once_after_kill_9_mid_snapshot(tmp_path: Path) -> None:
    if not Path("/proc/self/task").exists():
        pytest.skip("finds the dumper through /proc (Linux)")
    data = tmp_path / "data"
    dumpers: list[int] = []
    env = {"STATEENGINE_TEST_SNAPSHOT_DELAY": "120"}
    writer = ServerProcess(data, "--snapshot-bytes", "1", env=env).start()
    try:
        with writer.connect() as client:
            acked = client.create_record("t", {"v": 1})  # then the pass forks a dumper
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            dumpers = _children(writer.pid)
            if dumpers and (data / "snapshot.sesnap.tmp").exists():
                break
            time.sleep(0.02)
        assert dumpers, "no snapshot child appeared"
        (dumper,) = dumpers
        writer.kill()
        started = time.monotonic()
        restarted = ServerProcess(data).start()  # at once: no DataDirLocked
        try:
            assert time.monotonic() - started < 15
            with restarted.connect() as client:
                assert client.get_record("t", acked["id"]) == acked
        finally:
            restarted.stop()
            restarted.cleanup()
        deadline = time.monotonic() + 10
        while not _gone(dumper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(dumper), f"the dumper {dumper} outlived its writer"
        assert "in use by another" not in restarted.output()
    finally:
        writer.kill()
        writer.cleanup()
        for pid in dumpers:  # a dumper that did outlive its writer (old behaviour)
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
