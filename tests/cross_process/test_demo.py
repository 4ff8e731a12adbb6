"""``stateengine demo`` cannot hurt: on a fresh clone it runs (twice in a row: a slow
test) and leaves ``git status`` clean; a data directory that holds one of its tables,
or that a running server holds, is refused and left intact; ``demo --wire`` prints
frames a real server sent (its STATS reply names the server's pid, not the demo's).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stateengine.app import cli, demo
from stateengine.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
#: the console script, as the README runs it (``python -m`` from a checkout's root would
#: put the checkout's source folders first on sys.path)
SCRIPT = Path(sys.executable).with_name("stateengine")


def stateengine(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this checkout (its committed state), as a tester would make."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    out = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(out)], check=True, timeout=60)
    return out


def git_status(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def run_demo(clone: Path) -> None:
    out = stateengine("demo", cwd=clone)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kill -9 worker" in out.stdout and "claimed 2 times" in out.stdout
    assert "all tasks done exactly once" in out.stdout
    assert git_status(clone) == ""
    assert not (clone / ".stateengine").exists()  # nothing left in the working tree


@pytest.mark.slow  # two demos: ~12 s; the default run has one (below)
def test_a_fresh_clone_runs_the_demo_twice_in_a_row(clone: Path) -> None:
    run_demo(clone)
    run_demo(clone)


def test_a_fresh_clone_runs_the_demo_and_keeps_a_users_tasks_table(clone: Path) -> None:
    assert SCRIPT.exists(), SCRIPT
    run_demo(clone)

    # The default data directory of a user, holding the README's `tasks` table.
    with ServerProcess(clone / ".stateengine") as server, server.connect() as client:
        mine = client.create_record("tasks", {"title": "mine", "status": "pending"})
    out = stateengine("demo", "--data-dir", str(clone / ".stateengine"), cwd=clone)
    assert out.returncode == 1 and "already holds the table(s) tasks" in out.stderr, out
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
    with ServerProcess(clone / ".stateengine") as server, server.connect() as client:
        assert client.list_states() == ["tasks"]
        assert client.list_records("tasks") == [mine]
    assert git_status(clone) == ""  # .stateengine* is ignored


def test_demo_refuses_a_data_dir_a_server_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ServerProcess(tmp_path / "d") as server:
        assert cli.main(["demo", "--data-dir", str(server.data_dir)]) == 1
        err = capsys.readouterr().err
        assert f"a server (pid {server.pid}) is running on" in err
        assert len(err.splitlines()) == 1
        with server.connect() as client:
            assert client.list_states() == []  # untouched


def test_demo_http_without_the_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("fastapi", "uvicorn") else real(name, *a),
    )
    assert demo.run(None, http="127.0.0.1:0") == 1
    err = capsys.readouterr().err
    assert "pip install -e '.[http]'" in err and len(err.splitlines()) == 1


def test_wire_demo_prints_frames_from_a_real_server(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(SCRIPT), "demo", "--wire"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = lines[0]
    assert head.startswith("stateengine demo --wire: a real server, pid ")
    server_pid = int(head.split("pid ")[1].split(",")[0])
    sent = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith(">> ")]
    got = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("<< ")]
    assert len(sent) == len(got) == len(demo.DEMO)
    assert [r["req_id"] for r in got] == [r["req_id"] for r in sent]  # as on the wire
    types = [r["error"]["type"] for r in got if not r["ok"]]
    assert types == ["SchemaError", "VersionConflict"]
    stats = got[-1]["result"]
    assert stats["pid"] == server_pid and "requests" in stats  # a server's own figures
    assert list(tmp_path.iterdir()) == []  # its temporary data directory is gone
