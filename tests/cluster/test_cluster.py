"""Cluster nodes (``serve --cluster``) on a real ``redis-server`` started by the test:
the same state on every node, reads after ``sync()``, Redis going away.

The heavy runs (workers on three nodes, ``kill -9`` under load) are in
``test_cluster_slow.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Connect, NodeFactory, RedisServer, cluster_figures, settled_digests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stateengine.client.aio import connect_async
from stateengine.client.client import Client
from stateengine.errors import BadRequest, ServerUnavailable, StateEngineError
from stateengine.testing import ServerProcess

STREAM = "stateengine:test:stream"


def test_sync_sees_a_write_acknowledged_by_another_node(
    cluster_node: NodeFactory, connect: Connect
) -> None:
    """Node B reads the stream only when asked here (fault ``no-idle-read``): its arena
    misses A's write (the control) until ``b.sync()``, after which it has it."""
    a = connect(cluster_node("a"))
    a.create_state("t")
    node_b = cluster_node("b", env={"STATEENGINE_CLUSTER_FAULTS": "no-idle-read"})
    b = connect(node_b)
    assert b.list_states() == ["t"]  # caught up at start
    a.create_record("t", {"x": 1})
    assert b.list_records("t") == []  # the control: B has not read the stream yet
    applied = b.sync()
    assert applied is not None and "applied" in applied
    assert b.list_records("t") == [{"id": 1, "x": 1, "_version": 2}]
    assert cluster_figures(b)["digest"] == cluster_figures(a)["digest"]

    async def from_asyncio() -> list[Any]:
        async with await connect_async(node_b.endpoint, node_b.data_dir) as client:
            a.create_record("t", {"x": 2})
            assert await client.sync() is not None
            return await client.list_records("t")

    assert [r["x"] for r in asyncio.run(from_asyncio())] == [1, 2]


def test_bad_requests_are_refused_before_the_stream(
    cluster_node: NodeFactory, connect: Connect, redis_server: RedisServer
) -> None:
    a = connect(cluster_node("a"))
    a.create_state("t")
    with redis_server.client() as r:
        length = r.xlen(STREAM)
        with pytest.raises(BadRequest):
            a.call("CREATE_RECORD", state="t", record={"x": 1}, colour="red")
        with pytest.raises(BadRequest):
            a.claim_record("t", {}, {}, wait=-1)
        assert r.xlen(STREAM) == length
        a.create_record("t", {"x": 1})  # the control: a good write is one entry
        assert r.xlen(STREAM) == length + 1


def test_redis_stopped_writes_fail_at_once_reads_go_on(
    cluster_node: NodeFactory, connect: Connect, redis_server: RedisServer
) -> None:
    node = cluster_node("a")
    a = connect(node)
    a.create_state("t")
    a.create_record("t", {"x": 1})
    redis_server.stop()
    started = time.monotonic()
    for _ in range(20):  # the first asks Redis; the next ones, within 0.5 s, do not
        with pytest.raises(ServerUnavailable, match="Redis unreachable"):
            a.create_record("t", {"x": 2})
    assert time.monotonic() - started < 1.0  # at once, not after the client's timeout
    assert a.get_record("t", 1)["x"] == 1  # arena reads go on
    assert a.list_records("t") == [{"id": 1, "x": 1, "_version": 2}]
    assert cluster_figures(a)["stale"]  # STATS is answered locally and says so
    with pytest.raises(ServerUnavailable):
        a.sync()
    redis_server.start()  # the same port and AOF: the acknowledged write is still there
    deadline = time.monotonic() + 10
    while True:
        try:
            a.create_record("t", {"x": 3})
            break
        except ServerUnavailable:
            assert time.monotonic() < deadline, node.output()
            time.sleep(0.05)
    assert [r["x"] for r in a.list_records("t")] == [1, 3]
    assert cluster_figures(a)["stale"] is None


# --- the same state on every node --------------------------------------------------------

_LEASES = st.sampled_from([None, 0.05, 0.2])
_OPS = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 9), st.sampled_from([None, 0.05, 0.3])),
    st.tuples(st.just("patch"), st.integers(1, 6), st.integers(0, 9)),
    st.tuples(st.just("claim"), st.integers(0, 9), _LEASES),
    st.tuples(st.just("claimwait"), st.integers(0, 9), st.sampled_from([0.0, 0.1])),
    st.tuples(st.just("delete"), st.integers(1, 6), st.none()),
    st.tuples(st.just("increment"), st.integers(1, 6), st.none()),
    st.tuples(st.just("expire"), st.integers(1, 6), st.sampled_from([0.05, 0.2])),
    st.tuples(st.just("set"), st.integers(1, 6), st.integers(0, 9)),
    st.tuples(st.just("batch"), st.integers(0, 9), st.integers(1, 6)),
    st.tuples(st.just("dead"), st.integers(0, 9), st.none()),  # dead-lettered at its expiry
    st.tuples(st.just("index"), st.none(), st.none()),
    st.tuples(st.just("setstate"), st.integers(0, 3), st.none()),
)


def _run(client: Client, table: str, op: tuple[str, Any, Any]) -> None:
    """One command; its error (the same on every node) is part of the run."""
    kind, a, b = op
    try:
        if kind == "create":
            client.create_record(table, {"x": a, "n": 0}, ttl=b)
        elif kind == "patch":
            client.patch_record(table, a, {"x": b})
        elif kind == "claim":
            client.claim_record(table, {"x": {"$gte": a}}, {"x": -1}, lease_seconds=b)
        elif kind == "claimwait":  # parked, appended again when its table is written
            client.claim_record(table, {"x": {"$gte": a}}, {"x": -2}, lease_seconds=0.05, wait=b)
        elif kind == "delete":
            client.delete_record(table, a)
        elif kind == "increment":
            client.increment(table, a, "n")
        elif kind == "expire":
            client.expire_record(table, a, ttl=b)
        elif kind == "set":
            client.set_record(table, a, {"x": b, "n": 0})
        elif kind == "batch":  # one entry, all or nothing on every node
            client.batch(
                [
                    {"command": "CREATE_RECORD", "state": table, "record": {"x": a, "n": 0}},
                    {"command": "PATCH_RECORD", "state": table, "id": b, "fields": {"x": a}},
                ]
            )
        elif kind == "dead":
            client.claim_record(
                table,
                {"x": {"$gte": a}},
                {"n": {"$inc": 1}},
                lease_seconds=0.05,
                max_attempts=1,
                dead_letter={"x": -9},
            )
        elif kind == "index":
            client.alter_state(table, add_indexes=["x"])
        else:
            client.set_state(table, [{"id": i + 1, "x": i, "n": 0} for i in range(a)])
    except StateEngineError:
        pass


def _three(cluster_node: NodeFactory, connect: Connect, *args: str, **kwargs: Any) -> list[Client]:
    nodes: list[ServerProcess] = [cluster_node(name, *args, **kwargs) for name in "abc"]
    return [connect(node) for node in nodes]


def _check_run(clients: list[Client], table: str, ops: list[tuple[str, Any, Any]]) -> None:
    clients[0].create_state(table)
    for i, op in enumerate(ops):
        _run(clients[i % 3], table, op)
    digests = settled_digests(clients)
    assert len(set(digests)) == 1, digests
    # Every deadline passes; idle nodes append ticks that commit the expiries.
    deadline = time.monotonic() + 10
    while any(cluster_figures(c)["next_deadline"] is not None for c in clients):
        assert time.monotonic() < deadline, [cluster_figures(c) for c in clients]
        time.sleep(0.02)
    digests = settled_digests(clients)
    assert len(set(digests)) == 1, digests


CONTROL_OPS: list[tuple[str, Any, Any]] = [
    ("create", 5, 0.3),
    ("create", 7, None),
    ("claim", 0, 0.2),
    ("patch", 2, 3),
]


def test_three_nodes_compute_the_same_state(cluster_node: NodeFactory, connect: Connect) -> None:
    """Hypothesis draws commands (TTLs, leases, expiries, dead letters, blocking claims,
    batches, indexes, whole-table loads included) sent round-robin to three nodes; their
    digests agree at one stream position, and again once every deadline has passed
    (committed by ticks on an idle stream)."""
    clients = _three(cluster_node, connect)
    counter = iter(range(10_000))

    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=st.lists(_OPS, min_size=1, max_size=12))
    @example(ops=CONTROL_OPS)
    def run(ops: list[tuple[str, Any, Any]]) -> None:
        _check_run(clients, f"t{next(counter)}", ops)

    run()


def test_control_the_nodes_wall_clock_makes_them_disagree(
    cluster_node: NodeFactory, connect: Connect
) -> None:
    """The control: with each node's engine reading its own clock instead of the entry's
    (fault ``wall-clock``), the same entries give different states."""
    clients = _three(cluster_node, connect, env={"STATEENGINE_CLUSTER_FAULTS": "wall-clock"})
    with pytest.raises(AssertionError, match="assert"):
        _check_run(clients, "t", CONTROL_OPS)


def test_a_blocking_claim_on_one_node_takes_a_record_created_on_another(
    cluster_node: NodeFactory, connect: Connect
) -> None:
    """B parks the claim (it found nothing); A's create is an entry that writes the table,
    so B appends the claim again and answers it with the record, well before the wait."""
    node_a, node_b = cluster_node("a"), cluster_node("b")
    a, b = connect(node_a), connect(node_b)
    a.create_state("jobs")
    a.create_record("jobs", {"s": "done"})  # the field exists; nothing to claim yet
    b.sync()
    result: list[Any] = []
    with connect(node_b) as waiter_client:
        thread = threading.Thread(
            target=lambda: result.append(
                waiter_client.claim_record("jobs", {"s": "new"}, {"s": "taken"}, wait=20)
            )
        )
        started = time.monotonic()
        thread.start()
        deadline = time.monotonic() + 10
        while cluster_figures(b)["parked_claims"] != 1:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        a.create_record("jobs", {"s": "new"})
        thread.join(15)
    assert result and result[0]["s"] == "taken"
    assert time.monotonic() - started < 10
    assert cluster_figures(b)["parked_claims"] == 0


def test_cluster_replicas_acknowledge_only_what_a_replica_holds(
    tmp_path: Path, cluster_node: NodeFactory, connect: Connect, redis_server: RedisServer
) -> None:
    """``--cluster-replicas 1``: with a replica attached a write is acknowledged; with the
    replica stopped (the control) ``WAIT`` times out and the write is ServerUnavailable."""
    (tmp_path / "replica").mkdir()
    with redis_server.client() as r:  # the replica's first sync at once, not after 5 s
        r.config_set("repl-diskless-sync-delay", 0)
    replica = RedisServer(
        redis_server.binary,
        tmp_path / "replica",
        "--replicaof",
        "127.0.0.1",
        str(redis_server.port),
    )
    replica.start()
    try:
        with redis_server.client() as r:
            deadline = time.monotonic() + 10
            while r.info("replication").get("slave0", {}).get("state") != "online":
                assert time.monotonic() < deadline, "the replica never attached"
                time.sleep(0.02)
        a = connect(cluster_node("a", "--cluster-replicas", "1"))
        a.create_state("t")
        a.create_record("t", {"x": 1})
        with replica.client() as rr:
            assert rr.xlen(STREAM) >= 2  # on the replica before the reply
    finally:
        replica.stop()
    with pytest.raises(ServerUnavailable, match="replicas"):
        a.create_record("t", {"x": 2})


def test_big_writes_in_flight_stay_under_the_entry_size(
    cluster_node: NodeFactory, connect: Connect, redis_server: RedisServer
) -> None:
    """Three 3 MB writes in flight: no entry holds more than 4 MiB of requests unless it
    holds one request alone (a pass that drained two of them splits them), and each
    write is answered, in order."""
    a = connect(cluster_node("a"))
    a.create_state("t")
    with redis_server.client() as r:
        last = r.xinfo_stream(STREAM)["last-generated-id"]
        big = "x" * (3 * 1024 * 1024)
        requests = [
            {"command": "CREATE_RECORD", "state": "t", "record": {"k": i, "blob": big}}
            for i in range(3)
        ]
        results = a.send_many(requests)
        assert [res["k"] for res in results] == [0, 1, 2]
        entries = r.xrange(STREAM, min=f"({last.decode()}")
    sizes = [len(fields[b"r"]) for _, fields in entries if b"r" in fields]
    assert len(sizes) == 3 and all(size < 4 * 1024 * 1024 for size in sizes), sizes
    assert [rec["k"] for rec in a.list_records("t")] == [0, 1, 2]


def test_a_data_dir_that_served_another_cluster_starts_from_this_one(
    tmp_path: Path, cluster_node: NodeFactory, connect: Connect, redis_server: RedisServer
) -> None:
    """A node's own snapshot is of its cluster: restarted on the same data dir as a node
    of another cluster, it starts from that cluster's state, not the snapshot."""
    node = cluster_node("a", "--cluster-snapshot-seconds", "0.05")
    a = connect(node)
    a.create_state("old")
    deadline = time.monotonic() + 10
    while cluster_figures(a)["snapshot"] == "0-0":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    a.close()
    node.stop()
    other = ServerProcess(node.data_dir, "--cluster", f"{redis_server.url}/other")
    with other:
        with other.connect() as b:
            assert b.list_states() == []
    again = ServerProcess(node.data_dir, "--cluster", f"{redis_server.url}/test")
    with again:  # the control: its own cluster's snapshot (and stream) still load
        with again.connect() as c:
            assert c.list_states() == ["old"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1/x", "expected redis://HOST:PORT/NAME"),
        ("redis://127.0.0.1:1", "expected redis://HOST:PORT/NAME"),
        ("redis://127.0.0.1:1/x", "cannot reach Redis"),
        ("redis+sentinel://127.0.0.1:1/x", "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER"),
        ("redis+sentinel://127.0.0.1:1,127.0.0.1:2/m/x", "cannot reach Redis"),
    ],
)
def test_serve_cluster_refuses_a_bad_url_or_no_redis(
    tmp_path: Path, url: str, message: str
) -> None:
    """Exit 1 with one line saying why, before anything serves (port 1: nothing listens)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stateengine",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--cluster",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
