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
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from bench.children import (
    TABLE,
    claim_worker,
    lmdb_fill,
    load_worker,
    parked_worker,
    wake_worker,
)
from bench.measure import Row
from bench.records import record
from bench.report import fmt_rate
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


def arena_blobs(reader: ArenaReader, n_records: int) -> list[bytes]:
    blobs = [reader.get_raw(TABLE, i + 1) or b"" for i in range(n_records)]
    if not all(blobs):
        raise RuntimeError("floor rows: a record is missing from the arena")
    return blobs


def copy_unpackb_floor(blobs: list[bytes]) -> Callable[[int], Any]:
    """The floor of a get of record k (1-based): a copy of its bytes out of one private
    mapping holding every record, as the arena does, and ``msgpack.unpackb``."""
    mm = mmap.mmap(-1, sum(len(b) for b in blobs))
    spans: dict[int, tuple[int, int]] = {}
    pos = 0
    for i, blob in enumerate(blobs):
        mm[pos : pos + len(blob)] = blob
        spans[i + 1] = (pos, pos + len(blob))
        pos += len(blob)
    unpackb = msgpack.unpackb

    def copy_unpackb(k: int) -> Any:
        a, b = spans[k]
        return unpackb(mm[a:b])

    return copy_unpackb


def floor_rows(reader: ArenaReader, n_records: int) -> list[Row]:
    """The floors of a get, over the same records (copied out of the arena once)."""
    blobs = arena_blobs(reader, n_records)
    copy_unpackb = copy_unpackb_floor(blobs)
    decoded = {i + 1: msgpack.unpackb(b) for i, b in enumerate(blobs)}
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

TASK_SCHEMA = {
    "name": "string",
    "email": "string",
    "status": "string",
    "score": "float",
    "tries": "integer",
    "tag": "string",
}
FILL_CHUNK = 20_000  # records per SET_STATE / BATCH of a table fill
RESET_CHUNK = 1000  # PATCH_RECORDs per BATCH when a big table's tasks are put back
RANGE_HITS = 100  # records a range query of the range rows returns
RANGE_STARTS = 64  # distinct ranges the indexed rows cycle through


@dataclass(frozen=True)
class ClaimSpec:
    """One claim workload: *tasks* pending tasks in a table of *table* records.

    The ``table - tasks`` others are finished (``status: done``) and sit ahead of the
    pending ones in insertion order, so a claim that scanned from the first record would
    walk past all of them. *order* is ``"fifo"`` (insertion order) or ``"priority"``
    (``order_by="priority"`` on random integer priorities).
    """

    workload: str  # the rows' key prefix and the workload name: claim, claimbig, pqueue
    tasks: int
    table: int
    order: str = "fifo"

    @property
    def ahead(self) -> int:
        return self.table - self.tasks


def server_result(client: Client, request: dict[str, Any]) -> Any:
    """One request answered by the writer (never the arena): its result, or raise.

    :raises RuntimeError: when the server answers an error.
    """
    reply = client.execute(request)
    if not reply.get("ok"):
        raise RuntimeError(f"{request['command']} on {request.get('state')}: {reply.get('error')}")
    return reply.get("result")


def warm_index(client: Client, state: str, field: str, probe: Any) -> float:
    """Seconds the writer takes to build *state*'s index structures, untimed by the rows.

    The engine builds them on the first query that needs them (and again after every
    ``SET_STATE``): a claim row must not time that build into its first claim.
    """
    start = time.perf_counter()
    server_result(
        client, {"command": "LIST_RECORDS", "state": state, "where": {field: probe}, "limit": 1}
    )
    return time.perf_counter() - start


def fill_table(client: Client, state: str, records: Iterable[dict[str, Any]]) -> int:
    """Replace *state*'s records: one ``SET_STATE`` of the first chunk, then ``BATCH``es of
    ``CREATE_RECORD`` (a single frame of 10^6 records would pass the request limit).
    Returns how many records were written."""
    chunk: list[dict[str, Any]] = []
    count = 0
    first = True

    def flush() -> None:
        nonlocal first
        if first:
            client.set_state(state, chunk)
            first = False
        elif chunk:
            client.batch([{"command": "CREATE_RECORD", "state": state, "record": r} for r in chunk])

    for r in records:
        chunk.append(r)
        count += 1
        if len(chunk) == FILL_CHUNK:
            flush()
            chunk = []
    flush()
    return count


def claim_pool(endpoint: str, pg_dsn: str | None) -> Workers:
    """The ``CLAIM_WORKERS`` worker processes every claim workload shares."""
    conf = {
        "endpoint": endpoint,
        "redis_host": "127.0.0.1",
        "redis_port": 6379,
        "pg_dsn": pg_dsn or "",
    }
    return Workers(claim_worker, [(i, conf) for i in range(CLAIM_WORKERS)])


class ClaimBench:
    """``spec.tasks`` tasks, ``CLAIM_WORKERS`` processes claiming until none is left, per system.

    Each repeat puts the tasks back (a table the size of the tasks is refilled; a bigger
    one is filled once, timed apart, and only its tasks are set back to pending), starts
    every worker at one instant and times until the last one finds the queue empty; then
    checks that every task was claimed exactly once (the workers' id lists) and is done
    (on the system itself). stateengine's table declares an index on ``status`` (on
    ``["status", "priority"]`` for the priority queue), built untimed before each repeat.
    Redis holds only the pending tasks (a list, or a sorted set by priority); PostgreSQL
    the whole table, with a partial index on the pending rows.
    """

    def __init__(
        self,
        client: Client,
        workers: Workers,
        redis_conn: Any,
        redis_prefix: str,
        pg_dsn: str | None,
        spec: ClaimSpec,
        notes: list[str],
    ) -> None:
        self.client = client
        self.workers = workers
        self.redis = redis_conn
        self.spec = spec
        self.prefix = f"{redis_prefix}{spec.workload}"
        self.state = f"tasks_{spec.workload}"
        self.pg_table = f"se_bench_{spec.workload}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.notes = notes  # the suite's: setup figures printed above the table
        self.filled: set[str] = set()
        self.expected = set(range(spec.ahead + 1, spec.table + 1))
        rng = random.Random(16)
        self.priority = [rng.randrange(1000) for _ in range(spec.table)]
        schema = dict(TASK_SCHEMA)
        index: list[str | list[str]] = ["status"]
        if spec.order == "priority":
            schema["priority"] = "integer"
            index = [["status", "priority"]]
        self.client.create_state(self.state, schema=schema, indexes=index)
        self.pg: Any = None
        if pg_dsn:
            import psycopg

            self.pg = psycopg.connect(pg_dsn, autocommit=True)
            t = self.pg_table
            self.pg.execute(
                f"CREATE TABLE {t} (id int PRIMARY KEY, status text NOT NULL, "
                "priority int NOT NULL, payload bytea NOT NULL)".encode()
            )
            cols = "priority, id" if spec.order == "priority" else "id"
            self.pg.execute(f"CREATE INDEX ON {t} ({cols}) WHERE status = 'pending'".encode())

    def _record(self, i: int) -> dict[str, Any]:
        """Task ``i + 1``: finished when it sits ahead of the pending ones."""
        r = {"id": i + 1, **record(i), "status": "done" if i < self.spec.ahead else "pending"}
        if self.spec.order == "priority":
            r["priority"] = self.priority[i]
        return r

    def _fill_stateengine(self) -> None:
        spec, name = self.spec, self.state
        if spec.ahead == 0:
            fill_table(self.client, name, (self._record(i) for i in range(spec.table)))
        elif name not in self.filled:
            start = time.perf_counter()
            fill_table(self.client, name, (self._record(i) for i in range(spec.table)))
            fill = time.perf_counter() - start
            build = warm_index(self.client, name, "status", "pending")
            self.filled.add(name)
            self.notes.append(
                f"{spec.workload}: stateengine table of {spec.table:,} records filled in "
                f"{fill:.1f} s ({fmt_rate(spec.table / fill)}; SET_STATE + BATCHes of "
                f"{FILL_CHUNK:,}), its index built in {build:.2f} s; neither is in the claim time"
            )
        else:  # put the tasks back: their place in insertion order is kept
            for lo in range(spec.ahead, spec.table, RESET_CHUNK):
                self.client.batch(
                    [
                        {
                            "command": "PATCH_RECORD",
                            "state": name,
                            "id": i + 1,
                            "fields": {"status": "pending"},
                        }
                        for i in range(lo, min(lo + RESET_CHUNK, spec.table))
                    ]
                )
        warm_index(self.client, name, "status", "pending")

    def _fill_postgres(self) -> None:
        spec, t = self.spec, self.pg_table
        if spec.ahead == 0:
            self.pg.execute(f"TRUNCATE {t}".encode())
            with self.pg.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {t} (id, status, priority, payload) "
                    "VALUES (%s, 'pending', %s, %s)".encode(),
                    [(i + 1, self.priority[i], pack(record(i))) for i in range(spec.table)],
                )
        elif t not in self.filled:
            start = time.perf_counter()
            with (
                self.pg.cursor() as cur,
                cur.copy(f"COPY {t} (id, status, priority, payload) FROM STDIN".encode()) as cp,
            ):
                for i in range(spec.table):
                    r = self._record(i)
                    cp.write_row((i + 1, r["status"], self.priority[i], pack(record(i))))
            self.filled.add(t)
            self.notes.append(
                f"{spec.workload}: PostgreSQL table of {spec.table:,} rows filled by COPY in "
                f"{time.perf_counter() - start:.1f} s (not in the claim time)"
            )
        else:
            self.pg.execute(
                f"UPDATE {t} SET status = 'pending' WHERE id > %s".encode(), (spec.ahead,)
            )
        self.pg.execute(f"VACUUM ANALYZE {t}".encode())

    def _fill(self, system: str) -> str:
        spec = self.spec
        if system == "stateengine":
            self._fill_stateengine()
            return self.state
        if system == "redis":
            pending = f"{self.prefix}:pending"
            self.redis.delete(*(f"{self.prefix}:{s}" for s in ("pending", "processing", "done")))
            for lo in range(spec.ahead, spec.table, 1000):
                ids = range(lo + 1, min(lo + 1001, spec.table + 1))
                if spec.order == "priority":
                    self.redis.zadd(pending, {str(i): self.priority[i - 1] for i in ids})
                else:
                    self.redis.rpush(pending, *ids)
            return self.prefix
        self._fill_postgres()
        return self.pg_table

    def _check_done(self, system: str, name: str) -> None:
        """:raises RuntimeError: when a task is left pending or running (or not done)."""
        if system == "stateengine":
            for status in ("pending", "running"):
                left = server_result(
                    self.client,
                    {
                        "command": "LIST_RECORDS",
                        "state": name,
                        "where": {"status": status},
                        "limit": 1,
                    },
                )
                if left:
                    raise RuntimeError(f"stateengine claim: task {left[0]['id']} left {status}")
            return
        if system == "redis":
            done = int(self.redis.scard(f"{name}:done"))
            expected = self.spec.tasks
        else:
            row = self.pg.execute(f"SELECT count(*) FROM {name} WHERE status = 'done'".encode())
            done = int(row.fetchone()[0])
            expected = self.spec.table
        if done != expected:
            raise RuntimeError(f"{system} claim: {done} tasks done, expected {expected}")

    def window(self, system: str) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            name = self._fill(system)
            start = time.monotonic() + 0.1
            self.workers.send(range(CLAIM_WORKERS), (system, name, start, self.spec.order))
            answers = self.workers.collect(CLAIM_WORKERS, "done")
            elapsed = max(a[3] for a in answers) - start
            ids = [i for a in answers for i in a[2]]
            if len(ids) != self.spec.tasks or set(ids) != self.expected:
                raise RuntimeError(
                    f"{system} claim: {len(ids)} claims of {len(set(ids))} distinct tasks, "
                    f"expected each of {self.spec.tasks} exactly once"
                )
            self._check_done(system, name)
            return elapsed / self.spec.tasks * 1e6, self.spec.tasks

        return run

    def rows(self) -> list[Row]:
        w, spec = CLAIM_WORKERS, self.spec
        size = f", table of {spec.table:,}" if spec.ahead else ""
        if spec.order == "priority":
            systems = {
                "stateengine": f"stateengine: CLAIM_RECORD order_by priority + PATCH_RECORD, {w} "
                "workers",
                "redis": f"Redis: ZPOPMIN + SADD, {w} workers",
                "postgres": f"PostgreSQL: SKIP LOCKED ORDER BY priority + UPDATE, {w} workers",
            }
        else:
            systems = {
                "stateengine": f"stateengine: CLAIM_RECORD + PATCH_RECORD, {w} workers{size}",
                "redis": f"Redis: LMOVE + LREM/SADD, {w} workers",
                "postgres": f"PostgreSQL: FOR UPDATE SKIP LOCKED + UPDATE, {w} workers{size}",
            }
        present = {"stateengine": True, "redis": self.redis is not None, "postgres": self.pg}
        return [
            Row(
                f"{spec.workload}_{system}",
                "",
                lambda n: None,
                window=self.window(system),
                system=text,
                unit="/s",
            )
            for system, text in systems.items()
            if present[system]
        ]

    def close(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.delete(
                    *(f"{self.prefix}:{s}" for s in ("pending", "processing", "done"))
                )
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.execute(f"DROP TABLE IF EXISTS {self.pg_table}".encode())
            self.pg.close()


# --- blocking claims: wake-up latency, writes with claims parked ------------------------------

PARKED = 50  # claims parked by the parkedwrite rows
PARK_TIMEOUT = 30.0  # s the suite waits to see a claim parked


def wait_parked(client: Client, count: int) -> None:
    """Return once the server holds exactly *count* parked claims (``STATS``).

    :raises RuntimeError: when it does not within ``PARK_TIMEOUT`` s.
    """
    deadline = time.monotonic() + PARK_TIMEOUT
    while True:
        parked = client.stats()["parked_claims"]
        if parked == count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{parked} claims parked after {PARK_TIMEOUT} s, expected {count}")


class WakeBench:
    """One worker process blocked for a task; the suite writes one; how soon it holds it.

    A sample: the worker blocks (stateengine ``claim_record(wait=5)`` on a table indexed
    on ``status``; Redis ``BLMOVE``), the suite sees it blocked (``STATS``
    ``parked_claims``; ``CLIENT LIST`` flag ``b``), reads ``perf_counter`` and writes
    (``create_record`` of a pending task; ``LPUSH``); the worker reads ``perf_counter`` as
    its call returns. A repeat is the median of *samples* such wake-ups. Next to them, in
    the same run, the write alone with nobody waiting: ``create_record`` of a finished
    task into the same table, and ``LPUSH`` onto a list nobody pops.
    """

    def __init__(self, client: Client, endpoint: str, redis_conn: Any, prefix: str, samples: int):
        self.client = client
        self.redis = redis_conn
        self.samples = samples
        self.state = "wake"
        self.list = f"{prefix}wake"
        self.redis_name = f"se-bench-wake-{os.getpid()}"
        self.client.create_state(self.state, schema=TASK_SCHEMA, indexes=["status"])
        warm_index(client, self.state, "status", "pending")
        conf = {
            "endpoint": endpoint,
            "redis_host": "127.0.0.1",
            "redis_port": 6379,
            "redis_name": self.redis_name,
        }
        self.workers = Workers(wake_worker, [(0, conf)])

    def _blocked(self, system: str) -> None:
        if system == "stateengine":
            wait_parked(self.client, 1)
            return
        deadline = time.monotonic() + PARK_TIMEOUT
        while not any(
            c.get("name") == self.redis_name and "b" in c.get("flags", "")
            for c in self.redis.client_list()
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis worker not blocked in BLMOVE after {PARK_TIMEOUT} s")

    def wake(self, system: str) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            lat: list[float] = []
            for k in range(self.samples):
                self.workers.send(
                    [0], (system, self.state if system == "stateengine" else self.list)
                )
                self._blocked(system)
                if system == "stateengine":
                    t0 = time.perf_counter()
                    self.client.create_record(self.state, {**record(k), "status": "pending"})
                else:
                    t0 = time.perf_counter()
                    self.redis.lpush(self.list, k)
                woke = self.workers.collect(1, "woke")[0][2]
                lat.append((woke - t0) * 1e6)
            return statistics.median(lat), self.samples

        return run

    def write(self, system: str) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            lat: list[float] = []
            for k in range(self.samples):
                if system == "stateengine":
                    t0 = time.perf_counter()
                    self.client.create_record(self.state, {**record(k), "status": "done"})
                else:
                    t0 = time.perf_counter()
                    self.redis.lpush(f"{self.list}:nobody", k)
                lat.append((time.perf_counter() - t0) * 1e6)
            if system == "redis":
                self.redis.delete(f"{self.list}:nobody")
            return statistics.median(lat), self.samples

        return run

    def rows(self) -> list[Row]:
        systems = ["stateengine"] + (["redis"] if self.redis is not None else [])
        rows: list[Row] = []
        for system in systems:
            rows.append(Row(f"wake_{system}", "", lambda n: None, window=self.wake(system)))
            rows.append(Row(f"wake_{system}_write", "", lambda n: None, window=self.write(system)))
        return rows

    def close(self) -> None:
        self.workers.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.delete(self.list, f"{self.list}:taken", f"{self.list}:nobody")


class ParkedWriteBench:
    """``create_record`` from this client with ``PARKED`` claims of another process parked
    on the same table (nothing they look for is ever written), next to the same write on
    a twin server (*idle*) with none parked; each repeat the median of *samples* round
    trips. Every repeat first checks ``STATS`` ``parked_claims`` on both."""

    def __init__(self, client: Client, endpoint: str, idle: Client, samples: int) -> None:
        self.client = client
        self.idle = idle
        self.samples = samples
        for c in (client, idle):
            c.create_state("parked", schema=TASK_SCHEMA, indexes=["status"])
            warm_index(c, "parked", "status", "done")
        conf = {"endpoint": endpoint, "table": "parked", "parked": PARKED}
        self.workers = Workers(parked_worker, [(0, conf)])

    def window(self, client: Client, parked: int) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            wait_parked(client, parked)
            lat: list[float] = []
            create = client.create_record
            for k in range(self.samples):
                t0 = time.perf_counter()
                create("parked", {**record(k), "status": "done"})
                lat.append((time.perf_counter() - t0) * 1e6)
            return statistics.median(lat), self.samples

        return run

    def rows(self) -> list[Row]:
        return [
            Row("parkedwrite_50", "", lambda n: None, window=self.window(self.client, PARKED)),
            Row("parkedwrite_none", "", lambda n: None, window=self.window(self.idle, 0)),
        ]

    def close(self) -> None:
        self.workers.close()


# --- indexed range list -----------------------------------------------------------------------


class RangeBench:
    """``LIST_RECORDS`` of a ``run_at`` range holding ``RANGE_HITS`` of *n* records.

    Two tables hold the same records (``run_at`` a shuffled 0..n-1): one with an index on
    ``run_at``, one without. The rows time the same query on the writer (``client.execute``
    forces it) on each table; ``client.list_records`` (which sends a query an index fits
    to the writer, shm/DESIGN.md "Indexed queries"); the arena-side list, a scan of a
    ``client.snapshot()`` (snapshots always scan); and the same records fetched by id:
    ``client.get_record`` × 100 from the arena, or one ``BATCH`` of 100 ``GET_RECORD``.
    """

    def __init__(self, client: Client, arena_client: Client, n: int, notes: list[str]) -> None:
        self.client = client
        self.arena_client = arena_client
        self.n = n
        rng = random.Random(16)
        run_at = list(range(n))
        rng.shuffle(run_at)
        id_at = [0] * n  # id_at[v]: the record whose run_at is v
        for i, v in enumerate(run_at):
            id_at[v] = i + 1
        self.starts = [rng.randrange(n - RANGE_HITS + 1) for _ in range(RANGE_STARTS)]
        self.ids = [sorted(id_at[x : x + RANGE_HITS]) for x in self.starts]
        self.notes = notes
        schema = {**TASK_SCHEMA, "run_at": "float"}
        tables: list[tuple[str, list[str | list[str]] | None]] = [
            ("range_indexed", ["run_at"]),
            ("range_scan", None),
        ]
        for name, indexes in tables:
            client.create_state(name, schema=schema, indexes=indexes)
            start = time.perf_counter()
            fill_table(
                client,
                name,
                ({"id": i + 1, **record(i), "run_at": float(v)} for i, v in enumerate(run_at)),
            )
            fill = time.perf_counter() - start
            note = (
                f"range: table {name} of {n:,} records filled in {fill:.1f} s "
                f"({fmt_rate(n / fill)})"
            )
            if indexes:
                note += f", its index built in {warm_index(client, name, 'run_at', -1.0):.2f} s"
            self.notes.append(note)

    def where(self, k: int) -> dict[str, Any]:
        x = float(self.starts[k % RANGE_STARTS])
        return {"run_at": {"$gte": x, "$lt": x + RANGE_HITS}}

    def _server_list(self, state: str, k: int) -> None:
        out = server_result(
            self.client, {"command": "LIST_RECORDS", "state": state, "where": self.where(k)}
        )
        if [r["id"] for r in out] != self.ids[k % RANGE_STARTS]:
            raise RuntimeError(f"range list on {state}: not the expected {RANGE_HITS} records")

    def rows(self) -> list[Row]:
        counter = [0]

        def indexed(n: int) -> None:
            for _ in range(n):
                self._server_list("range_indexed", counter[0])
                counter[0] += 1

        def scan() -> tuple[float, int]:
            start = time.perf_counter()
            self._server_list("range_scan", counter[0])
            counter[0] += 1
            return (time.perf_counter() - start) * 1e6, 1

        def arena() -> tuple[float, int]:
            k = counter[0]
            counter[0] += 1
            start = time.perf_counter()
            with self.arena_client.snapshot() as snap:
                out = snap.list_records("range_indexed", where=self.where(k))
            elapsed = time.perf_counter() - start
            if [r["id"] for r in out] != self.ids[k % RANGE_STARTS]:
                raise RuntimeError("range list in the arena: not the expected records")
            return elapsed * 1e6, 1

        def client_list(n: int) -> None:
            for _ in range(n):
                k = counter[0]
                out = self.arena_client.list_records("range_indexed", where=self.where(k))
                if [r["id"] for r in out] != self.ids[k % RANGE_STARTS]:
                    raise RuntimeError("client.list_records: not the expected records")
                counter[0] += 1

        def by_id(n: int) -> None:
            get = self.arena_client.get_record
            for _ in range(n):
                for i in self.ids[counter[0] % RANGE_STARTS]:
                    get("range_indexed", i)
                counter[0] += 1

        def by_id_batch(n: int) -> None:
            for _ in range(n):
                self.client.batch(
                    [
                        {"command": "GET_RECORD", "state": "range_indexed", "id": i}
                        for i in self.ids[counter[0] % RANGE_STARTS]
                    ]
                )
                counter[0] += 1

        h, n = RANGE_HITS, self.n
        return [
            Row(
                "range_indexed",
                "",
                indexed,
                system=f"stateengine: LIST_RECORDS run_at range, index, writer ({h} of {n:,})",
            ),
            Row(
                "range_scan",
                "",
                lambda k: None,
                window=scan,
                system=f"stateengine: the same, no index, writer ({h} of {n:,})",
            ),
            Row(
                "range_client",
                "",
                client_list,
                system="stateengine: the same via client.list_records (index fits: the writer)",
            ),
            Row(
                "range_arena",
                "",
                lambda k: None,
                window=arena,
                system=f"stateengine: the same in the arena, client.snapshot() (a scan of {n:,})",
                max_repeats=3,
            ),
            Row(
                "range_byid",
                "",
                by_id,
                system=f"stateengine: the {h} records by id, client.get_record × {h} (arena)",
            ),
            Row(
                "range_byid_batch",
                "",
                by_id_batch,
                system=f"stateengine: the {h} records by id, one BATCH of {h} GET_RECORD",
            ),
        ]


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
