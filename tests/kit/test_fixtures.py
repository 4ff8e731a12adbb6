"""The kit's pytest plugin: loaded through its entry point, servers up and torn down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stateengine.client.client import Client
from stateengine.runtime import discovery as paths
from stateengine.testing import ServerProcess

pytest_plugins = ["pytester"]


def test_server_fixture_serves(stateengine_server: ServerProcess) -> None:
    with stateengine_server.connect() as client:
        client.create_record("t", {"x": 1})
        assert client.get_record("t", 1)["x"] == 1
    assert paths.read_server_file(stateengine_server.data_dir)["pid"] == stateengine_server.pid


def test_client_fixture(stateengine_client: Client) -> None:
    assert stateengine_client.list_states() == []


def test_factory_takes_serve_arguments(
    stateengine_server_factory: Callable[..., ServerProcess],
) -> None:
    a = stateengine_server_factory("--no-arena")
    b = stateengine_server_factory()
    assert a.data_dir != b.data_dir and a.endpoint != b.endpoint
    assert not a.info.get("arena") and b.info.get("arena")


def test_history_fixture_is_an_empty_directory(stateengine_history: Path) -> None:
    assert stateengine_history.is_dir() and list(stateengine_history.iterdir()) == []


def test_plugin_is_registered_and_tears_servers_down(pytester: pytest.Pytester) -> None:
    """A user's test gets the fixture without an import (the pytest11 entry point); after
    the test, the server process is gone and its arena segment removed."""
    out = pytester.path / "seen.json"
    pytester.makepyfile(
        f"""
        import json
        def test_uses_the_fixture(stateengine_server):
            with stateengine_server.connect() as db:
                db.create_record("t", {{"x": 1}})
            info = dict(stateengine_server.info)
            open({str(out)!r}, "w").write(json.dumps(info))
        """
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)
    info = json.loads(out.read_text())
    assert not paths.pid_alive(info["pid"], info.get("start_time"))
    if info.get("arena"):
        assert not os.path.exists(str(info["arena"]))


def test_plugin_imports_no_hypothesis() -> None:
    """The plugin loads into every pytest run of anyone who installs stateengine."""
    code = "import sys, stateengine.testing.fixtures; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_history_fixture_records_the_servers_expiry_commits(
    stateengine_server: ServerProcess, stateengine_history: Path
) -> None:
    """A lease that runs out is a commit of the server's own; with both fixtures it is in
    the history (process 'server'), so the checker explains the reclaim after it."""
    import time

    from stateengine.testing.checker import check
    from stateengine.testing.history import read_history

    with stateengine_server.connect(history=stateengine_history) as db:
        db.create_state("q", schema={"s": "string"})
        db.create_record("q", {"s": "p"})
        first = db.claim_record("q", where={"s": "p"}, fields={"s": "r"}, lease_seconds=0.3)
        again = db.claim_record("q", where={"s": "p"}, fields={"s": "r"}, wait=5)
        assert first is not None and again is not None and again["id"] == first["id"]
    deadline = time.monotonic() + 5
    while True:
        ops = read_history(*stateengine_history.glob("*.msgpack"))
        if any(op.process == "server" for op in ops) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert [op.command for op in ops if op.process == "server"] == ["EXPIRY"]
    result = check(ops)
    assert result.ok, result.report()
