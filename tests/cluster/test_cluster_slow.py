"""Cluster runs under load (slow): 3 nodes × 4 worker processes claiming tasks under
leases, and ``kill -9`` of a node under load followed by its restart (and a wiped node
joining from Redis's snapshot after the stream was trimmed)."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from cluster_harness import (
    Connect,
    NodeFactory,
    RedisServer,
    check_all_present,
    claim_worker,
    cluster_figures,
    create_worker,
    settled_digests,
)

from bench.checker import DONE_ONCE
from stateengine.testing import ServerProcess
from stateengine.testing.checker import EXPIRY, check
from stateengine.testing.history import (
    Operation,
    read_history,
    reads_as_of_sync,
    record_server_commits,
)
from stateengine.testing.invariants import verify

pytestmark = pytest.mark.slow

TASKS = 150
WORKERS_PER_NODE = 4


def claims_of(history: Path) -> list[Operation]:
    """The claims that took a task, in the history recorded so far."""
    return [
        op
        for op in read_history(*history.glob("*.msgpack"))
        if op.command == "CLAIM_RECORD" and op.ok and op.result is not None
    ]


def run_claims(
    nodes: list[ServerProcess], history: Path | None = None, seconds: float = 60.0
) -> Counter[int]:
    """4 claim workers per node until every task is done (or *seconds*); how often each
    was completed. *history*: the directory every worker records its operations in."""
    where = None if history is None else str(history)
    with ProcessPoolExecutor(
        len(nodes) * WORKERS_PER_NODE, mp_context=mp.get_context("spawn")
    ) as pool:
        futures = [
            pool.submit(claim_worker, node, "tasks", 7, seconds, where)
            for node in nodes
            for _ in range(WORKERS_PER_NODE)
        ]
        done = (task for future in futures for task in future.result(timeout=seconds + 60))
        return Counter(done)


@pytest.mark.parametrize(
    ("tasks", "seconds"),
    [(TASKS, 60.0), (10_000, 300.0)],
    ids=str,
)
def test_twelve_workers_on_three_nodes_complete_every_task_once(
    tmp_path: Path, cluster_node: NodeFactory, connect: Connect, tasks: int, seconds: float
) -> None:
    """Every 7th claim is abandoned (its 5 s lease runs out on an idle stream: ticks), so
    leases expire and tasks are claimed again; each task is still completed once. The
    workers of all three nodes record their operations (node a's expiry commits too:
    every node applies the same stream, so one node's feed holds them all) and the
    merged history is linearizable, checked by the kit's checker. 10^4 tasks: ~2.3·10^4
    operations of one table, checked in seconds."""
    history = tmp_path / "history"
    history.mkdir()
    nodes = [cluster_node(name) for name in "abc"]
    clients = [connect(node) for node in nodes]
    with (
        nodes[0].connect(history=history) as setup,
        record_server_commits(nodes[0].endpoint, history / "server.msgpack") as recorder,
    ):
        setup.create_state("tasks")
        for lo in range(0, tasks, 500):
            creates = [
                {
                    "command": "CREATE_RECORD",
                    "state": "tasks",
                    "record": {"n": i, "status": "pending"},
                }
                for i in range(lo, min(lo + 500, tasks))
            ]
            assert setup.execute({"command": "BATCH", "commands": creates})["ok"]
        completed = run_claims(nodes, history, seconds)
        # each abandoned claim's lease ends by an expiry commit: wait (bounded) for the last
        abandoned = len(claims_of(history)) - sum(completed.values())
        deadline = time.monotonic() + 10
        while recorder.expiries < abandoned and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(completed) == list(range(1, tasks + 1))
    assert max(completed.values()) == 1, [t for t, k in completed.items() if k > 1]
    # sync() makes a read see every write acknowledged before the sync: one acknowledged
    # by another node while the sync ran may be missing, so the read counts from the sync
    operations = reads_as_of_sync(read_history(*history.glob("*.msgpack")))
    assert sum(1 for op in operations if op.command == EXPIRY) > 0
    verdict = verify(operations, [DONE_ONCE], time_limit=120)
    assert verdict.ok, verdict.report()
    # the control: without node a's expiry commits, a task claimed again while (in the
    # model) still under its lease has no explanation
    without = check([op for op in operations if op.command != EXPIRY], time_limit=120)
    assert not without.ok and not without.timed_out, without.report()
    digests = settled_digests(clients)
    assert len(set(digests)) == 1
    for client in clients:
        assert {r["status"] for r in client.list_records("tasks")} == {"done"}
    assert sum(cluster_figures(c)["ticks"] for c in clients) > 0  # expiries on idle stream


def test_control_three_single_servers_complete_tasks_three_times(tmp_path: Path) -> None:
    """The control: the same workers on three servers without the stream (each with the
    same tasks) complete every task three times."""
    nodes = [ServerProcess(tmp_path / name, "--store", "none") for name in "abc"]
    try:
        for node in nodes:
            node.start()
            with node.connect() as client:
                client.create_state("tasks")
                for i in range(TASKS):
                    client.create_record("tasks", {"n": i, "status": "pending"})
        completed = run_claims(nodes)
        assert set(completed.values()) == {3}
    finally:
        for node in nodes:
            node.stop()


def wait_until(condition: Callable[[], object], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("fault", ["", "no-tail"])
def test_kill_9_under_load_then_restart_catches_up(
    tmp_path: Path,
    redis_server: RedisServer,
    cluster_node: NodeFactory,
    connect: Connect,
    fault: str,
) -> None:
    """Writers on all three nodes; node c is killed with kill -9 mid-load and restarted on
    its data dir (snapshots every 0.3 s): every acknowledged write is on every node. A
    fourth node on an empty data dir then joins from Redis's snapshot and the trimmed
    stream. The control (fault ``no-tail``: the restart skips the stream after its
    snapshot) loses writes on c."""
    args = ("--cluster-snapshot-seconds", "0.3")
    nodes = [cluster_node(name, *args) for name in "abc"]
    connect(nodes[0]).create_state("t")
    with ProcessPoolExecutor(3, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(create_worker, node, "t", node.data_dir.name, 4.0) for node in nodes]
        wait_until(lambda: (nodes[2].data_dir / "cluster.snapshot").exists())  # c wrote one
        nodes[2].kill()
        nodes[2].cleanup()
        with redis_server.client() as r:  # a and b go on writing while c is down
            length = r.xlen("stateengine:test:stream")
            wait_until(lambda: r.xlen("stateengine:test:stream") > length + 50)
        env = {"STATEENGINE_CLUSTER_FAULTS": fault} if fault else {}
        restarted = ServerProcess(
            nodes[2].data_dir, "--cluster", f"{redis_server.url}/test", *args, env=env
        )
        restarted.start()
        acknowledged = [key for future in futures for key in future.result(timeout=60)]
    try:
        assert len(acknowledged) > 100
        clients = [connect(node) for node in (nodes[0], nodes[1], restarted)]
        if fault:
            with pytest.raises(AssertionError):
                check_all_present(clients, acknowledged)
            return
        check_all_present(clients, acknowledged)
        with redis_server.client() as r:
            info = r.xinfo_stream("stateengine:test:stream")
        assert info["length"] < info["entries-added"]  # trimmed behind the snapshots
        joined = ServerProcess(tmp_path / "d", "--cluster", f"{redis_server.url}/test", *args)
        joined.start()
        try:
            check_all_present([*clients, connect(joined)], acknowledged)
        finally:
            joined.stop()
    finally:
        restarted.stop()
