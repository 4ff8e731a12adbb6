"""Files a server leaves and who may remove them (issue 14, items 11-14 and 21).

Real ``stateengine`` processes on real directories: a refused second ``serve``, ``cleanup``
after ``kill -9`` and against another user's ``server.json``, ``keygen`` and data-dir
permissions.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stateengine.testing import ServerProcess


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateengine", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_a_refused_second_serve_leaves_the_running_servers_files(tmp_path: Path) -> None:
    # Issue 14 item 11: the refused server's error path used to unlink server.json.
    with ServerProcess(tmp_path / "data") as server:
        socket_file = server.endpoint.removeprefix("ipc://")
        before = (server.data_dir / "server.json").read_text()
        second = cli("serve", "--data-dir", str(server.data_dir))
        assert second.returncode == 1
        assert f"in use by another stateengine server (pid {server.pid})" in second.stderr
        assert (server.data_dir / "server.json").read_text() == before
        assert os.path.exists(socket_file)
        # The same with the running server's endpoint named explicitly.
        second = cli("serve", "--data-dir", str(server.data_dir), "--endpoint", server.endpoint)
        assert second.returncode == 1 and os.path.exists(socket_file)
        out = cli("call", "--data-dir", str(server.data_dir), "list_states")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["ok"] is True
