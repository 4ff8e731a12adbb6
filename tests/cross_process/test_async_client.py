"""The asyncio client on uvloop: 100 concurrent tasks, arena reads, errors, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from stateengine.client.aio import AsyncClient, install_uvloop
from stateengine.errors import BadRequest, RecordNotFound, ServerUnavailable
from stateengine.testing import ServerProcess


def run(coro: object) -> object:
    assert install_uvloop(), "uvloop is a declared dependency"
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    finally:
        asyncio.set_event_loop_policy(None)


def test_100_concurrent_tasks_on_uvloop(server: ServerProcess) -> None:
    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with AsyncClient(server.endpoint, server.data_dir) as db:
            await db.create_record("c", {"id": "n", "v": 0})

            async def task(i: int) -> None:
                for _ in range(10):
                    await db.increment("c", "n", "v")
                rec = await db.create_record("t", {"i": i})
                assert (await db.get_record("t", rec["id"]))["i"] == i  # read-your-writes

            await asyncio.wait_for(asyncio.gather(*(task(i) for i in range(100))), 60)
            assert (await db.get_record("c", "n"))["v"] == 1000
            assert len(await db.list_records("t")) == 100
            assert await db.list_states() == ["c", "t"]
            assert db._view is not None and db._view.reader is not None  # reads used the arena
            with pytest.raises(RecordNotFound):
                await db.get_record("t", 10_000)

    run(main())


def test_cancelled_call_does_not_break_the_client(server: ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(server.endpoint, server.data_dir, timeout=5) as db:
            calls = [asyncio.ensure_future(db.create_record("t", {"i": i})) for i in range(50)]
            calls[10].cancel()
            done = await asyncio.gather(*calls, return_exceptions=True)
            assert isinstance(done[10], asyncio.CancelledError)
            assert sum(isinstance(r, dict) for r in done) == 49
            assert (await db.get_state_info("t"))["size"] in (49, 50)  # sent, maybe applied

    run(main())


def test_unencodable_request_is_a_bad_request_and_nothing_is_left_pending(
    server: ServerProcess,
) -> None:
    """An int past 64 bits fails before anything is sent (both clients), naming the field."""
    with server.connect() as client, pytest.raises(BadRequest, match=r"record\.big"):
        client.create_record("t", {"big": 2**70})

    async def main() -> None:
        async with AsyncClient(server.endpoint, server.data_dir, timeout=5) as db:
            with pytest.raises(BadRequest, match=r"record\.big"):
                await db.create_record("t", {"big": 2**70})
            assert db._pending == {}
            assert (await db.create_record("t", {"big": 1}))["big"] == 1

    run(main())


def test_reads_after_close_fail_like_writes(server: ServerProcess) -> None:
    """A closed client attaches no new arena reader behind the caller's back."""

    async def main() -> None:
        db = AsyncClient(server.endpoint, server.data_dir, timeout=5)
        await db.create_record("t", {"id": 1, "x": 1})
        assert (await db.get_record("t", 1))["x"] == 1
        await db.close()
        with pytest.raises(ServerUnavailable, match="closed"):
            await db.get_record("t", 1)
        with pytest.raises(ServerUnavailable, match="closed"):
            await db.list_records("t")

    run(main())


def test_timeout_when_the_server_is_gone(tmp_path: object) -> None:
    server = ServerProcess(tmp_path / "data").start()  # type: ignore[operator]
    server.kill()
    server.cleanup()

    async def main() -> None:
        async with AsyncClient(server.endpoint, timeout=0.5) as db:
            with pytest.raises(ServerUnavailable):
                await db.create_state("x")

    run(main())
