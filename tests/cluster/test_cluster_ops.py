"""Operating a cluster node: ``stateengine call SYNC`` (a command of the table, null on a
single server), the node's lag in ``STATS``, and ``stateengine backup`` of a node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Connect, NodeFactory, RedisServer

from stateengine.server.cluster import ClusterNode
from stateengine.testing import ServerProcess


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateengine", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_call_sync_waits_on_a_node_and_is_null_on_a_single_server(
    tmp_path: Path, cluster_node: NodeFactory, connect: Connect
) -> None:
    node = cluster_node("a")
    connect(node).create_state("t")
    done = cli("call", "SYNC", "--data-dir", str(node.data_dir))
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["ok"] and reply["result"]["applied"].count("-") == 1, reply
    refused = cli("call", "SYNC", "x=1", "--data-dir", str(node.data_dir))
    assert refused.returncode == 1 and "SYNC takes no argument 'x'" in refused.stdout

    single = ServerProcess(tmp_path / "single")
    single.start()
    try:
        done = cli("call", "sync", "--data-dir", str(single.data_dir))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] is None
        with single.connect() as client:
            assert client.sync() is None
    finally:
        single.stop()


def _figures(node: ClusterNode) -> dict[str, Any]:
    figures: dict[str, Any] = node._stats()["cluster"]
    return figures


def test_stats_says_how_far_behind_the_stream_a_node_is_and_when_stale(
    tmp_path: Path, cluster_node: NodeFactory, connect: Connect, redis_server: RedisServer
) -> None:
    """A node in this process whose loop does not run: another node's writes pile up
    behind it, counted in ``STATS``; once it reads the stream (the control) it is level;
    with Redis gone it says stale, and the entries behind are unknown (None)."""
    a = connect(cluster_node("a"))
    a.create_state("t")
    node = ClusterNode(tmp_path / "b", cluster=f"{redis_server.url}/test")
    node.start()
    try:
        level = _figures(node)
        assert (level["behind_entries"], level["behind_ms"], level["stale"]) == (0, 0, None)
        for i in range(5):
            a.create_record("t", {"x": i})
        behind = _figures(node)
        assert behind["behind_entries"] == 5, behind
        last_ms = int(behind["stream_last"].split("-")[0])
        assert behind["behind_ms"] == last_ms - int(behind["applied"].split("-")[0])
        assert node._catch_up()
        assert _figures(node)["behind_entries"] == 0  # the control: read, level again
        redis_server.stop()
        assert not node._catch_up()
        stale = _figures(node)
        assert stale["stale"] and stale["behind_entries"] is None, stale
    finally:
        node.close()


@pytest.mark.slow
def test_backup_of_a_node_restores_into_a_single_server(
    tmp_path: Path, cluster_node: NodeFactory, connect: Connect
) -> None:
    """``stateengine backup`` against a node holds the node's state at the entry it
    applied (written through another node); a record written after it is not in it."""
    node_a = cluster_node("a")
    b = connect(cluster_node("b"))
    a = connect(node_a)
    b.create_state("t")
    for i in range(20):
        b.create_record("t", {"x": i})
    a.sync()
    before = a.list_records("t")
    seq = a.stats()["seq"]
    done = cli("backup", str(tmp_path / "copy"), "--data-dir", str(node_a.data_dir))
    assert done.returncode == 0, done.stderr
    assert f"backup at seq {seq}: 20 records in 1 tables" in done.stdout
    b.create_record("t", {"x": 99})  # after the backup: not in it
    restored = cli("restore", str(tmp_path / "copy"), "--data-dir", str(tmp_path / "restored"))
    assert restored.returncode == 0, restored.stderr
    single = ServerProcess(tmp_path / "restored", "--store", "log")
    single.start()
    try:
        with single.connect() as client:
            assert client.list_records("t") == before
            assert client.stats()["seq"] == seq
    finally:
        single.stop()


@pytest.mark.slow
def test_the_gateway_of_a_node_serves_sync_and_its_lag_to_the_dashboard(
    cluster_node: NodeFactory,
) -> None:
    """``serve --cluster --http``: ``/api/stats`` carries the node's lag and staleness,
    which the dashboard's cluster card shows; ``SYNC`` has its generated route."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from stateengine.app.gateway import gateway_info

    node = cluster_node("a", "--http", "127.0.0.1:0")
    info = gateway_info(node.data_dir, 30, running=lambda: node.proc is not None)
    with httpx.Client(base_url=info.url, headers=info.headers, timeout=10.0) as http:
        synced = http.post("/api/call/SYNC", json={})
        assert synced.status_code == 200, synced.text
        assert synced.json()["result"]["applied"].count("-") == 1
        figures = http.get("/api/stats").json()["cluster"]
        assert figures["behind_entries"] == 0 and figures["stale"] is None, figures
        script = http.get("/static/dashboard.js").text
        page = http.get("/", follow_redirects=True).text
    assert "c.behind_entries" in script and "c.behind_ms" in script and "c.stale" in script
    assert 'id="stat-cluster"' in page
