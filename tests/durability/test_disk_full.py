"""A full disk refuses writes with a typed error; reads go on; writes resume when space
returns; nothing acknowledged is lost and nothing refused is kept (issue 14, item 18).

Before, the first pass that could not be stored made the server exit 1 (no reply to
anyone, reads stopped too). Two ways to fill the disk:

* ``STATEENGINE_TEST_ENOSPC=FILE`` (test-only switch, any machine): while FILE exists the
  stores' writes and fsyncs, and the server's space probe, fail with ``ENOSPC``;
* a real, small tmpfs in a private mount namespace (``unshare --mount``, root only; the
  mount vanishes with the server), filled and emptied through ``/proc/PID/root``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stateengine.client.client import Client
from stateengine.errors import StateNotFound, StorageUnavailable
from stateengine.testing import ServerProcess

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"  # pg_schema's


def _wait_writes_resume(client: Client, deadline_s: float = 15.0) -> dict[str, Any]:
    """Retry one create until the server takes writes again (it probes once a second)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return dict(client.create_record("t", {"n": 100}))
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _records(client: Client, table: str) -> list[dict[str, Any]]:
    try:
        return list(client.list_records(table))
    except StateNotFound:  # its first write was refused: the table was never made
        return []


def _check_full_disk_behaviour(client: Client, acked: list[dict[str, Any]]) -> None:
    """The disk is full now: typed refusals, reads answered from the undone state."""
    with pytest.raises(StorageUnavailable):
        client.create_record("t", {"n": 99})  # the pass that fails and is undone
    with pytest.raises(StorageUnavailable):
        client.patch_record("t", acked[0]["id"], {"n": -1})  # refused before applying
    with pytest.raises(StorageUnavailable):
        client.batch([{"command": "CREATE_RECORD", "state": "t", "record": {"n": 98}}])
    # Reads over the socket (not the arena): answered, without anything refused.
    reply = client.execute({"command": "LIST_RECORDS", "state": "t"})
    assert reply["ok"] and reply["result"] == acked
    info = client.execute({"command": "GET_STATE_INFO", "state": "t"})["result"]
    assert info["size"] == len(acked) and info["next_id"] == len(acked) + 1
    stats = client.execute({"command": "STATS"})["result"]
    assert stats["writes_refused"] and stats["storage_failures"] >= 1
    assert client.list_records("t") == acked  # the arena never saw the undone pass


@pytest.mark.parametrize("store", ["log", "sqlite", "json", "postgres"])
def test_full_disk_switch_refuses_writes_keeps_reads_and_resumes(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    flag = tmp_path / "disk-full"
    data = tmp_path / "data"
    env = {"STATEENGINE_TEST_ENOSPC": str(flag)}
    args = ["--store", store]
    if store == "postgres":  # the switch fails the transaction as a full disk would
        args += ["--pg-dsn", PG_DSN, "--pg-schema", request.getfixturevalue("pg_schema")]
    with ServerProcess(data, *args, env=env) as server:
        with server.connect(timeout=10) as client:
            acked = [client.create_record("t", {"n": i}) for i in range(5)]
            flag.touch()
            _check_full_disk_behaviour(client, acked)
            assert server.proc is not None and server.proc.poll() is None
            flag.unlink()
            resumed = _wait_writes_resume(client)
            assert resumed["id"] == 6  # the undone create's id was not kept
            acked.append(resumed)
            acked.append(client.create_record("t", {"n": 101}))
            assert client.list_records("t") == acked
        assert server.stop() == 0
    assert "cannot store a pass, undoing it" in server.output()
    with ServerProcess(data, *args) as again, again.connect() as client:
        assert client.list_records("t") == acked  # everything acknowledged, nothing else


def _unshare_unavailable() -> str | None:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return "needs Linux unshare(1)"
    if os.geteuid() != 0:
        return "mounting a private tmpfs needs root"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        timeout=10,
    )
    if probe.returncode != 0:
        return f"unshare --mount refused: {probe.stderr.decode(errors='replace').strip()}"
    return None


@pytest.mark.skipif(_unshare_unavailable() is not None, reason=str(_unshare_unavailable()))
@pytest.mark.parametrize("store", ["log", "sqlite", "json"])
def test_real_enospc_on_a_private_tmpfs(tmp_path: Path, store: str) -> None:
    """The data directory on a 4 MiB tmpfs mounted in a private mount namespace; the
    shell that mounted it outlives the server and copies the data directory out, so a
    restart elsewhere can check what was stored."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    copy = tmp_path / "copy"
    log_path = tmp_path / "server.log"
    script = (
        f"mount -t tmpfs -o size=4m,mode=0700 tmpfs {mnt} || exit 97; "
        f"{sys.executable} -m stateengine serve --data-dir {mnt}/data --store {store}; "
        "code=$?; "
        f"cp -a {mnt}/data {copy}; exit $code"
    )
    with open(log_path, "wb") as out:
        shell = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    inside = Path(f"/proc/{shell.pid}/root{mnt}")  # the namespace's view of its tmpfs
    try:
        deadline = time.monotonic() + 20
        info: dict[str, Any] = {}
        while not info:
            assert shell.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not start"
            try:
                info = json.loads((inside / "data" / "server.json").read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
        server_alive = Path(f"/proc/{info['pid']}").exists
        with Client(info["endpoint"], inside / "data", timeout=10) as client:
            acked = [client.create_record("t", {"n": i}) for i in range(5)]
            with open(inside / "fill", "wb") as f:  # fill the tmpfs to the last block
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            # The log's last page may still take a small entry: write until refused.
            pads = []
            for i in range(200):
                try:
                    pads.append(client.create_record("pad", {"p": "x" * 4000, "i": i}))
                except StorageUnavailable:
                    break
            else:
                pytest.fail("200 writes of 4 KB on a full tmpfs were all acknowledged")
            _check_full_disk_behaviour(client, acked)
            assert server_alive()
            (inside / "fill").unlink()
            resumed = _wait_writes_resume(client)
            assert resumed["id"] == 6
            acked.append(resumed)
            assert _records(client, "pad") == pads
        os.kill(info["pid"], signal.SIGTERM)
        assert shell.wait(30) == 0, log_path.read_text()
    finally:
        if shell.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.get("pid", shell.pid), signal.SIGKILL)
            shell.kill()
            shell.wait(10)
    text = log_path.read_text()
    assert "cannot store a pass, undoing it" in text
    assert "takes writes again" in text
    with ServerProcess(copy, "--store", store) as again, again.connect() as client:
        assert client.list_records("t") == acked  # everything acknowledged, nothing else
        assert _records(client, "pad") == pads


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_json_store_failed_save_keeps_earlier_passes_and_drops_the_failed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: str
) -> None:
    """In process: under ``everysec`` a failed save also carried earlier, acknowledged
    passes; they stay in the store's state (saved later), only the failed pass goes."""
    from stateengine.server import persist_base
    from stateengine.server.engine import TableEngine
    from stateengine.server.persist_base import PersistenceError
    from stateengine.server.persist_json import JsonStore

    flag = tmp_path / "full"
    monkeypatch.setattr(persist_base, "_enospc_path", str(flag))
    store = JsonStore(tmp_path, fsync)
    engine = TableEngine()
    store.recover(engine)

    def commit(request: dict[str, Any]) -> None:
        assert engine.execute(request)["ok"]
        cs = engine.change_set(engine.changes, engine.table_changes, engine.removed)
        store.write(cs)

    commit({"command": "CREATE_RECORD", "state": "t", "record": {"n": 1}})
    commit({"command": "CREATE_RECORD", "state": "t", "record": {"n": 2}})  # maybe unsaved
    flag.touch()
    store._last_save = 0.0  # the next write saves, whatever the policy
    assert engine.execute({"command": "DELETE_RECORD", "state": "t", "id": 1})["ok"]
    cs = engine.change_set(engine.changes, engine.table_changes, engine.removed)
    with pytest.raises(PersistenceError):
        store.write(cs)
    assert not (tmp_path / "state.json.tmp").exists()
    store.reload(engine)
    assert [r["n"] for r in engine.tables["t"].records.values()] == [1, 2]
    assert engine.seq == 2
    flag.unlink()
    store._last_save = 0.0
    store.tick()
    store.close()
    again = TableEngine()
    JsonStore(tmp_path, fsync).recover(again)
    assert [r["n"] for r in again.tables["t"].records.values()] == [1, 2]
