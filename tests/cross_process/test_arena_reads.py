"""Workers read from the shared-memory arena: same answers as the server, read-your-writes,
snapshots, and the last snapshot stays readable when the writer dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stateengine.errors import RecordNotFound, ServerUnavailable, StateNotFound
from stateengine.testing import ServerProcess


def test_reads_come_from_the_arena_and_match_the_server(server: ServerProcess) -> None:
    with server.connect() as client:
        client.set_state("t", [{"g": i % 3, "n": i, "tag": {"k": [i]}} for i in range(50)])
        assert client._reader() is not None  # attached: the reads below use the arena
        for where, order_by, offset, limit in [
            (None, None, None, None),
            ({"g": 1}, "-n", 2, 5),
            ({"g": 2}, ["g", "-n"], None, 3),
            (None, "tag", 45, None),
            ({"n": {"$gte": 10, "$lt": 20}, "g": {"$ne": 0}}, "-n", None, None),
            ({"g": {"$in": [0, 2]}, "n": {"$nin": [0, 3]}}, None, 1, 4),
            ({"tag": {"$eq": {"k": [4]}}, "n": {"$gt": "a"}}, None, None, None),
        ]:
            via_arena = client.list_records("t", where, order_by, offset, limit)
            request = {
                "command": "LIST_RECORDS",
                "state": "t",
                "where": where,
                "order_by": order_by,
                "offset": offset,
                "limit": limit,
            }
            request = {k: v for k, v in request.items() if v is not None}
            assert via_arena == client.execute(request)["result"]
        assert (
            client.get_record("t", 7)
            == client.execute({"command": "GET_RECORD", "state": "t", "id": 7})["result"]
        )
        assert (
            client.get_state_info("t")
            == client.execute({"command": "GET_STATE_INFO", "state": "t"})["result"]
        )
        assert client.list_states() == ["t"]
        # Misses and bad arguments get the server's own errors.
        with pytest.raises(RecordNotFound):
            client.get_record("t", 999)
        with pytest.raises(StateNotFound):
            client.list_records("nope")


def test_read_your_writes(server: ServerProcess) -> None:
    with server.connect() as client:
        client.create_record("t", {"n": 0})
        for i in range(1, 300):
            client.patch_record("t", 1, {"n": i})
            assert client.get_record("t", 1)["n"] == i


def test_snapshot_sees_a_batch_all_or_nothing(server: ServerProcess) -> None:
    with server.connect() as client, server.connect() as writer:
        client.set_state("a", [{"v": 0}])
        client.set_state("b", [{"v": 0}])
        for i in range(1, 50):
            writer.batch(
                [
                    {"command": "PATCH_RECORD", "state": "a", "id": 1, "fields": {"v": i}},
                    {"command": "PATCH_RECORD", "state": "b", "id": 1, "fields": {"v": i}},
                ]
            )
            with client.snapshot() as snap:
                a = snap.get_record("a", 1)
                b = snap.get_record("b", 1)
                assert a["v"] == b["v"] and a["_version"] == b["_version"] <= snap.version


def test_writer_killed_last_snapshot_readable_writes_unavailable(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    arena = str(server.info["arena"])
    try:
        with server.connect(timeout=1.0) as client:
            client.create_record("t", {"n": 42})
            server.kill()
            assert client.get_record("t", 1)["n"] == 42  # from the arena, no server
            assert not client.server_alive()
            with pytest.raises(ServerUnavailable):
                client.patch_record("t", 1, {"n": 43})
    finally:
        server.kill()
        server.cleanup()
        assert not os.path.exists(arena)


def test_a_reading_client_moves_to_a_restarted_servers_arena(tmp_path: Path) -> None:
    """No write of its own (so no read-your-writes trigger): the once-a-second re-check."""
    first = ServerProcess(tmp_path / "data", "--store", "none").start()
    try:
        with first.connect(timeout=2.0) as client:
            client.create_record("t", {"n": 1})
            assert client.get_record("t", 1)["n"] == 1
            old = client._view.reader if client._view is not None else None
            assert old is not None
            first.stop()
            with ServerProcess(tmp_path / "data", "--store", "none") as second:
                with second.connect() as other:
                    other.create_record("t", {"n": 2})
                time.sleep(1.1)  # the view's deadline passes: server.json is read again
                assert client.get_record("t", 1)["n"] == 2
                assert client._view is not None and client._view.reader is not old
    finally:
        first.kill()
        first.cleanup()


def test_stalled_writer_does_not_block_reads(server: ServerProcess) -> None:
    with server.connect(timeout=0.5) as client:
        client.create_record("t", {"n": 1})
        os.kill(server.pid, signal.SIGSTOP)
        try:
            for _ in range(1000):
                assert client.get_record("t", 1)["n"] == 1
            with pytest.raises(ServerUnavailable):
                client.increment("t", 1, "n")
        finally:
            os.kill(server.pid, signal.SIGCONT)


def test_clean_stop_unlinks_the_arena(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    arena = str(server.info["arena"])
    assert os.path.exists(arena)
    assert server.stop() == 0
    assert not os.path.exists(arena)
    assert not any(
        p.startswith(os.path.basename(arena)) for p in os.listdir(os.path.dirname(arena))
    )


def test_an_indexed_query_on_a_large_table_goes_to_the_writer(server: ServerProcess) -> None:
    """Past ARENA_SCAN_LIMIT records, a list an index fits is the writer's (an arena scan
    decodes every record); the answer equals the arena snapshot's scan."""
    from stateengine.client.client import ARENA_SCAN_LIMIT

    with server.connect() as client:
        n = ARENA_SCAN_LIMIT * 3
        client.create_state("big", schema={"k": "integer"}, indexes=["k"])
        client.set_state("big", [{"k": i % 7} for i in range(n)])
        client.create_state("small", schema={"k": "integer"}, indexes=["k"])
        client.set_state("small", [{"k": i % 7} for i in range(ARENA_SCAN_LIMIT)])
        for table, to_writer in (("big", True), ("small", False), ("big", False)):
            where: dict[str, Any] = {"k": 3} if to_writer or table == "small" else {}
            before = client.stats()["requests"]
            got = client.list_records(table, where, order_by="-id", limit=20)
            asked = client.stats()["requests"] - before - 1  # the second stats() counts
            assert asked == (1 if to_writer else 0), (table, where)
            with client.snapshot() as snap:
                assert got == snap.list_records(table, where, order_by="-id", limit=20)


def test_inlined_get_record_matches_the_view(server: ServerProcess) -> None:
    """``Client.get_record`` inlines ``view.reader_for`` and ``view.arena_get`` for speed:
    for every kind of id (and with a write the arena must catch up with), it answers from
    the arena exactly when the view's functions do, and otherwise asks the server."""
    from stateengine.client.view import arena_get, catch_up, reader_for
    from stateengine.errors import StateEngineError

    with server.connect() as client:
        client.set_state("t", [{"id": 1, "n": 1}, {"id": "k", "n": 2}, {"id": 5, "n": 3}])
        sent: list[str] = []
        call = client._call

        def counting(request: dict[str, Any]) -> Any:
            sent.append(str(request["command"]))
            return call(request)

        client._call = counting  # type: ignore[method-assign]
        cases: list[tuple[str, Any]] = [
            ("t", 1),
            ("t", "k"),
            ("t", 999),
            ("nope", 1),
            ("t", 1.0),
            ("t", True),
            ("t", [1]),
        ]
        for mode in ("read", "write", "write+recheck"):
            for state, id in cases:
                if mode != "read":  # seen_seq ahead of the reader's index
                    client.patch_record("t", 5, {"n": len(sent)})
                if mode == "write+recheck":  # the view's re-check is due: catch_up
                    client._view.deadline = 0.0  # type: ignore[union-attr]
                view = client._view
                assert view is not None
                reader = reader_for(view, client.seen_seq) or catch_up(
                    view, client.seen_seq, client.timeout
                )
                expected = arena_get(reader, state, id) if reader is not None else None
                sent.clear()
                try:
                    got: Any = client.get_record(state, id)
                except StateEngineError as exc:
                    got = type(exc)
                if expected is not None:
                    assert (got, sent) == (expected, []), (state, id)
                else:
                    assert sent == ["GET_RECORD"], (state, id)
                    reply = client.execute({"command": "GET_RECORD", "state": state, "id": id})
                    want = reply["result"] if reply["ok"] else reply["error"]["type"]
                    assert (got if reply["ok"] else got.__name__) == want, (state, id)
