"""Worker processes of the suite, started with the ``spawn`` context.

Each worker connects once, answers ``("ready", index)`` and then runs commands from its
queue until it gets ``None``; a failure is reported as ``("error", index, text)`` so the
parent raises instead of waiting. Every queue wait is bounded (``CHILD_IDLE`` s), so a
worker whose parent died exits on its own.

Kept apart from the row builders so that a spawned child imports only what it needs.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

import msgpack

try:
    from bench.records import record
except ImportError:  # imported as a script's sibling (bench/ is sys.path[0])
    from records import record  # type: ignore[no-redef]

CHILD_IDLE = 1800.0  # s a worker waits for its next command (10^6-record fills take minutes)
TABLE = "bench"


def lmdb_fill(path: str, n: int) -> None:
    """Write *n* records into a fresh LMDB environment, in this (child) process."""
    import lmdb

    env = lmdb.open(path, map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%09d" % (i + 1), msgpack.packb(record(i)))
    env.sync(True)
    env.close()


def _until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def load_worker(role: str, index: int, conf: dict[str, Any], cmds: Any, out: Any) -> None:
    """A reader, writer or spin process for the readers-under-write-load rows.

    Command ``(start, end)`` in ``time.monotonic()`` (one clock for every process):
    work in that window, answer ``("done", index, count)``.

    * ``reader``: ``ArenaReader.get`` of ids 1..n in a cycle (counts gets);
    * ``writer``: ``client.patch_record`` paced at ``conf["rate"]`` writes/s (a steady
      load, not a flood that would take a core from the readers), counts writes;
    * ``spin``: a pure-Python loop of the same shape as the reader's: the machine's own
      scaling with this many processes, the ceiling the readers can reach.
    """
    try:
        n = int(conf["n"])
        reader: Any = None
        client: Any = None
        if role == "reader":
            from stateengine.shm import ArenaReader

            reader = ArenaReader.attach(conf["arena"])
        elif role == "writer":
            from stateengine.client.client import Client

            client = Client(conf["endpoint"], timeout=10)
        out.put(("ready", index))
        while True:
            cmd = cmds.get(timeout=CHILD_IDLE)
            if cmd is None:
                break
            start, end = cmd
            if reader is not None:
                # Catch up, untimed, with what other rows wrote while this reader idled
                # (possibly a full index rebuild): the window times the steady state.
                reader.get(TABLE, 1)
            _until(start)
            count = 0
            if role == "reader":
                get = reader.get
                k = 0
                while time.monotonic() < end:
                    for _ in range(256):
                        get(TABLE, k % n + 1)
                        k += 1
                    count += 256
            elif role == "writer":
                rate = float(conf["rate"])
                patch = client.patch_record
                t0 = time.monotonic()
                while True:
                    now = time.monotonic()
                    if now >= end:
                        break
                    due = t0 + count / rate
                    if now < due:
                        time.sleep(min(due - now, end - now))
                        continue
                    patch(TABLE, count % n + 1, {"tries": count})
                    count += 1
            else:
                k = 0
                d = {i: i for i in range(1, 1001)}
                get = d.get
                while time.monotonic() < end:
                    for _ in range(256):
                        get(k % 1000 + 1)
                        k += 1
                    count += 256
            out.put(("done", index, count))
        if reader is not None:
            reader.close()
        if client is not None:
            client.close()
    except Exception:
        out.put(("error", index, traceback.format_exc()))


def claim_worker(index: int, conf: dict[str, Any], cmds: Any, out: Any) -> None:
    """A task-claiming worker: on ``(system, name, start, order)`` claim tasks until none
    is left; *order* is ``"fifo"`` (insertion order) or ``"priority"`` (lowest first).

    Every task is claimed (pending → running) and then completed (→ done), two round
    trips on each system; answers ``("done", index, claimed_ids, finished_at)``.

    * ``stateengine``: ``CLAIM_RECORD`` where status = pending, then ``PATCH_RECORD``;
    * ``redis``: ``LMOVE`` pending → processing (BLMOVE's non-blocking form: the list is
      filled before the workers start, so nothing would wait), then one pipelined
      round trip ``LREM processing`` + ``SADD done``;
    * ``postgres``: ``UPDATE ... SET status = 'running' WHERE id = (SELECT id ... FOR
      UPDATE SKIP LOCKED LIMIT 1) RETURNING id`` (the select-and-update in one
      transaction, one round trip), then ``UPDATE ... SET status = 'done'``.

    In ``priority`` order: stateengine claims with ``order_by="priority"`` (an index on
    ``["status", "priority"]``); Redis pops the sorted set with ``ZPOPMIN``, then ``SADD
    done``; PostgreSQL's select orders by ``priority, id``.
    """
    try:
        client: Any = None
        red: Any = None
        pg: Any = None
        out.put(("ready", index))
        while True:
            cmd = cmds.get(timeout=CHILD_IDLE)
            if cmd is None:
                break
            system, name, start, order = cmd
            ids: list[int] = []
            if system == "stateengine":
                if client is None:
                    from stateengine.client.client import Client

                    client = Client(conf["endpoint"], timeout=10)
                claim, patch = client.claim_record, client.patch_record
                order_by = "priority" if order == "priority" else None
                _until(start)
                while True:
                    rec = claim(
                        name, {"status": "pending"}, {"status": "running"}, order_by=order_by
                    )
                    if rec is None:
                        break
                    patch(name, rec["id"], {"status": "done"})
                    ids.append(int(rec["id"]))
            elif system == "redis":
                if red is None:
                    import redis

                    red = redis.Redis(host=conf["redis_host"], port=conf["redis_port"])
                pending, processing, done = (
                    f"{name}:pending",
                    f"{name}:processing",
                    f"{name}:done",
                )
                _until(start)
                while order == "priority":
                    popped = red.zpopmin(pending)
                    if not popped:
                        break
                    task = popped[0][0]
                    red.sadd(done, task)
                    ids.append(int(task))
                while order != "priority":
                    task = red.lmove(pending, processing, "LEFT", "RIGHT")
                    if task is None:
                        break
                    pipe = red.pipeline(transaction=False)
                    pipe.lrem(processing, 1, task)
                    pipe.sadd(done, task)
                    pipe.execute()
                    ids.append(int(task))
            else:
                if pg is None:
                    import psycopg

                    pg = psycopg.connect(conf["pg_dsn"], autocommit=True)
                    pg.execute("SET synchronous_commit = off")
                pg_order = "priority, id" if order == "priority" else "id"
                claim_sql = (
                    f"UPDATE {name} SET status = 'running' WHERE id = (SELECT id FROM {name} "
                    f"WHERE status = 'pending' ORDER BY {pg_order} FOR UPDATE SKIP LOCKED "
                    "LIMIT 1) RETURNING id"
                )
                done_sql = f"UPDATE {name} SET status = 'done' WHERE id = %s"
                _until(start)
                while True:
                    row = pg.execute(claim_sql.encode()).fetchone()
                    if row is None:
                        break
                    pg.execute(done_sql.encode(), row)
                    ids.append(int(row[0]))
            out.put(("done", index, ids, time.monotonic()))
        for conn in (client, red, pg):
            if conn is not None:
                conn.close()
    except Exception:
        out.put(("error", index, traceback.format_exc()))


def wake_worker(index: int, conf: dict[str, Any], cmds: Any, out: Any) -> None:
    """One blocked taker for the wake rows: on ``(system, name)`` block until a task
    arrives, then answer ``("woke", index, time.perf_counter())`` at once.

    perf_counter is CLOCK_MONOTONIC on Linux, one clock for every process of the machine,
    so the suite subtracts its own reading taken just before the write that woke us.

    * ``stateengine``: ``claim_record(name, status = pending → running, wait=5)``;
    * ``redis``: ``BLMOVE name → name:taken`` with a 5 s timeout, on a connection named
      ``conf["redis_name"]`` so the suite can see it blocked in ``CLIENT LIST``.
    """
    try:
        client: Any = None
        red: Any = None
        out.put(("ready", index))
        while True:
            cmd = cmds.get(timeout=CHILD_IDLE)
            if cmd is None:
                break
            system, name = cmd
            if system == "stateengine":
                if client is None:
                    from stateengine.client.client import Client

                    client = Client(conf["endpoint"], timeout=10)
                got = client.claim_record(
                    name, {"status": "pending"}, {"status": "running"}, wait=5
                )
            else:
                if red is None:
                    import redis

                    red = redis.Redis(host=conf["redis_host"], port=conf["redis_port"])
                    red.client_setname(conf["redis_name"])
                got = red.blmove(name, f"{name}:taken", 5, "LEFT", "RIGHT")
            woke = time.perf_counter()
            if got is None:
                raise RuntimeError(f"{system}: nothing arrived within the 5 s wait")
            out.put(("woke", index, woke))
        for conn in (client, red):
            if conn is not None:
                conn.close()
    except Exception:
        out.put(("error", index, traceback.format_exc()))


def parked_worker(index: int, conf: dict[str, Any], cmds: Any, out: Any) -> None:
    """``conf["parked"]`` concurrent ``claim_record(..., wait=60)`` of one asyncio client
    on a table where nothing matches, each parked again when its wait ends, until the
    suite sends ``None``. Answers ``("ready", index)`` once they are sent."""
    import asyncio

    async def main() -> None:
        from stateengine.client.aio import AsyncClient

        aclient = AsyncClient(conf["endpoint"], timeout=10)

        async def park() -> None:
            while True:
                got = await aclient.claim_record(
                    conf["table"], {"status": "never"}, {"status": "running"}, wait=60
                )
                if got is not None:
                    raise RuntimeError(f"a parked claim took record {got['id']}")

        tasks = [asyncio.create_task(park()) for _ in range(int(conf["parked"]))]
        out.put(("ready", index))
        loop = asyncio.get_running_loop()
        stop = loop.run_in_executor(None, cmds.get, True, CHILD_IDLE)
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await aclient.close()
        for d in done:
            if d is not stop and d.exception() is not None:
                # Said now: asyncio.run's exit waits for the thread still in cmds.get.
                out.put(("error", index, "".join(traceback.format_exception(d.exception()))))

    try:
        asyncio.run(main())
    except Exception:
        out.put(("error", index, traceback.format_exc()))
