"""A small user program, as the README writes one, for ``mypy --strict`` in ``.ci/lint``.

Never run: it only has to type-check against the installed package (issue 15: the
asyncio client's ``await db.create_record(...)`` was ``Incompatible types in "await"``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import stateengine
from stateengine.client.aio import AsyncClient, connect_async, install_uvloop


def sync_worker() -> int:
    with stateengine.connect() as db:
        rec: dict[str, Any] = db.create_record("leads", {"name": "ada", "status": "new"})
        job = db.claim_record(
            "tasks", where={"status": "pending"}, fields={"status": "running"}, wait=5
        )
        with db.pipeline() as pipe:
            for _ in range(3):
                pipe.increment("counters", "rows", "n")
        n: int | float = db.increment("counters", "rows", "n")
        names: list[str] = db.list_states()
        return int(rec["id"]) + (0 if job is None else 1) + int(n) + len(names)


async def async_worker() -> int:
    async with await connect_async() as db:
        rec: dict[str, Any] = await db.create_record("leads", {"name": "ada", "status": "new"})
        job = await db.claim_record(
            "tasks",
            where={"status": "pending"},
            fields={"status": "running"},
            lease_seconds=30,
            wait=5,
        )
        if job is not None:
            await db.patch_record("tasks", job["id"], {"status": "done"})
        rows: list[dict[str, Any]] = await db.list_records("leads")
        info: dict[str, Any] = await db.get_state_info("leads")
        one: dict[str, Any] = await db.get_record("leads", rec["id"])
        schema: list[str] = await db.get_schema("leads")
        n: int | float = await db.increment("counters", "rows", "n")
        many = await asyncio.gather(db.get_record("leads", 1), db.list_states())
        return len(rows) + len(info) + len(one) + len(schema) + int(n) + len(many)


async def with_client(db: AsyncClient) -> None:
    await db.create_state("leads", schema={"name": "str"})
    print(await db.call("STATS"))


if __name__ == "__main__":
    install_uvloop()
    print(sync_worker(), asyncio.run(async_worker()))
