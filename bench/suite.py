"""``python -m bench``: stateengine and its alternatives side by side, one run, one table.

    python -m bench [--quick | --smoke] [--repeats R] [--records N] [--only get,write1,...]
                    [--json PATH] [--chart PNG]
    python -m bench --compare A.json B.json

Every workload runs on the same 6-field ~70-byte record (``bench/records.py``) on
stateengine (a real server in its own process, reached the way a deployment reaches it),
next to Redis through redis-py, py-lmdb, ``multiprocessing.Manager().dict()``,
PostgreSQL (task claim) and the floors (an in-process dict get, bytes copy +
``msgpack.unpackb``, bare ZMQ echoes, a socketpair ping-pong). Rows are measured
round-robin (``bench/measure.py``) and reported as medians of the repeats with their
spread, and as ratios against each workload's floor or alternative; then every target
of issues 7 and 16 with PASS/MISS. An alternative missing on the machine is skipped with a line
saying so. Results go to ``bench/results/<date>-<mode>.json`` unless ``--json`` says
otherwise; ``--chart`` draws the targets (needs the ``chart`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zmq

from bench import cluster, report, server, workloads
from bench.durability import big_engine
from bench.measure import Row, calibrate, measure
from bench.records import record
from stateengine.client.client import Client
from stateengine.server.engine import TableEngine
from stateengine.server.persist_log import LogStore
from stateengine.server.persistence import open_store
from stateengine.shm import ArenaReader, blocks
from stateengine.testing import ServerProcess
from stateengine.testing.bytecode import byte_compile

HERE = Path(__file__).resolve().parent
TABLE = server.TABLE
RESTART_TIMEOUT = 300.0  # s: a restart of 10^6 records on a loaded machine
RESTART_REPEATS = 5


@dataclass
class Config:
    mode: str
    records: int  # N: records preloaded, read and written
    repeats: int
    seconds: float  # target wall time of one repeat of one row
    window: float  # s of each readers-under-load repeat
    bulk_records: int
    tasks: int  # per task-claim repeat
    durable_records: int
    restart_records: int
    big_records: int  # the table of the claimbig rows, and of each range table
    wakes: int  # samples per repeat of the wake and parkedwrite rows (their median)


MODES = {
    "full": Config(
        "full", 100_000, 7, 0.4, 1.0, 100_000, 10_000, 20_000, 1_000_000, 1_000_000, 200
    ),
    "quick": Config("quick", 100_000, 5, 0.05, 0.2, 10_000, 2000, 10_000, 50_000, 100_000, 100),
    "smoke": Config("smoke", 2000, 2, 0.01, 0.15, 2000, 100, 1000, 5000, 5000, 10),
}
CLAIM_WORKLOADS = {"claim", "claimbig", "pqueue"}


def environment(redis_conn: Any, pg_dsn: str | None) -> dict[str, Any]:
    env = server.environment(redis_conn)
    for dist in ("lmdb", "psycopg", "matplotlib", "stateengine"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            env[dist] = importlib.metadata.version(dist)
    # the write path the servers run unless told otherwise (STATEENGINE_PURE_PYTHON=1)
    env["write_path"] = blocks.PATH
    if pg_dsn:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(pg_dsn) as con:
                row = con.execute(b"SHOW server_version").fetchone()
                env["postgres_server"] = row[0] if row else "?"
    return env


def header(doc: dict[str, Any]) -> list[str]:
    env, cfg = doc["environment"], doc["config"]
    load = " ".join(f"{x:.2f}" for x in env["loadavg_start"])
    load_end = " ".join(f"{x:.2f}" for x in env.get("loadavg_end", []))
    lines = [
        f"stateengine benchmark suite ({cfg['mode']}), {doc['date']}, commit "
        f"{env.get('git_commit', '?')}: {doc['command']}",
        f"python {env['python']} · stateengine {env.get('stateengine', '?')} · pyzmq "
        f"{env['pyzmq']} / libzmq {env['libzmq']} · msgpack {env['msgpack']} · redis-py "
        f"{env.get('redis_py', 'n/a')} (server {env.get('redis_server', 'n/a')}) · py-lmdb "
        f"{env.get('lmdb', 'n/a')} · psycopg {env.get('psycopg', 'n/a')} (PostgreSQL "
        f"{env.get('postgres_server', 'n/a')})",
        f"{env.get('cpu', '?')} · {env['cpu_count']} cores ({env['cpu_affinity']} usable) · "
        f"load average {load} at start, {load_end} at end",
        f"N = {cfg['records']:,} records of {doc['record_bytes']} B msgpack · median of "
        f"{cfg['repeats']} repeats, round-robin, ~{cfg['seconds']} s each · bulk "
        f"{cfg['bulk_records']:,} · task claim {cfg['tasks']:,} tasks × "
        f"{workloads.CLAIM_WORKERS} workers (claimbig: in a table of {cfg['big_records']:,}; "
        f"range: {workloads.RANGE_HITS} of {cfg['big_records']:,}) · readers "
        f"{cfg['window']} s windows, writer "
        f"{workloads.WRITE_RATE:.0f} writes/s · durable {cfg['durable_records']:,} records · "
        f"restart {cfg['restart_records']:,} records",
        "stateengine server: python -m stateengine serve --store none (durable rows: --store "
        "log --fsync <policy>; always again with STATEENGINE_PURE_PYTHON=1), its own process, "
        f"ipc://, write path {env.get('write_path', '?')}; PostgreSQL sessions run with "
        "synchronous_commit = off",
    ]
    lines += [f"setup: {s}" for s in doc.get("notes", [])]
    lines += [f"skipped: {s}" for s in doc["skipped"]]
    cores = env["cpu_affinity"] or env["cpu_count"] or 1
    if env["loadavg_start"][0] > 0.5 * cores:
        lines.append(
            f"WARNING: the machine was busy before the run (load {env['loadavg_start'][0]:.2f} on "
            f"{cores} cores): absolute figures are noisy; ratios within the run less so"
        )
    return lines


def restart_rows(tmp: Path, n: int, stack: contextlib.ExitStack) -> list[Row]:
    """A data dir holding a snapshot of *n* records; each repeat starts a server on it.

    ``restart_server`` is the time from launching ``python -m stateengine serve --store
    log`` until it answers a request (snapshot loaded, every record in the arena);
    ``restart_store`` is the store's ``recover`` alone, in this process.
    """
    byte_compile()
    data = tmp / "restart"
    data.mkdir(mode=0o700)  # a data directory must be private
    engine = big_engine(n)
    store = open_store(data, "log", "always", snapshot_mode="inline")
    assert isinstance(store, LogStore)
    store.recover(TableEngine())
    store.snapshot(engine)
    store.close()
    del engine

    def start_server() -> tuple[float, int]:
        proc = ServerProcess(data, "--store", "log", start_timeout=RESTART_TIMEOUT)
        stack.callback(proc.cleanup)
        t0 = time.perf_counter()
        try:
            proc.start()
            # server.json appears once every record is in the arena; the restart is over
            # when the server answers a request.
            with Client(proc.endpoint, timeout=RESTART_TIMEOUT) as c:
                size = c.get_state_info("t")["size"]
            elapsed = time.perf_counter() - t0
            if size != n:
                raise RuntimeError(f"restart: {size} records, expected {n}")
        finally:
            proc.stop(RESTART_TIMEOUT)
            proc.cleanup()
        return elapsed * 1e6, 1

    def recover() -> tuple[float, int]:
        t0 = time.perf_counter()
        s = open_store(data, "log")
        report_ = s.recover(TableEngine())
        elapsed = time.perf_counter() - t0
        s.close()
        if report_.records != n:
            raise RuntimeError(f"store recover: {report_.records} records, expected {n}")
        return elapsed * 1e6, 1

    return [
        Row(
            "restart_server",
            "",
            lambda k: None,
            window=start_server,
            system=f"stateengine: server start → first reply, {n:,} records",
            max_repeats=RESTART_REPEATS,
        ),
        Row(
            "restart_store",
            "",
            lambda k: None,
            window=recover,
            system=f"stateengine: log store recover alone, {n:,} records",
            max_repeats=RESTART_REPEATS,
        ),
    ]


def run(args: argparse.Namespace, cfg: Config, only: set[str]) -> dict[str, Any]:
    """Set up what the chosen workloads need, measure, and return the result document."""
    t_start = time.monotonic()
    load_start = list(os.getloadavg())
    skipped: list[str] = []
    notes: list[str] = []  # setup figures kept out of the rows (fills of big tables)
    rows: list[Row] = []
    n = cfg.records
    prefix = f"stateengine-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}:"
    need_writes = bool(only & {"write1", "write100", "batch"})

    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="se-bench-"))  # on disk: fsync is real
        stack.callback(shutil.rmtree, tmp, True)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        stack.callback(ctx.destroy, 0)
        children = server.Children()
        stack.callback(children.close)

        srv = ServerProcess(tmp / "data", "--store", "none", start_timeout=server.START_TIMEOUT)
        children.servers.append(srv)
        srv.start()
        client = stack.enter_context(srv.connect(timeout=60))
        server.preload(client, n)
        reader = ArenaReader.attach(str(srv.info["arena"]))
        stack.callback(reader.close)
        arena_client = stack.enter_context(Client(srv.endpoint, srv.data_dir, timeout=60))
        socket_client = stack.enter_context(Client(srv.endpoint, timeout=60))

        redis_conn: Any = None
        if only & {"get", "write1", "batch", "bulk", "wake"} or only & CLAIM_WORKLOADS:
            redis_list, redis_conn, why = server.redis_rows(n, prefix)
            if why:
                skipped.append(f"Redis rows: {why}")
            else:
                stack.callback(server.redis_cleanup, redis_conn, n, prefix)
                rows += redis_list
                if "bulk" in only:
                    rows.append(workloads.redis_bulk_row(redis_conn, prefix, cfg.bulk_records))
                    stack.callback(
                        server.redis_cleanup, redis_conn, cfg.bulk_records, f"{prefix}bulk:"
                    )
        pg_dsn, why = workloads.postgres_dsn() if only & CLAIM_WORKLOADS else (None, "")
        if why:
            skipped.append(f"PostgreSQL rows: {why}")
        if os.environ.get("CI") == "true" and skipped:
            # Under CI the local Redis and PostgreSQL are part of the contract: a row that
            # silently disappeared there would let the comparison rot unnoticed.
            raise RuntimeError(
                "under CI=true Redis and PostgreSQL must answer: " + "; ".join(skipped)
            )

        if only & {"get", "reread"}:
            rows += workloads.floor_rows(reader, n)
            rows += server.arena_rows(arena_client, reader, n)
            rows += workloads.arena_reread_rows(reader, n)
            # Gets of unchanged records: catch up with the other rows' writes untimed.
            for row in rows:
                if row.key in ("get_arena_raw", "reread_arena_cached", "reread_arena_get"):
                    row.setup = lambda: reader.get(TABLE, 1)
                elif row.key == "get_arena":
                    row.setup = lambda: arena_client.get_record(TABLE, 1)
        if only & {"get", "write1", "write100", "batch"}:
            body = server.pack({**server.patch_request(0, n), "req_id": 1})
            rows += server.stateengine_rows(ctx, client, socket_client, srv.endpoint, n)
        if "get" in only:
            lmdb_list, env, why = workloads.lmdb_read_rows(tmp, n)
            if why:
                skipped.append(f"LMDB rows: {why}")
            else:
                stack.callback(env.close)
                rows += lmdb_list
        if only & {"write1", "bulk"}:
            lmdb_list, env, why = workloads.lmdb_write_rows(tmp, cfg.bulk_records)
            if why:
                skipped.append(f"LMDB rows: {why}")
            else:
                stack.callback(env.close)
                rows += lmdb_list
        if only & {"get", "write1", "bulk"}:
            manager_list, manager = workloads.manager_rows(cfg.bulk_records)
            stack.callback(manager.shutdown)
            rows += manager_list
        if need_writes:
            ep_poll = f"ipc://{tmp}/echo-poll.sock"
            ep_async = f"ipc://{tmp}/echo-asyncio.sock"
            p_poll = children.spawn("--role", "echo-poll", "--endpoint", ep_poll)
            p_async = children.spawn("--role", "echo-asyncio", "--endpoint", ep_async)
            server.wait_echo(ctx, ep_poll, p_poll)
            server.wait_echo(ctx, ep_async, p_async)
            rows += server.echo_rows(ctx, ep_poll, "poll", body)
            rows += server.echo_rows(ctx, ep_async, "asyncio", body)
            pair_row, pair = server.socketpair_row(children, len(body))
            stack.callback(pair.close)
            rows.append(pair_row)
        if "bulk" in only:
            rows += workloads.bulk_rows(client, cfg.bulk_records)
        if only & PURE_WORKLOADS:
            rows += pure_write_rows(stack, ctx, children, tmp, n, cfg.bulk_records, only)
        if "readers" in only:
            reader_list, pools = workloads.readers_rows(
                str(srv.info["arena"]), srv.endpoint, n, cfg.window
            )
            for pool in pools:
                stack.callback(pool.close)
            rows += reader_list
        if "range" in only:  # before the claim workers start: its fills take minutes
            rng_srv = ServerProcess(
                tmp / "data-range", "--store", "none", start_timeout=server.START_TIMEOUT
            )
            children.servers.append(rng_srv)
            rng_srv.start()
            ranges = workloads.RangeBench(
                stack.enter_context(Client(rng_srv.endpoint, timeout=RESTART_TIMEOUT)),
                stack.enter_context(
                    Client(rng_srv.endpoint, rng_srv.data_dir, timeout=RESTART_TIMEOUT)
                ),
                cfg.big_records,
                notes,
            )
            rows += ranges.rows()
        if only & CLAIM_WORKLOADS:
            rows += claim_rows(stack, children, tmp, cfg, only, redis_conn, prefix, pg_dsn, notes)
        if only & {"wake", "parkedwrite"}:
            rows += wake_rows(stack, children, tmp, cfg, only, redis_conn, prefix)
        if "durable" in only:
            rows += durable(stack, ctx, children, tmp, srv, cfg, skipped)
        if "restart" in only:
            rows += restart_rows(tmp, cfg.restart_records, stack)
        if only & cluster.WORKLOADS:
            cluster_list, why = cluster.cluster_rows(tmp, stack, children, cfg.tasks, only)
            if why:
                skipped.append(f"cluster rows: {why}")
            rows += cluster_list

        rows = [r for r in report.label_rows(rows) if r.workload in only]
        env_doc = environment(redis_conn, pg_dsn)
        env_doc["loadavg_start"] = load_start
        for row in rows:
            calibrate(row, cfg.seconds, server.WINDOW)
        measure(rows, cfg.repeats)
        env_doc["loadavg_end"] = list(os.getloadavg())

    by_key = {r.key: r for r in rows}
    row_docs = [report.row_doc(r, by_key) for r in rows]
    config = asdict(cfg)
    doc: dict[str, Any] = {
        "suite": 1,
        "mode": cfg.mode,
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "environment": env_doc,
        "config": config,
        "record_bytes": len(server.pack(record(0))),
        "skipped": skipped,
        "notes": notes,
        "rows": row_docs,
        "targets": report.targets(row_docs, config),
        "elapsed_s": time.monotonic() - t_start,
    }
    return doc


def claim_rows(
    stack: contextlib.ExitStack,
    children: server.Children,
    tmp: Path,
    cfg: Config,
    only: set[str],
    redis_conn: Any,
    prefix: str,
    pg_dsn: str | None,
    notes: list[str],
) -> list[Row]:
    """The claim workloads on a server of their own, sharing one pool of worker processes.

    Their own server keeps a 10^6-record table out of the other rows' writer, and puts the
    10^4- and 10^6-record claim rows on the same one, so their ratio is the table's size.
    """
    srv = ServerProcess(tmp / "data-tasks", "--store", "none", start_timeout=server.START_TIMEOUT)
    children.servers.append(srv)
    srv.start()
    client = stack.enter_context(Client(srv.endpoint, timeout=RESTART_TIMEOUT))
    pool = workloads.claim_pool(srv.endpoint, pg_dsn)
    stack.callback(pool.close)
    specs = {
        "claim": workloads.ClaimSpec("claim", cfg.tasks, cfg.tasks),
        "claimbig": workloads.ClaimSpec("claimbig", cfg.tasks, max(cfg.big_records, cfg.tasks)),
        "pqueue": workloads.ClaimSpec("pqueue", cfg.tasks, cfg.tasks, "priority"),
    }
    rows: list[Row] = []
    for name, spec in specs.items():
        if name not in only:
            continue
        # A big table is filled in its rows' first (warm-up) run: its figures go to notes.
        bench = workloads.ClaimBench(client, pool, redis_conn, prefix, pg_dsn, spec, notes)
        stack.callback(bench.close)
        rows += bench.rows()
    return rows


def wake_rows(
    stack: contextlib.ExitStack,
    children: server.Children,
    tmp: Path,
    cfg: Config,
    only: set[str],
    redis_conn: Any,
    prefix: str,
) -> list[Row]:
    """The blocking-claim rows, each on a server of its own: the claims parked by one
    must not show in the other's ``STATS`` count (nor load its writer)."""

    def start(name: str) -> tuple[ServerProcess, Client]:
        srv = ServerProcess(tmp / name, "--store", "none", start_timeout=server.START_TIMEOUT)
        children.servers.append(srv)
        srv.start()
        return srv, stack.enter_context(Client(srv.endpoint, timeout=60))

    rows: list[Row] = []
    if "wake" in only:
        srv, client = start("data-wake")
        wake = workloads.WakeBench(client, srv.endpoint, redis_conn, prefix, cfg.wakes)
        stack.callback(wake.close)
        rows += wake.rows()
    if "parkedwrite" in only:
        srv, client = start("data-parked")
        _, idle = start("data-unparked")
        parked = workloads.ParkedWriteBench(client, srv.endpoint, idle, cfg.wakes)
        stack.callback(parked.close)
        rows += parked.rows()
    return rows


# The write rows measured again on a server running the pure-Python write path
# (STATEENGINE_PURE_PYTHON=1: shm/blocks.py instead of shm/_speedups.c), in the same run,
# each compared with its compiled row (issue 17: "the write rows on both paths").
PURE_WORKLOADS = {"write1", "write100", "batch", "bulk"}
PURE_ROWS = {
    "write_one": "write1",
    "write_inflight": "write100",
    "write_batch": "batch",
    "bulk_set_state": "bulk",
    "bulk_batch": "bulk",
}


def pure_write_rows(
    stack: contextlib.ExitStack,
    ctx: zmq.Context[zmq.Socket[bytes]],
    children: server.Children,
    tmp: Path,
    n: int,
    bulk_records: int,
    only: set[str],
) -> list[Row]:
    """The client write rows against a second `--store none` server on the pure path."""
    pure = ServerProcess(
        tmp / "data-pure",
        "--store",
        "none",
        env={server.PURE_ENV: "1"},
        start_timeout=server.START_TIMEOUT,
    )
    children.servers.append(pure)
    pure.start()
    client = stack.enter_context(pure.connect(timeout=60))
    server.preload(client, n)
    socket_client = stack.enter_context(Client(pure.endpoint, timeout=60))
    rows = server.stateengine_rows(ctx, client, socket_client, pure.endpoint, n)
    if "bulk" in only:
        rows += workloads.bulk_rows(client, bulk_records)
    out = []
    for row in rows:
        if PURE_ROWS.get(row.key) in only:
            row.key += "_pure"
            out.append(row)
    return out


def durable(
    stack: contextlib.ExitStack,
    ctx: zmq.Context[zmq.Socket[bytes]],
    children: server.Children,
    tmp: Path,
    srv: ServerProcess,
    cfg: Config,
    skipped: list[str],
) -> list[Row]:
    """One server per fsync policy, 8 writer processes × 16 in flight, py-lmdb sync=True."""
    dn = min(cfg.durable_records, cfg.records)
    clients: dict[str, Client] = {}
    endpoints: dict[str, str] = {}
    for policy in server.FSYNC_POLICIES:
        d = ServerProcess(
            tmp / f"data-{policy}",
            "--store",
            "log",
            "--fsync",
            policy,
            start_timeout=server.START_TIMEOUT,
        )
        children.servers.append(d)
        d.start()
        c = stack.enter_context(Client(d.endpoint, timeout=60))
        server.preload(c, dn)
        clients[policy] = c
        endpoints[policy] = d.endpoint
    # fsync always again on the pure-Python write path (shm/blocks.py): the target
    # "compiled ≥ 2× pure" compares its pool row with the compiled one (bench/report.py)
    pure = ServerProcess(
        tmp / "data-always-pure",
        "--store",
        "log",
        "--fsync",
        "always",
        env={server.PURE_ENV: "1"},
        start_timeout=server.START_TIMEOUT,
    )
    children.servers.append(pure)
    pure.start()
    server.preload(stack.enter_context(Client(pure.endpoint, timeout=60)), dn)
    endpoints[server.PURE_POOL] = pure.endpoint
    endpoints["none"] = srv.endpoint
    pool = server.WriterPool(
        ctx, children, f"ipc://{tmp}/writers.sock", list(endpoints.values()), dn
    )
    stack.callback(pool.close)
    index = {name: i for i, name in enumerate(endpoints)}
    rows = server.durable_rows(clients, pool, index, max(cfg.seconds, 0.1), dn)
    lmdb_list, env, why = server.lmdb_rows(tmp / "lmdb-sync", dn, max(cfg.seconds, 0.1))
    if why:
        skipped.append(f"LMDB rows: {why}")
    else:
        stack.callback(env.close)
        rows += lmdb_list
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="about a minute")
    mode.add_argument("--smoke", action="store_true", help="tiniest run (the smoke test's)")
    parser.add_argument("--repeats", type=int, help="repeats per row (full 7, quick 5)")
    parser.add_argument("--records", type=int, help="N records (default 10^5)")
    parser.add_argument(
        "--only", help=f"comma-separated workloads out of: {','.join(report.WORKLOAD_NAMES)}"
    )
    parser.add_argument("--json", type=Path, help="result file (default bench/results/...)")
    parser.add_argument("--chart", type=Path, help="also draw the targets as a PNG")
    parser.add_argument("--markdown", action="store_true", help="also print the README table")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"))
    args = parser.parse_args(argv)

    if args.compare:
        print("\n".join(report.compare(*args.compare)))
        return 0
    cfg = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.records:
        cfg.records = args.records
        cfg.bulk_records = min(cfg.bulk_records, args.records)
    if args.repeats:
        if args.repeats < 5 and not args.smoke:
            parser.error("--repeats: at least 5 (medians of fewer say little); --smoke uses 2")
        cfg.repeats = args.repeats
    only = set(report.WORKLOAD_NAMES)
    if args.only:
        only = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = only - set(report.WORKLOAD_NAMES)
        if unknown:
            parser.error(f"unknown workloads {sorted(unknown)}; known: {report.WORKLOAD_NAMES}")
    with server.sigterm_as_exit():
        doc = run(args, cfg, only)
    print("\n".join(header(doc)), flush=True)
    print()
    print("\n".join(report.render(doc)))
    if args.markdown:
        print()
        print("\n".join(report.markdown(doc)))
    out = args.json or HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.mode}.json"
    report.write_json(doc, out)
    print(f"\nresults: {out}  ({doc['elapsed_s']:.1f} s)")
    if args.chart:
        print(report.chart(doc, args.chart))
    return 0
