"""The command line through real subprocesses: call, stats, check, cleanup after kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from stateengine.testing import ServerProcess


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateengine", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_call_one_command_and_stdin_lines(server: ServerProcess) -> None:
    d = str(server.data_dir)
    out = cli("call", "--data-dir", d, "create_record", "state=leads", 'record={"name": "ada"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == {"id": 1, "name": "ada", "_version": 1}
    lines = '{"command": "GET_RECORD", "state": "leads", "id": 1}\n{"command": "NOPE"}\n'
    out = cli("call", "--data-dir", d, "-", stdin=lines)
    assert out.returncode == 1  # one command failed
    replies = [json.loads(line) for line in out.stdout.splitlines()]
    assert replies[0]["result"]["name"] == "ada"
    assert replies[1]["error"]["type"] == "UnknownCommand"
    out = cli("call", "--data-dir", d, "-", stdin="{not json\n")
    assert out.returncode == 2 and "stdin line 1" in out.stderr


def test_stats_reports_tables_store_and_arena(server: ServerProcess) -> None:
    with server.connect() as client:
        client.set_state("t", [{"v": i} for i in range(10)])
    out = cli("stats", "--data-dir", str(server.data_dir))
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["tables"]["t"] == {"records": 10, "version": 1, "leases": 0}
    assert stats["store"]["fsync"] == "always" and stats["store"]["writes"] >= 1
    assert stats["arena"]["seq"] == stats["seq"] == 1


def test_call_without_a_server_exits_2(tmp_path: Path) -> None:
    out = cli("call", "--data-dir", str(tmp_path), "list_states")
    assert out.returncode == 2 and "no server is running" in out.stderr


def test_cleanup_after_kill_9_and_check(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    with server.connect() as client:
        client.create_record("t", {"v": 1})
    arena = str(server.info["arena"])
    socket_file = server.endpoint.removeprefix("ipc://")
    server.kill()
    assert os.path.exists(arena) and os.path.exists(socket_file)
    out = cli("cleanup", "--data-dir", str(server.data_dir))
    assert out.returncode == 0, out.stderr
    assert f"removed {arena}" in out.stdout
    assert not os.path.exists(arena) and not os.path.exists(socket_file)
    assert not (server.data_dir / "server.json").exists()
    out = cli("check", "--data-dir", str(server.data_dir))
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True


def test_watch_streams_changes(server: ServerProcess) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stateengine",
            "watch",
            "--data-dir",
            str(server.data_dir),
            "t",
            "--count",
            "3",
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with server.connect() as client:
            client.create_state("t")
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                client.create_record("t", {"v": 1})  # until the subscription is live
                time.sleep(0.05)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3 and all(line["table"] == "t" for line in lines)
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)


def test_log_lines_name_slow_and_failed_requests(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", "--slow-ms", "0", "-vv") as server:
        with server.connect() as client:
            client.execute({"command": "CREATE_STATE", "state": "t", "req_id": "abc"})
            client.execute({"command": "GET_RECORD", "state": "t", "id": 5})
    log = server.output()
    assert "serving endpoint=ipc://" in log and "recovered log:" in log
    assert "slow request command=CREATE_STATE state='t' req_id=" in log
    assert "request failed command=GET_RECORD state='t'" in log and "error=RecordNotFound" in log
