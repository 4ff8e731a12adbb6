"""The client's history option: what it records, across fork and pickle; off costs nothing."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import pickle
from pathlib import Path

import pytest

from stateengine.client.client import Client
from stateengine.errors import RecordNotFound, ServerUnavailable
from stateengine.testing import ServerProcess
from stateengine.testing.history import iter_entries, read_history


def test_every_kind_of_call_is_one_operation(
    stateengine_server: ServerProcess, stateengine_history: Path
) -> None:
    with stateengine_server.connect(history=stateengine_history) as db:
        db.create_state("t", schema={"n": "integer"})
        db.create_record("t", {"n": 1})
        db.get_record("t", 1)  # from the arena
        with pytest.raises(RecordNotFound):
            db.get_record("t", 9)  # an arena miss asks the server: still one operation
        with db.pipeline() as pipe:
            pipe.increment("t", 1, "n")
            pipe.get_record("t", 9)
        db.batch([{"command": "INCREMENT", "state": "t", "id": 1, "field": "n"}])
        with db.snapshot() as snap:
            snap.get_record("t", 1)
            snap.list_records("t")
        db.execute({"command": "GET_STATE_INFO", "state": "t"})
    ops = read_history(*stateengine_history.glob("*.msgpack"))
    assert [op.command for op in ops] == [
        "CREATE_STATE",
        "CREATE_RECORD",
        "GET_RECORD",
        "GET_RECORD",
        "INCREMENT",
        "GET_RECORD",
        "BATCH",
        "SNAPSHOT",
        "GET_STATE_INFO",
    ]
    assert len({op.process for op in ops}) == 1
    assert all(op.known and op.complete is not None and op.invoke < op.complete for op in ops)
    create, _, get, miss, inc, pipe_miss, batch, snapshot, _ = ops
    assert create.args == {"state": "t", "schema": {"n": "integer"}} and create.seq == 1
    assert get.ok and get.result == {"id": 1, "n": 1, "_version": 2}
    assert (miss.ok, miss.error) == (False, "RecordNotFound")
    assert (inc.result, inc.seq, pipe_miss.error) == (2, 3, "RecordNotFound")
    assert pipe_miss.invoke < inc.complete  # the pipeline's requests were in flight together
    assert batch.result == [3]
    assert snapshot.args == {
        "reads": [
            {"command": "GET_RECORD", "state": "t", "id": 1},
            {"command": "LIST_RECORDS", "state": "t"},
        ]
    }
    record = {"id": 1, "n": 3, "_version": 4}
    assert snapshot.result == [{"ok": True, "result": record}, {"ok": True, "result": [record]}]
    assert snapshot.seq == 4


def test_a_timeout_is_an_unknown_outcome(stateengine_history: Path, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--fsync", "no").start()
    try:
        db = Client(server.endpoint, history=stateengine_history, timeout=0.5)
        db.create_record("t", {"n": 1})
        server.kill()
        with pytest.raises(ServerUnavailable):
            db.increment("t", 1, "n")
        db.close()
    finally:
        server.stop()
        server.cleanup()
    entries = [e for f in stateengine_history.glob("*") for e in iter_entries(f)]
    assert entries[-1]["error"] == "ServerUnavailable"
    ops = read_history(*stateengine_history.glob("*.msgpack"))
    assert [op.known for op in ops] == [True, False]


def _child(db: Client) -> None:
    db.get_record("t", 1)


def test_fork_and_pickle_give_each_process_its_own_file(
    stateengine_server: ServerProcess, stateengine_history: Path
) -> None:
    with stateengine_server.connect(history=stateengine_history) as db:
        db.create_record("t", {"n": 1})
        for ctx in (mp.get_context("fork"), mp.get_context("spawn")):
            p = ctx.Process(target=_child, args=(db,))
            p.start()
            p.join(30)
            assert p.exitcode == 0
        db.get_record("t", 1)
        assert pickle.loads(pickle.dumps(db))._history.spec == stateengine_history
    files = sorted(f for f in stateengine_history.glob("*.msgpack") if f.name != "server.msgpack")
    assert len(files) == 3
    ops = read_history(*files)
    assert sorted(len([o for o in ops if o.process == p]) for p in {o.process for o in ops}) == [
        1,
        1,
        2,
    ]


def test_off_by_default(stateengine_client: Client, tmp_path: Path) -> None:
    assert stateengine_client._history is None
    stateengine_client.create_record("t", {"n": 1})
    assert list(tmp_path.glob("**/*.msgpack")) == []


def test_async_client_records_one_process_per_task(
    stateengine_server: ServerProcess, stateengine_history: Path
) -> None:
    from stateengine.client.aio import AsyncClient
    from stateengine.testing.checker import check

    async def main() -> None:
        async with AsyncClient(
            stateengine_server.endpoint, stateengine_server.data_dir, history=stateengine_history
        ) as db:
            await db.create_record("t", {"id": "c", "n": 0})

            async def bump() -> None:
                for _ in range(5):
                    await db.increment("t", "c", "n")
                    await db.get_record("t", "c")  # from the arena

            await asyncio.gather(*(bump() for _ in range(10)))

    asyncio.run(main())
    files = [f for f in stateengine_history.glob("*.msgpack") if f.name != "server.msgpack"]
    assert len(files) == 1
    ops = read_history(*files)
    assert len(ops) == 1 + 10 * 10
    assert len({op.process for op in ops}) == 1 + 10  # the main task and each bump task
    assert max(op.result for op in ops if op.command == "INCREMENT") == 50
    result = check(ops)
    assert result.ok, result.report()
