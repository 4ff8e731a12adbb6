"""Nodes that reach Redis through Sentinel (``--cluster redis+sentinel://...``) follow a
failover without a restart: a master, one or two replicas and three Sentinels on free
loopback ports, ``kill -9`` of the master under load."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from cluster_harness import (
    Connect,
    RedisServer,
    SentinelServer,
    check_all_present,
    cluster_figures,
    steady_writer,
)

from stateengine.testing import ServerProcess

pytestmark = pytest.mark.slow

MASTER = "mymaster"


def _wait(condition: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def sentinels(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[list[SentinelServer]]:
    """``request.param`` replicas of *redis_server* and three Sentinels watching it, all
    attached."""
    count: int = request.param
    with redis_server.client() as r:  # a replica's first sync at once, not after 5 s
        r.config_set("repl-diskless-sync-delay", 0)
    replicas: list[RedisServer] = []
    watchers: list[SentinelServer] = []
    try:
        for i in range(count):
            (tmp_path / f"replica{i}").mkdir()
            replica = RedisServer(
                redis_server.binary,
                tmp_path / f"replica{i}",
                "--replicaof",
                "127.0.0.1",
                str(redis_server.port),
                "--repl-diskless-sync-delay",
                "0",
            )
            replica.start()
            replicas.append(replica)
        with redis_server.client() as r:
            _wait(
                lambda: (
                    r.info("replication").get("connected_slaves") == count
                    and all(
                        r.info("replication").get(f"slave{i}", {}).get("state") == "online"
                        for i in range(count)
                    )
                ),
                "the replicas never attached",
            )
        for i in range(3):
            sentinel = SentinelServer(
                redis_server.binary, tmp_path / f"sentinel{i}", MASTER, redis_server.port
            )
            sentinel.start()
            watchers.append(sentinel)

        def ready() -> bool:
            for sentinel in watchers:
                with sentinel.client() as s:
                    if len(s.sentinel_slaves(MASTER)) != count:
                        return False
                    if len(s.sentinel_sentinels(MASTER)) != 2:
                        return False
            return True

        _wait(ready, "the Sentinels never saw each other and the replicas")
        yield watchers
    finally:
        for sentinel in watchers:
            sentinel.stop()
        for replica in replicas:
            replica.stop()


@pytest.mark.parametrize("sentinels", [2, 1], indirect=True, ids=["2-replicas", "1-replica"])
def test_nodes_follow_a_sentinel_failover_without_losing_an_acknowledged_write(
    tmp_path: Path,
    redis_server: RedisServer,
    sentinels: list[SentinelServer],
    connect: Connect,
) -> None:
    """Writers on two nodes (``--cluster-replicas 1``: acknowledged once a replica holds
    it); the master is killed with kill -9. Writes fail for a while (ServerUnavailable,
    at once), then go on against the promoted replica with no node restarted; every
    acknowledged write is on both nodes and their digests agree. With one replica the
    promoted one has none left, so writes go on only once the old master, restarted,
    is made its replica by the Sentinels (8 s after they see it again, then a sync)."""
    with sentinels[0].client() as s:
        one_replica = len(s.sentinel_slaves(MASTER)) == 1
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    url = f"redis+sentinel://{hosts}/{MASTER}/test"
    args = ("--cluster", url, "--cluster-replicas", "1", "--cluster-snapshot-seconds", "0.5")
    nodes = [ServerProcess(tmp_path / name, *args) for name in "ab"]
    try:
        for node in nodes:
            node.start()
        connect(nodes[0]).create_state("t")
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            futures = [
                pool.submit(
                    steady_writer, node, "t", node.data_dir.name, 30.0 if one_replica else 12.0
                )
                for node in nodes
            ]
            with redis_server.client() as r:  # under load
                _wait(lambda: r.xlen("stateengine:test:stream") > 100, "no load")
            redis_server.kill()
            with sentinels[0].client() as s:
                _wait(
                    lambda: int(s.sentinel_get_master_addr_by_name(MASTER)[1]) != redis_server.port,
                    "no failover",
                )
            if one_replica:
                redis_server.start()  # on its AOF; the Sentinels make it a replica
            results = [future.result(timeout=90) for future in futures]
        acknowledged = [key for result in results for key in result["acknowledged"]]
        ids = {key: rid for result in results for key, rid in result["ids"].items()}
        assert all(result["failed"] > 0 for result in results), results
        assert all(result["after_failure"] > 0 for result in results), results
        assert max(result["slowest_failure"] for result in results) < 5.0, results
        print("writes refused for", [round(r["outage"], 2) for r in results], "s (each writer)")
        clients = [connect(node) for node in nodes]
        check_all_present(clients, acknowledged, ids=ids)
        for client in clients:
            figures = cluster_figures(client)
            assert figures["stale"] is None, figures
    finally:
        for node in nodes:
            node.stop()
