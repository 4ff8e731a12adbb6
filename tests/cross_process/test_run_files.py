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


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def _fake_server_file(data_dir: Path, endpoint: str) -> None:
    info = {"pid": _dead_pid(), "start_time": 1, "endpoint": endpoint}
    (data_dir / "server.json").write_text(json.dumps(info))


def test_cleanup_never_unlinks_what_server_json_names(tmp_path: Path) -> None:
    # Issue 14 item 12: cleanup unlinked any path named as the endpoint of a dead server.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    _fake_server_file(data, f"ipc://{victim}")
    out = cli("cleanup", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert victim.read_text() == "precious"
    assert f"left {victim}: not this data directory's default endpoint" in out.stdout
    assert not (data / "server.json").exists()  # our own stale file does go


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory another user owns")
def test_cleanup_as_root_leaves_another_users_data_dir_alone(tmp_path: Path) -> None:
    # Issue 14 item 12: root running cleanup in a directory another user controls.
    import pwd

    nobody = pwd.getpwnam("nobody")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    data = tmp_path / "theirs"
    data.mkdir(mode=0o700)
    _fake_server_file(data, f"ipc://{victim}")
    for path in (data, data / "server.json"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    out = cli("cleanup", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert victim.read_text() == "precious"
    assert (data / "server.json").exists()
    assert f"owned by uid {nobody.pw_uid}, not by us" in out.stdout


def test_cleanup_removes_the_feed_socket_of_a_killed_server(tmp_path: Path) -> None:
    # Issue 14 item 21: cleanup left the change feed's socket behind.
    server = ServerProcess(tmp_path / "data").start()
    socket_file = server.endpoint.removeprefix("ipc://")
    feed_file = str(server.info["feed"]).removeprefix("ipc://")
    assert feed_file == socket_file + ".feed"
    server.kill()
    assert stat.S_ISSOCK(os.lstat(feed_file).st_mode) and os.path.exists(socket_file)
    out = cli("cleanup", "--data-dir", str(server.data_dir))
    server.cleanup()
    assert out.returncode == 0, out.stderr
    assert f"removed {feed_file}" in out.stdout and f"removed {socket_file}" in out.stdout
    assert not os.path.lexists(feed_file) and not os.path.lexists(socket_file)
    assert not (server.data_dir / "server.json").exists()


def test_cleanup_removes_nothing_while_the_server_runs(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        out = cli("cleanup", "--data-dir", str(server.data_dir))
        assert out.returncode == 0, out.stderr
        assert "a server is running on it" in out.stdout
        assert (server.data_dir / "server.json").exists()
        assert os.path.exists(server.endpoint.removeprefix("ipc://"))
