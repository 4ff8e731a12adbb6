"""Cluster nodes when Redis fails under them: ``kill -9`` of Redis under load and its
restart, a node cut off from Redis by a TCP proxy and its return."""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import (
    Connect,
    NodeFactory,
    RedisServer,
    TcpProxy,
    check_all_present,
    cluster_figures,
    settled_digests,
    steady_writer,
)

from stateengine.errors import ServerUnavailable
from stateengine.testing import ServerProcess


def wait_for_write(client: Any, table: str, record: dict[str, Any], seconds: float) -> None:
    """Write until the node takes writes again (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.create_record(table, record)
            return
        except ServerUnavailable:
            assert time.monotonic() < deadline, "the node never took writes again"
            time.sleep(0.05)


def test_redis_kill_9_under_load_loses_no_acknowledged_write(
    redis_server: RedisServer, cluster_node: NodeFactory, connect: Connect
) -> None:
    """Writers on three nodes write without pause; Redis is killed with kill -9 and
    restarted on its port and AOF directory after 1.5 s. Writes in the outage fail with
    ServerUnavailable at once (the slowest in well under the client's 10 s timeout),
    succeed again after it without restarting a node, and every acknowledged write is on
    every node, whose digests agree."""
    nodes = [cluster_node(name, "--cluster-snapshot-seconds", "0.5") for name in "abc"]
    connect(nodes[0]).create_state("t")
    with ProcessPoolExecutor(3, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(steady_writer, node, "t", node.data_dir.name, 6.0) for node in nodes]
        with redis_server.client() as r:  # under load: the writers are writing
            deadline = time.monotonic() + 30
            while r.xlen("stateengine:test:stream") < 100:
                assert time.monotonic() < deadline, "the writers never wrote"
                time.sleep(0.02)
        redis_server.kill()
        time.sleep(1.5)  # the outage: writes fail meanwhile (what is measured)
        redis_server.start()
        results = [future.result(timeout=60) for future in futures]
    acknowledged = [key for result in results for key in result["acknowledged"]]
    ids = {key: rid for result in results for key, rid in result["ids"].items()}
    assert all(result["failed"] > 0 for result in results), results
    assert max(result["slowest_failure"] for result in results) < 2.0, results
    print("writes refused for", [round(r["outage"], 2) for r in results], "s (each writer)")
    assert all(result["after_failure"] > 0 for result in results), results
    clients = [connect(node) for node in nodes]
    check_all_present(clients, acknowledged, ids=ids)
    assert all(cluster_figures(c)["stale"] is None for c in clients)


def test_a_node_cut_off_from_redis_refuses_writes_reads_on_and_catches_up(
    tmp_path: Path, redis_server: RedisServer, cluster_node: NodeFactory, connect: Connect
) -> None:
    """Node c reaches Redis through a proxy; the proxy drops its connections and refuses
    new ones. c's writes fail at once with ServerUnavailable, its reads go on from its
    arena, its stats say it is stale and since when; a and b go on writing. When the
    link returns, c catches up to the same digest without a restart."""
    a, b = connect(cluster_node("a")), connect(cluster_node("b"))
    proxy = TcpProxy(redis_server.port)
    node_c = ServerProcess(tmp_path / "c", "--cluster", f"{proxy.url}/test")
    try:
        node_c.start()
        c = connect(node_c)
        a.create_state("t")
        c.sync()
        c.create_record("t", {"key": "c-0"})
        proxy.cut()
        started = time.monotonic()
        for i in range(10):
            with pytest.raises(ServerUnavailable, match="Redis unreachable"):
                c.create_record("t", {"key": f"c-x{i}"})
        assert time.monotonic() - started < 2.0, node_c.output()
        for i in range(20):  # the rest of the cluster goes on
            (a if i % 2 else b).create_record("t", {"key": f"ab-{i}"})
        assert [r["key"] for r in c.list_records("t")] == ["c-0"]  # reads go on, stale
        assert c.get_record("t", 1)["key"] == "c-0"
        time.sleep(0.3)
        figures = cluster_figures(c)
        assert figures["stale"], figures
        assert figures["read_age_ms"] >= 300, figures
        assert figures["applied"] < cluster_figures(a)["applied"]
        with pytest.raises(ServerUnavailable):
            c.sync()
        proxy.restore()
        wait_for_write(c, "t", {"key": "c-1"}, 10)
        digests = settled_digests([a, b, c])
        assert len(set(digests)) == 1, digests
        keys = {r["key"] for r in c.list_records("t")}
        assert keys == {"c-0", "c-1"} | {f"ab-{i}" for i in range(20)}, keys
        figures = cluster_figures(c)
        assert figures["stale"] is None and figures["read_age_ms"] < 1000, figures
    finally:
        node_c.stop()
        proxy.close()


# the controls run with the slow tests (.ci/run): the default suite keeps to its budget
@pytest.mark.parametrize("fault", ["", pytest.param("no-verify", marks=pytest.mark.slow)])
def test_a_node_behind_a_trim_reloads_from_the_snapshot(
    tmp_path: Path,
    redis_server: RedisServer,
    cluster_node: NodeFactory,
    connect: Connect,
    fault: str,
) -> None:
    """Node c is cut off while a writes, snapshots and trims the stream past c's position
    (c's reported position is removed, as one older than five minutes is). When the link
    returns c says so (stats ``reloaded``, ``reloads``) and reloads from the snapshot in
    Redis: it ends with a's state. The control (fault ``no-verify``: c reads on from
    its position) silently skips the trimmed entries: the digests differ."""
    a = connect(cluster_node("a", "--cluster-snapshot-seconds", "0.1"))
    proxy = TcpProxy(redis_server.port)
    env = {"STATEENGINE_CLUSTER_FAULTS": fault} if fault else {}
    node_c = ServerProcess(tmp_path / "c", "--cluster", f"{proxy.url}/test", env=env)
    try:
        node_c.start()
        c = connect(node_c)
        a.create_state("t")
        c.create_record("t", {"key": "c-0"})
        figures = cluster_figures(c)
        proxy.cut()
        for i in range(20):
            a.create_record("t", {"key": f"a-{i}"})
        with redis_server.client() as r:
            r.hdel("stateengine:test:applied", figures["node"])
            position = tuple(int(n) for n in figures["applied"].split("-"))
            deadline = time.monotonic() + 10
            while True:  # a's next snapshots trim behind themselves only
                a.create_record("t", {"key": "a-more"})
                first = r.xinfo_stream("stateengine:test:stream")["first-entry"][0]
                if tuple(int(n) for n in first.decode().split("-")) > position:
                    break
                assert time.monotonic() < deadline, "a never trimmed past c"
                time.sleep(0.05)
        proxy.restore()
        wait_for_write(c, "t", {"key": "c-1"}, 10)
        digests = settled_digests([a, c])
        figures = cluster_figures(c)
        if fault:
            assert digests[0] != digests[1]
            assert figures["reloads"] == 0
            return
        assert digests[0] == digests[1], digests
        assert figures["reloads"] == 1 and "trimmed" in figures["reloaded"], figures
        assert {r["key"] for r in c.list_records("t")} >= {f"a-{i}" for i in range(20)}
        assert "reloading from the newest snapshot" in node_c.output()
    finally:
        node_c.stop()
        proxy.close()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["", "no-verify"])
def test_a_node_whose_last_entry_the_stream_lost_reloads(
    redis_server: RedisServer, cluster_node: NodeFactory, connect: Connect, fault: str
) -> None:
    """The entry a node applied last disappears from the stream (``XDEL`` here; a
    failover to a replica that had not received it does the same). Within a second the
    node says so and reloads: its arena and digest match a node that never saw the
    entry. The control (fault ``no-verify``) keeps the lost entry's effect."""
    env = {"STATEENGINE_CLUSTER_FAULTS": fault} if fault else {}
    a = connect(cluster_node("a", env=env))
    a.create_state("t")
    a.create_record("t", {"key": "kept"})
    a.create_record("t", {"key": "lost"})
    with redis_server.client() as r:
        assert r.xdel("stateengine:test:stream", cluster_figures(a)["applied"]) == 1
    time.sleep(1.5)  # more than the check's second
    b = connect(cluster_node("b"))
    if fault:  # a stays at the lost entry: never the same state, or the same position
        with pytest.raises(AssertionError):
            digests = settled_digests([a, b])
            assert digests[0] == digests[1]
        assert cluster_figures(a)["reloads"] == 0
        return
    digests = settled_digests([a, b])
    figures = cluster_figures(a)
    assert digests[0] == digests[1], digests
    assert figures["reloads"] == 1 and "does not hold" in figures["reloaded"], figures
    assert [r["key"] for r in a.list_records("t")] == ["kept"]  # the new arena
    a.create_record("t", {"key": "after"})
    b.sync()
    assert [r["key"] for r in b.list_records("t")] == ["kept", "after"]


@pytest.mark.parametrize("fault", ["", pytest.param("no-timeout", marks=pytest.mark.slow)])
def test_a_silent_link_fails_writes_within_the_bound(
    tmp_path: Path, redis_server: RedisServer, fault: str
) -> None:
    """The proxy goes silent (packets dropped: no reset, no refusal). Every Redis call of
    a node is bounded (0.5 s to connect, 3 s for a reply), so a write fails with
    ServerUnavailable in about 3 s, well within the client's 8 s, and writes resume once
    the link is back. The control (fault ``no-timeout``: a call waits without a bound)
    hangs the node until the client gives up."""
    proxy = TcpProxy(redis_server.port)
    env = {"STATEENGINE_CLUSTER_FAULTS": fault} if fault else {}
    node = ServerProcess(tmp_path / "c", "--cluster", f"{proxy.url}/test", env=env)
    try:
        node.start()
        with node.connect(timeout=8) as c:
            c.create_state("t")
            c.create_record("t", {"key": "before"})
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(ServerUnavailable) as refused:
                c.create_record("t", {"key": "lost"})
            elapsed = time.monotonic() - started
            if fault:
                assert elapsed >= 8, elapsed  # the client's timeout, not the node's answer
                return
            assert elapsed < 4.5, (elapsed, node.output())
            assert "Redis unreachable" in str(refused.value)
            assert [r["key"] for r in c.list_records("t")] == ["before"]
            proxy.cut()
            proxy.restore()
            wait_for_write(c, "t", {"key": "after"}, 15)
            assert [r["key"] for r in c.list_records("t")] == ["before", "after"]
    finally:
        proxy.close()  # first: a node blocked on the silent link gets its reset
        node.stop()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["", "no-verify"])
def test_a_redis_that_lost_its_data_is_refused_not_followed(
    redis_server: RedisServer, cluster_node: NodeFactory, connect: Connect, fault: str
) -> None:
    """Redis comes back empty (``FLUSHALL`` here; no AOF and a restart does the same):
    neither the stream nor a snapshot of the cluster is there. The node keeps its state
    for reads and refuses writes, saying why, rather than wipe itself to match. The
    control (fault ``no-verify``) writes on into the new stream, which a new node would
    replay without the node's earlier state."""
    env = {"STATEENGINE_CLUSTER_FAULTS": fault} if fault else {}
    a = connect(cluster_node("a", env=env))
    a.create_state("t")
    a.create_record("t", {"key": "kept"})
    with redis_server.client() as r:
        r.flushall()
    time.sleep(1.5)  # more than the check's second
    if fault:
        a.create_record("t", {"key": "followed"})
        return
    with pytest.raises(ServerUnavailable, match="lost its data"):
        a.create_record("t", {"key": "refused"})
    assert [r["key"] for r in a.list_records("t")] == ["kept"]
    figures = cluster_figures(a)
    assert "holds no stream" in figures["stale"] and figures["reloads"] == 0, figures
    with redis_server.client() as r:
        assert not r.exists("stateengine:test:stream")
