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
import time
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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes_under(top: Path) -> dict[str, int]:
    """Every path under ``top`` with its mode; a file renamed away mid-walk is skipped."""
    seen: dict[str, int] = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(root, name)
            try:
                seen[str(path.relative_to(top))] = _mode(path)
            except FileNotFoundError:
                continue
    return seen


def _keygen_umask_0(*args: str) -> subprocess.CompletedProcess[str]:
    """``keygen`` run with umask 0: whatever it creates without an explicit mode is 0666."""
    return subprocess.run(
        [sys.executable, "-m", "stateengine", "keygen", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0),
    )


def test_keygen_makes_secrets_private_whatever_the_umask(tmp_path: Path) -> None:
    # Issue 14 item 13: the secret was written with the umask and chmodded after, in a
    # --out directory made with the umask (0755, here 0777).
    import zmq.auth

    data, keys = tmp_path / "data", tmp_path / "keys"
    out = _keygen_umask_0("alice", "--data-dir", str(data), "--out", str(keys))
    assert out.returncode == 0, out.stderr
    secret = keys / "alice.key_secret"
    assert f"(secret, keep private): {secret}" in out.stdout
    assert _mode(keys) == 0o700 and _mode(data) == 0o700
    # The server's public key beside it (keygen's copy, for --curve-keys DIR).
    assert sorted(p.name for p in keys.iterdir()) == ["alice.key_secret", "server.key"]
    curve = data / "curve"
    for path in (secret, keys / "server.key", curve / "server.key", curve / "server.key_secret"):
        assert _mode(path) == 0o600, path
    assert _mode(curve / "clients" / "alice.key") == 0o600
    public, key = zmq.auth.load_certificate(str(secret))
    assert (
        key is not None
        and zmq.auth.load_certificate(str(curve / "clients" / "alice.key"))[0] == public
    )
    # The same name again: the existing secret is never overwritten.
    again = _keygen_umask_0("alice", "--data-dir", str(data), "--out", str(keys))
    assert again.returncode == 1 and "exists" in again.stderr
    assert zmq.auth.load_certificate(str(secret))[1] == key


def test_keygen_refuses_an_out_dir_others_can_enter(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    out = cli("keygen", "bob", "--data-dir", str(tmp_path / "data"), "--out", str(shared))
    assert out.returncode == 1
    assert f"chmod 700 {shared}" in out.stderr
    assert list(shared.iterdir()) == []
    out = cli(
        "keygen", "../evil", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "k")
    )
    assert out.returncode == 1 and "client name" in out.stderr


def test_serve_refuses_a_data_dir_others_can_read_and_names_the_fix(tmp_path: Path) -> None:
    # Issue 14 item 14: an existing 0755 data dir was accepted.
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    out = cli("serve", "--data-dir", str(data))
    assert out.returncode == 1
    assert f"chmod 700 {data}" in out.stderr
    assert list(data.iterdir()) == []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("store", ["log", "sqlite", "json"])
def test_every_file_in_the_data_dir_is_private_whatever_the_umask(
    tmp_path: Path, store: str
) -> None:
    # Issue 14 item 14: the SQLite database and its WAL were 0644; server.json too.
    args = ["--store", store, "--snapshot-bytes", "1"]
    if store == "log":
        args += ["--tcp", f"127.0.0.1:{_free_port()}"]  # curve keys too
    old = os.umask(0)  # the server inherits it: anything made without a mode is 0666
    try:
        server = ServerProcess(tmp_path / "data", *args).start()
    finally:
        os.umask(old)
    try:
        with server.connect() as client:
            for i in range(20):
                client.create_record("secrets", {"v": f"s{i}"})
        wanted = {"lock", "server.json"} | {
            "log": {"snapshot.sesnap", "curve/server.key_secret"},
            "sqlite": {"state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"},
            "json": {"state.json"},
        }[store]
        # The forked dump finishes on its own time, and with --snapshot-bytes 1 another may
        # follow: between its two renames snapshot.sesnap is briefly absent, and a
        # .tmp can vanish between listing and stat. Walk again until every wanted file
        # was seen in one walk (bounded).
        deadline = time.monotonic() + 20
        while True:
            seen = _modes_under(server.data_dir)
            if wanted <= set(seen) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert wanted <= set(seen), seen
        wrong = {
            name: oct(mode)
            for name, mode in seen.items()
            if mode != (0o700 if (server.data_dir / name).is_dir() else 0o600)
        }
        assert not wrong, wrong
        assert _mode(server.data_dir) == 0o700
    finally:
        server.stop()
        server.cleanup()
