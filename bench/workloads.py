"""The suite's rows that ``bench/server.py`` does not already build.

Floors and cached re-reads next to the arena, py-lmdb (filled by another process),
``multiprocessing.Manager().dict()``, bulk loads, readers under a steady write load, and
the task-claim workload on stateengine, Redis and PostgreSQL. Every builder returns
:class:`~bench.measure.Row` objects (``body(n)`` does *n* operations, or ``window()``
runs one fixed piece of work) and leaves cleanup to the suite's ``ExitStack``.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import os
import queue
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from bench.children import TABLE, claim_worker, lmdb_fill, load_worker
from bench.measure import Row
from bench.records import record
from stateengine.client.client import Client
from stateengine.shm import ArenaReader

SPAWN = mp.get_context("spawn")
REPLY_TIMEOUT = 120.0  # s the suite waits for any worker's answer
READERS = (1, 2, 4)
WRITE_RATE = 1000.0  # writes/s of the steady writer under the readers
CLAIM_WORKERS = 4
REREAD_SET = 1000  # ids re-read by the cached rows (well under the reader's cache size)
PG_DSN = "host=127.0.0.1 dbname=test connect_timeout=3"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def cycle(n_records: int, body: Callable[[int], Any]) -> Callable[[int], None]:
    """``body(id)`` for ids 1..n_records in turn, continuing where the last call ended."""
    counter = [0]

    def run(n: int) -> None:
        i = counter[0]
        for k in range(i, i + n):
            body(k % n_records + 1)
        counter[0] = i + n

    return run


class Workers:
    """Spawned worker processes, one command queue each, one shared answer queue."""

    def __init__(self, target: Callable[..., None], args: list[tuple[Any, ...]]) -> None:
        self.out: Any = SPAWN.Queue()
        self.cmds: list[Any] = []
        self.procs: list[Any] = []
        for a in args:
            q = SPAWN.Queue()
            p = SPAWN.Process(target=target, args=(*a, q, self.out), daemon=True)
            p.start()
            self.cmds.append(q)
            self.procs.append(p)
        self.collect(len(self.procs), "ready")

    def collect(self, count: int, kind: str) -> list[tuple[Any, ...]]:
        """*count* answers of *kind*; raises on a worker's error, death or silence."""
        answers: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + REPLY_TIMEOUT
        while len(answers) < count:
            try:
                msg = self.out.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"a worker process died (exit codes {dead})") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers: {len(answers)} of {count} answered") from None
                continue
            if msg[0] == "error":
                raise RuntimeError(f"worker {msg[1]} failed:\n{msg[2]}")
            if msg[0] != kind:
                raise RuntimeError(f"worker answered {msg[0]!r}, expected {kind!r}")
            answers.append(msg)
        return answers

    def send(self, indices: range | list[int], cmd: Any) -> None:
        for i in indices:
            self.cmds[i].put(cmd)

    def close(self) -> None:
        for q in self.cmds:
            with contextlib.suppress(Exception):
                q.put(None)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
        for q in [*self.cmds, self.out]:
            q.close()
            q.join_thread()


# --- gets: floors, arena, cached re-read, LMDB, Manager -------------------------------------


def floor_rows(reader: ArenaReader, n_records: int) -> list[Row]:
    """The floors of a get, over the same records (copied out of the arena once)."""
    blobs = [reader.get_raw(TABLE, i + 1) or b"" for i in range(n_records)]
    if not all(blobs):
        raise RuntimeError("floor rows: a record is missing from the arena")
    # One private mapping holding every record, as the arena does: a get copies a slice.
    mm = mmap.mmap(-1, sum(len(b) for b in blobs))
    spans: dict[int, tuple[int, int]] = {}
    pos = 0
    for i, blob in enumerate(blobs):
        mm[pos : pos + len(blob)] = blob
        spans[i + 1] = (pos, pos + len(blob))
        pos += len(blob)
    decoded = {i + 1: msgpack.unpackb(b) for i, b in enumerate(blobs)}
    unpackb = msgpack.unpackb

    def copy_unpackb(k: int) -> Any:
        a, b = spans[k]
        return unpackb(mm[a:b])

    hot = min(REREAD_SET, n_records)
    return [
        Row("floor_dict", "", cycle(n_records, decoded.get), system="floor: in-process dict get"),
        Row(
            "floor_copy_unpackb",
            "",
            cycle(n_records, copy_unpackb),
            system="floor: bytes copy + msgpack.unpackb",
        ),
        Row("reread_floor_dict", "", cycle(hot, decoded.get), system="floor: in-process dict get"),
    ]


def arena_reread_rows(reader: ArenaReader, n_records: int) -> list[Row]:
    """Re-reads of unchanged records: ``get_cached`` and plain ``get`` over a hot set."""
    hot = min(REREAD_SET, n_records)
    return [
        Row(
            "reread_arena_cached",
            "",
            cycle(hot, lambda k: reader.get_cached(TABLE, k)),
            system="stateengine: ArenaReader.get_cached",
        ),
        Row(
            "reread_arena_get",
            "",
            cycle(hot, lambda k: reader.get(TABLE, k)),
            system="stateengine: ArenaReader.get (no cache)",
        ),
    ]


def lmdb_read_rows(tmp: Path, n_records: int) -> tuple[list[Row], Any, str]:
    """py-lmdb get + unpackb here, from an environment another process wrote."""
    try:
        import lmdb
    except ImportError as exc:
        return [], None, f"py-lmdb not installed ({exc})"
    path = str(tmp / "lmdb-read")
    p = SPAWN.Process(target=lmdb_fill, args=(path, n_records))
    p.start()
    p.join(REPLY_TIMEOUT)
    if p.exitcode != 0:
        p.terminate()
        raise RuntimeError(f"lmdb fill process: exit code {p.exitcode}")
    env = lmdb.open(path, readonly=True, lock=True, max_readers=16)
    keys = [b"%09d" % (i + 1) for i in range(n_records)]
    unpackb = msgpack.unpackb

    def get(k: int) -> Any:
        with env.begin() as txn:
            return unpackb(txn.get(keys[k - 1]))

    return (
        [Row("get_lmdb", "", cycle(n_records, get), system="py-lmdb: txn + get + unpackb")],
        env,
        "",
    )


def lmdb_write_rows(tmp: Path, n_records: int) -> tuple[list[Row], Any, str]:
    """py-lmdb puts with ``sync=False``, one per transaction, and a bulk load (one txn)."""
    try:
        import lmdb
    except ImportError as exc:
        return [], None, f"py-lmdb not installed ({exc})"
    env = lmdb.open(str(tmp / "lmdb-nosync"), map_size=1 << 30, sync=False, metasync=False)
    values = [pack(record(i)) for i in range(n_records)]

    def put(k: int) -> None:
        with env.begin(write=True) as txn:
            txn.put(b"%09d" % k, values[k - 1])

    def bulk() -> tuple[float, int]:
        start = time.perf_counter()
        with env.begin(write=True) as txn:
            for i, v in enumerate(values):
                txn.put(b"%09d" % (i + 1), v)
        env.sync(True)
        return (time.perf_counter() - start) / n_records * 1e6, n_records

    rows = [
        Row("write_one_lmdb_nosync", "", cycle(n_records, put), system="py-lmdb put, sync=False"),
        Row("bulk_lmdb", "", lambda n: None, window=bulk, system="py-lmdb: one txn + sync"),
    ]
    return rows, env, ""


def manager_rows(n_records: int) -> tuple[list[Row], Any]:
    """``multiprocessing.Manager().dict()``: the dict lives in the manager's process."""
    manager = SPAWN.Manager()
    d = manager.dict()
    records = {i + 1: record(i) for i in range(n_records)}
    d.update(records)

    def bulk() -> tuple[float, int]:
        start = time.perf_counter()
        d.update(records)
        return (time.perf_counter() - start) / n_records * 1e6, n_records

    def set_one(k: int) -> None:
        d[k] = records[k]

    rows = [
        Row("get_manager", "", cycle(n_records, d.get), system="multiprocessing.Manager().dict()"),
        Row("write_one_manager", "", cycle(n_records, set_one), system="Manager().dict() set"),
        Row("bulk_manager", "", lambda n: None, window=bulk, system="Manager().dict().update"),
    ]
    return rows, manager


# --- bulk load --------------------------------------------------------------------------------


def bulk_rows(client: Client, n_records: int) -> list[Row]:
    """N records into an emptied table: one ``SET_STATE``, or ``BATCH``es of 1000 creates."""
    name = "bulk"
    records = [{"id": i + 1, **record(i)} for i in range(n_records)]
    client.create_state(name)

    def set_state() -> tuple[float, int]:
        client.set_state(name, [])
        start = time.perf_counter()
        client.set_state(name, records)
        return (time.perf_counter() - start) / n_records * 1e6, n_records

    def batch() -> tuple[float, int]:
        client.set_state(name, [])
        start = time.perf_counter()
        for lo in range(0, n_records, 1000):
            client.batch(
                [
                    {"command": "CREATE_RECORD", "state": name, "record": r}
                    for r in records[lo : lo + 1000]
                ]
            )
        return (time.perf_counter() - start) / n_records * 1e6, n_records

    return [
        Row(
            "bulk_set_state", "", lambda n: None, window=set_state, system="stateengine: SET_STATE"
        ),
        Row("bulk_batch", "", lambda n: None, window=batch, system="stateengine: BATCH of 1000"),
    ]


def redis_bulk_row(r: Any, prefix: str, n_records: int) -> Row:
    values = [pack(record(i)) for i in range(n_records)]
    keys = [f"{prefix}bulk:{i + 1}" for i in range(n_records)]

    def load() -> tuple[float, int]:
        start = time.perf_counter()
        for lo in range(0, n_records, 1000):
            pipe = r.pipeline(transaction=False)
            for k in range(lo, min(lo + 1000, n_records)):
                pipe.set(keys[k], values[k])
            pipe.execute()
        return (time.perf_counter() - start) / n_records * 1e6, n_records

    return Row("bulk_redis", "", lambda n: None, window=load, system="redis-py: SET pipelined 1000")


# --- readers under a steady write load ------------------------------------------------------


def readers_rows(
    arena: str, endpoint: str, n_records: int, seconds: float
) -> tuple[list[Row], list[Workers]]:
    """1, 2 and 4 arena reader processes while one writer process patches steadily.

    The pure-Python ``spin`` processes under the same write load show how far this
    machine lets 2 and 4 processes scale at all.
    """
    top = max(READERS)
    conf = {"arena": arena, "endpoint": endpoint, "n": n_records, "rate": WRITE_RATE}
    readers = Workers(load_worker, [("reader", i, conf) for i in range(top)])
    spins = Workers(load_worker, [("spin", i, conf) for i in range(top)])
    writer = Workers(load_worker, [("writer", 0, conf)])
    pools = [readers, spins, writer]

    def window(pool: Workers, k: int) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            start = time.monotonic() + 0.25  # room for every reader to catch up first
            end = start + seconds
            writer.send([0], (start - 0.02, end + 0.02))
            pool.send(range(k), (start, end))
            total = sum(a[2] for a in pool.collect(k, "done"))
            writer.collect(1, "done")
            return seconds / total * 1e6, total

        return run

    rows = []
    for k in READERS:
        rows.append(
            Row(
                f"readers_{k}",
                "",
                lambda n: None,
                window=window(readers, k),
                system=f"stateengine: {k} arena reader process{'es' if k > 1 else ''}",
                unit="/s",
            )
        )
    for k in READERS:
        rows.append(
            Row(
                f"readers_spin_{k}",
                "",
                lambda n: None,
                window=window(spins, k),
                system=f"pure-Python loop, {k} process{'es' if k > 1 else ''} (machine ceiling)",
                unit="/s",
            )
        )
    return rows, pools


# --- task claim -------------------------------------------------------------------------------


class ClaimBench:
    """N tasks, ``CLAIM_WORKERS`` processes claiming until none is left, per system.

    Each repeat refills the queue, starts every worker at one instant and times until
    the last one finds the queue empty; then checks that every task was claimed exactly
    once (the workers' id lists) and is done (a count on the system itself).
    """

    def __init__(
        self,
        client: Client,
        endpoint: str,
        redis_conn: Any,
        redis_prefix: str,
        pg_dsn: str | None,
        tasks: int,
    ) -> None:
        self.client = client
        self.redis = redis_conn
        self.prefix = f"{redis_prefix}claim"
        self.pg_dsn = pg_dsn
        self.tasks = tasks
        self.pg_table = f"se_bench_claim_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        conf = {
            "endpoint": endpoint,
            "redis_host": "127.0.0.1",
            "redis_port": 6379,
            "pg_dsn": pg_dsn or "",
        }
        self.workers = Workers(claim_worker, [(i, conf) for i in range(CLAIM_WORKERS)])
        self.client.create_state("tasks")
        self.pg: Any = None
        if pg_dsn:
            import psycopg

            self.pg = psycopg.connect(pg_dsn, autocommit=True)
            self.pg.execute(
                f"CREATE TABLE {self.pg_table} (id int PRIMARY KEY, status text NOT NULL, "
                "payload bytea NOT NULL)".encode()
            )
            self.pg.execute(
                f"CREATE INDEX ON {self.pg_table} (id) WHERE status = 'pending'".encode()
            )

    def _fill(self, system: str) -> str:
        n = self.tasks
        if system == "stateengine":
            self.client.set_state("tasks", [{"id": i + 1, **record(i)} for i in range(n)])
            return "tasks"
        if system == "redis":
            self.redis.delete(*(f"{self.prefix}:{s}" for s in ("pending", "processing", "done")))
            for lo in range(0, n, 1000):
                self.redis.rpush(f"{self.prefix}:pending", *range(lo + 1, min(lo + 1001, n + 1)))
            return self.prefix
        t = self.pg_table
        self.pg.execute(f"TRUNCATE {t}".encode())
        with self.pg.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {t} (id, status, payload) VALUES (%s, 'pending', %s)".encode(),
                [(i + 1, pack(record(i))) for i in range(n)],
            )
        self.pg.execute(f"VACUUM ANALYZE {t}".encode())
        return t

    def _done_count(self, system: str, name: str) -> int:
        if system == "stateengine":
            return len(self.client.list_records(name, where={"status": "done"}))
        if system == "redis":
            return int(self.redis.scard(f"{name}:done"))
        row = self.pg.execute(f"SELECT count(*) FROM {name} WHERE status = 'done'".encode())
        return int(row.fetchone()[0])

    def window(self, system: str) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            name = self._fill(system)
            start = time.monotonic() + 0.1
            self.workers.send(range(CLAIM_WORKERS), (system, name, start))
            answers = self.workers.collect(CLAIM_WORKERS, "done")
            elapsed = max(a[3] for a in answers) - start
            ids = [i for a in answers for i in a[2]]
            if len(ids) != self.tasks or len(set(ids)) != self.tasks:
                raise RuntimeError(
                    f"{system} claim: {len(ids)} claims of {len(set(ids))} distinct tasks, "
                    f"expected each of {self.tasks} exactly once"
                )
            done = self._done_count(system, name)
            if done != self.tasks:
                raise RuntimeError(f"{system} claim: {done} tasks done, expected {self.tasks}")
            return elapsed / self.tasks * 1e6, self.tasks

        return run

    def rows(self) -> list[Row]:
        w = CLAIM_WORKERS
        rows = [
            Row(
                "claim_stateengine",
                "",
                lambda n: None,
                window=self.window("stateengine"),
                system=f"stateengine: CLAIM_RECORD + PATCH_RECORD, {w} workers",
                unit="/s",
            )
        ]
        if self.redis is not None:
            rows.append(
                Row(
                    "claim_redis",
                    "",
                    lambda n: None,
                    window=self.window("redis"),
                    system=f"Redis: LMOVE + LREM/SADD, {w} workers",
                    unit="/s",
                )
            )
        if self.pg is not None:
            rows.append(
                Row(
                    "claim_postgres",
                    "",
                    lambda n: None,
                    window=self.window("postgres"),
                    system=f"PostgreSQL: FOR UPDATE SKIP LOCKED + UPDATE, {w} workers",
                    unit="/s",
                )
            )
        return rows

    def close(self) -> None:
        self.workers.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.delete(
                    *(f"{self.prefix}:{s}" for s in ("pending", "processing", "done"))
                )
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.execute(f"DROP TABLE IF EXISTS {self.pg_table}".encode())
            self.pg.close()


def postgres_dsn() -> tuple[str | None, str]:
    """The DSN if PostgreSQL answers, else ``(None, reason)``."""
    try:
        import psycopg
    except ImportError as exc:
        return None, f"psycopg not installed ({exc})"
    try:
        psycopg.connect(PG_DSN).close()
    except Exception as exc:
        return None, f"PostgreSQL unreachable ({PG_DSN}): {exc}".strip()
    return PG_DSN, ""
