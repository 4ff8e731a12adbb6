"""The suite's results model and its outputs: the table, the targets, JSON, compare, chart.

A result document (what ``--json`` writes and ``--compare`` reads) is plain JSON::

    {"suite": 1, "mode": ..., "command": ..., "date": ..., "environment": {...},
     "config": {...}, "skipped": [...], "notes": [...],
     "rows": [{"key", "workload", "system", "unit", "median_us", "min_us", "max_us",
               "rate", "repeats", "ops", "samples_us", "ref", "ratio"}, ...],
     "targets": [{"target", "status", "value", "limit", "cmp", "detail"}, ...]}

Every figure is kept as time per operation (µs); ``unit`` only says how the table shows
it: ``us`` as µs/op, ``/s`` as operations/s, ``s`` as seconds per run.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Row


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    ref: str  # the row each row of the workload is compared with (its floor/alternative)


WORKLOADS: list[Workload] = [
    Workload("get", "get a record from another process", "floor_copy_unpackb"),
    Workload("reread", "re-read of an unchanged record", "reread_floor_dict"),
    Workload("write1", "one acknowledged write at a time", "echo_poll_req"),
    Workload("write100", "100 writes in flight", "echo_poll_dealer100"),
    Workload("batch", "BATCH of 100 writes per frame", "redis_set_pipe"),
    Workload("bulk", "bulk load of N records (records/s)", "bulk_redis"),
    Workload("readers", "arena readers during a steady write load (gets/s)", "readers_1"),
    Workload("claim", "task claim: claim + complete (tasks/s)", "claim_redis"),
    Workload(
        "claimbig",
        "task claim from a big table, the finished tasks ahead (tasks/s)",
        "claimbig_redis",
    ),
    Workload("pqueue", "priority queue: claim the lowest priority + complete", "pqueue_redis"),
    Workload("wake", "blocking claim: a parked worker woken by a write", "wake_stateengine_write"),
    Workload("parkedwrite", "one write with 50 claims parked on its table", "parkedwrite_none"),
    Workload("range", "range LIST_RECORDS of 100 records out of a big table", "range_indexed"),
    Workload("durable", "durable writes per fsync policy", "durable_pool_no"),
    Workload("restart", "restart with N records on disk", "restart_server"),
    Workload(
        "cluster",
        "writes through a 1-node cluster vs a single server, both fsynced (writes/s)",
        "cluster_single_inflight",
    ),
    Workload(
        "cluster3",
        "3 nodes of one cluster on this machine, 100 in flight each (writes/s, all nodes)",
        "cluster_write_inflight",
    ),
    Workload(
        "catchup",
        "a stopped node catching up with the entries appended meanwhile (entries/s)",
        "cluster_write_one",
    ),
    Workload(
        "xclaim",
        "claim + complete, one worker: tasks made on node A, claimed on node B (tasks/s)",
        "xclaim_single",
    ),
    Workload(
        "stream",
        "the limit of one stream: XADD to one Redis, AOF always (entries/s)",
        "stream_xadd_one",
    ),
]
WORKLOAD_NAMES = [w.name for w in WORKLOADS]

# Which workload each row belongs to, and (for rows built by bench/server.py) the
# system column; a row not named here keeps the system its builder gave it.
ROWS: dict[str, tuple[str, str | None]] = {
    "floor_dict": ("get", None),
    "floor_copy_unpackb": ("get", None),
    "get_arena_raw": ("get", "stateengine: raw ArenaReader.get"),
    "get_arena": ("get", "stateengine: client.get_record via the arena"),
    "get_socket": ("get", "stateengine: client.get_record over the socket"),
    "get_lmdb": ("get", None),
    "get_manager": ("get", None),
    "redis_get": ("get", "redis-py GET"),
    "reread_floor_dict": ("reread", None),
    "reread_arena_cached": ("reread", None),
    "reread_arena_get": ("reread", None),
    "socketpair": ("write1", "floor: socketpair ping-pong"),
    "echo_poll_req": ("write1", "floor: ZMQ REQ→ROUTER echo (poll loop)"),
    "echo_asyncio_req": ("write1", "floor: ZMQ REQ→ROUTER echo (asyncio+uvloop)"),
    "write_one": ("write1", "stateengine: client.patch_record"),
    "write_one_raw": ("write1", "stateengine: raw REQ, pre-encoded PATCH_RECORD"),
    "redis_set": ("write1", "redis-py SET"),
    "write_one_manager": ("write1", None),
    "write_one_lmdb_nosync": ("write1", None),
    "echo_poll_dealer100": ("write100", "floor: ZMQ DEALER echo, 100 in flight (poll)"),
    "echo_asyncio_dealer100": ("write100", "floor: ZMQ DEALER echo, 100 in flight (asyncio)"),
    "write_inflight": ("write100", "stateengine: client.send_many of 100"),
    "write_inflight_raw": ("write100", "stateengine: raw DEALER, 100 pre-encoded"),
    "write_batch": ("batch", "stateengine: client.batch of 100"),
    "redis_set_pipe": ("batch", "redis-py SET, pipelined 100"),
    "bulk_set_state": ("bulk", None),
    "bulk_batch": ("bulk", None),
    **{
        f"{k}_pure": (w, f"{label}, pure-Python write path")
        for k, w, label in (
            ("write_one", "write1", "stateengine: client.patch_record"),
            ("write_inflight", "write100", "stateengine: client.send_many of 100"),
            ("write_batch", "batch", "stateengine: client.batch of 100"),
            ("bulk_set_state", "bulk", "stateengine: SET_STATE"),
            ("bulk_batch", "bulk", "stateengine: BATCH of 1000"),
        )
    },
    "bulk_redis": ("bulk", None),
    "bulk_lmdb": ("bulk", None),
    "bulk_manager": ("bulk", None),
    **{f"readers_{k}": ("readers", None) for k in (1, 2, 4)},
    **{f"readers_spin_{k}": ("readers", None) for k in (1, 2, 4)},
    "claim_stateengine": ("claim", None),
    "claim_redis": ("claim", None),
    "claim_postgres": ("claim", None),
    **{f"claimbig_{s}": ("claimbig", None) for s in ("stateengine", "redis", "postgres")},
    **{f"pqueue_{s}": ("pqueue", None) for s in ("stateengine", "redis", "postgres")},
    "wake_stateengine": ("wake", "stateengine: create_record → claim_record(wait=5) returns"),
    "wake_stateengine_write": ("wake", "stateengine: create_record round trip, nobody waiting"),
    "wake_redis": ("wake", "Redis: LPUSH → BLMOVE returns"),
    "wake_redis_write": ("wake", "Redis: LPUSH round trip, nobody waiting"),
    "parkedwrite_50": ("parkedwrite", "stateengine: create_record, 50 claims parked"),
    "parkedwrite_none": ("parkedwrite", "stateengine: create_record, none parked"),
    **{
        f"range_{s}": ("range", None)
        for s in ("indexed", "scan", "client", "arena", "byid", "byid_batch")
    },
    **{
        f"durable_one_{p}": ("durable", f"stateengine fsync {p}: patch_record, 1 in flight")
        for p in ("always", "everysec", "no")
    },
    **{
        f"durable_pool_{p}": ("durable", f"stateengine fsync {p}: 8 writers × 16 in flight")
        for p in ("always", "everysec", "no")
    },
    "durable_pool_none": ("durable", "stateengine store none: 8 writers × 16 in flight"),
    "durable_pool_always_pure": (
        "durable",
        "stateengine fsync always, pure-Python write path: 8 writers × 16 in flight",
    ),
    "lmdb_sync_put": ("durable", "py-lmdb put, sync=True, 1 per txn"),
    "lmdb_sync_txn": ("durable", "py-lmdb put, sync=True, 16 per txn"),
    "restart_server": ("restart", None),
    "restart_store": ("restart", None),
    "cluster_single_one": ("cluster", "single server (log, fsync always): 1 in flight"),
    "cluster_write_one": ("cluster", "1-node cluster (Redis AOF always): 1 in flight"),
    "cluster_single_inflight": (
        "cluster",
        "single server (log, fsync always): 100 in flight (send_many)",
    ),
    "cluster_write_inflight": (
        "cluster",
        "1-node cluster (Redis AOF always): 100 in flight (send_many)",
    ),
    "cluster3_inflight": ("cluster3", "3-node cluster: 3 clients × 100 in flight, total"),
    "catchup_node": ("catchup", "node after SIGCONT until sync() returns"),
    "xclaim_nodes": ("xclaim", "cluster: create on node A, claim + patch on node B"),
    "xclaim_single": ("xclaim", "single server (log, fsync always): the same loop"),
    "stream_xadd_one": ("stream", "redis-py XADD, one at a time"),
    "stream_xadd_pipe": ("stream", "redis-py XADD, pipelined 100"),
}
# Rows compared with another row than their workload's reference.
REFS: dict[str, str] = {
    **{f"readers_spin_{k}": "readers_spin_1" for k in (1, 2, 4)},
    **{f"durable_one_{p}": "durable_one_no" for p in ("always", "everysec", "no")},
    "lmdb_sync_put": "durable_one_always",
    "lmdb_sync_txn": "durable_pool_always",
    "restart_store": "restart_store",
    "wake_redis": "wake_redis_write",
    "wake_redis_write": "wake_redis_write",
    "cluster_write_one": "cluster_single_one",
    "cluster_single_one": "cluster_single_one",
    # each pure-Python write row against the same row on the compiled path
    **{
        f"{k}_pure": k
        for k in ("write_one", "write_inflight", "write_batch", "bulk_set_state", "bulk_batch")
    },
}
# Rows shown as a rate or as seconds rather than µs/op.
UNITS: dict[str, str] = {
    **{
        k: "/s"
        for k, (w, _) in ROWS.items()
        if w
        in (
            "bulk",
            "readers",
            "claim",
            "claimbig",
            "pqueue",
            "cluster",
            "cluster3",
            "catchup",
            "xclaim",
            "stream",
        )
    },
    **{f"durable_pool_{p}": "/s" for p in ("always", "everysec", "no", "none", "always_pure")},
    "restart_server": "s",
    "restart_store": "s",
}


def label_rows(rows: list[Row]) -> list[Row]:
    """Give every row its workload, system and unit; return them in the table's order."""
    for row in rows:
        workload, system = ROWS[row.key]
        row.workload = workload
        row.system = system or row.system or row.label
        row.unit = UNITS.get(row.key, row.unit)
    order = {key: i for i, key in enumerate(ROWS)}
    return sorted(rows, key=lambda r: order[r.key])


def row_doc(row: Row, by_key: dict[str, Row]) -> dict[str, Any]:
    ref = REFS.get(row.key) or next(w.ref for w in WORKLOADS if w.name == row.workload)
    other = by_key.get(ref)
    ratio = None
    if other is not None:
        ratio = row.us / other.us if row.unit != "/s" else other.us / row.us
    return {
        "key": row.key,
        "workload": row.workload,
        "system": row.system,
        "unit": row.unit,
        "median_us": row.us,
        "min_us": min(row.samples_us),
        "max_us": max(row.samples_us),
        "rate": 1e6 / row.us,
        "repeats": len(row.samples_us),
        "ops": row.ops,
        "samples_us": row.samples_us,
        "ref": ref if ratio is not None else None,
        "ratio": ratio,
    }


# --- targets -----------------------------------------------------------------------------------


def _t(name: str, value: float | None, limit: float, cmp: str, detail: str) -> dict[str, Any]:
    if value is None:
        return {
            "target": name,
            "status": "SKIP",
            "value": None,
            "limit": limit,
            "cmp": cmp,
            "detail": detail,
        }
    ok = value <= limit if cmp == "<=" else value >= limit if cmp == ">=" else value > limit
    return {
        "target": name,
        "status": "PASS" if ok else "MISS",
        "value": value,
        "limit": limit,
        "cmp": cmp,
        "detail": detail,
    }


def targets(rows: list[dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 7 (and issue 5's LMDB one, and issue 16's claim and range
    ones), measured against this run."""
    us = {r["key"]: r["median_us"] for r in rows}

    def ratio(a: str, b: str) -> float | None:
        return us[a] / us[b] if a in us and b in us else None

    def fmt(key: str) -> str:
        if key not in us:
            return f"{key}: not measured"
        r = next(r for r in rows if r["key"] == key)
        return f"{r['system']} {show(r)}"

    out = [
        _t(
            "arena get ≤ 1.2× floor (bytes copy + unpackb)",
            ratio("get_arena", "floor_copy_unpackb"),
            1.2,
            "<=",
            f"{fmt('get_arena')} / {fmt('floor_copy_unpackb')}; raw ArenaReader.get "
            f"{_x(ratio('get_arena_raw', 'floor_copy_unpackb'))}",
        ),
        _t(
            "arena get faster than py-lmdb get",
            ratio("get_lmdb", "get_arena"),
            1.0,
            ">",
            f"{fmt('get_lmdb')} / {fmt('get_arena')} (times faster)",
        ),
        _t(
            "cached re-read ≤ 1 µs",
            us.get("reread_arena_cached"),
            1.0,
            "<=",
            fmt("reread_arena_cached"),
        ),
        _t(
            "one write ≤ 1.3× ZMQ REQ echo",
            ratio("write_one", "echo_poll_req"),
            1.3,
            "<=",
            f"{fmt('write_one')} / {fmt('echo_poll_req')}; raw REQ write "
            f"{_x(ratio('write_one_raw', 'echo_poll_req'))}",
        ),
        _t(
            "one write faster than Redis SET",
            ratio("redis_set", "write_one"),
            1.0,
            ">",
            f"{fmt('redis_set')} / {fmt('write_one')} (times faster)",
        ),
        _t(
            "100 in flight ≤ 1.5× DEALER echo",
            ratio("write_inflight", "echo_poll_dealer100"),
            1.5,
            "<=",
            f"{fmt('write_inflight')} / {fmt('echo_poll_dealer100')}; raw DEALER "
            f"writes {_x(ratio('write_inflight_raw', 'echo_poll_dealer100'))}",
        ),
        _t(
            "BATCH of 100 ≥ 1.5× Redis pipelined SET",
            ratio("redis_set_pipe", "write_batch"),
            1.5,
            ">=",
            f"writes/s of {fmt('write_batch')} / {fmt('redis_set_pipe')}",
        ),
        _t(
            "worker get ≥ 25× faster than Redis GET",
            ratio("redis_get", "get_arena"),
            25.0,
            ">=",
            f"{fmt('redis_get')} / {fmt('get_arena')}",
        ),
        _t(
            "2 readers ≥ 1.6× one",
            ratio("readers_1", "readers_2"),
            1.6,
            ">=",
            f"gets/s {fmt('readers_2')} / {fmt('readers_1')}; the machine's own pure-Python "
            f"loop: {_x(ratio('readers_spin_1', 'readers_spin_2'))}",
        ),
        _t(
            "bulk SET_STATE ≥ 300k records/s",
            _rate(us.get("bulk_set_state")),
            300_000,
            ">=",
            fmt("bulk_set_state"),
        ),
        _t(
            "bulk SET_STATE ≥ 3× Redis SET pipelined 1000",
            ratio("bulk_redis", "bulk_set_state"),
            3.0,
            ">=",
            f"records/s {fmt('bulk_set_state')} / {fmt('bulk_redis')}",
        ),
        _t(
            "BATCH of 1000 ≥ 2× Redis SET pipelined 1000",
            ratio("bulk_redis", "bulk_batch"),
            2.0,
            ">=",
            f"records/s {fmt('bulk_batch')} / {fmt('bulk_redis')}",
        ),
        _t(
            "fsync always ≥ 0.7× no under 8 × 16 writers",
            ratio("durable_pool_no", "durable_pool_always"),
            0.7,
            ">=",
            f"{fmt('durable_pool_always')} / {fmt('durable_pool_no')}",
        ),
        _t(
            "fsync always ≥ 3× py-lmdb put sync=True (issue 5)",
            ratio("lmdb_sync_put", "durable_pool_always"),
            3.0,
            ">=",
            f"{fmt('durable_pool_always')} / {fmt('lmdb_sync_put')}",
        ),
        _t(
            "compiled path ≥ 2× pure Python under 8 × 16 writers, fsync always",
            ratio("durable_pool_always_pure", "durable_pool_always"),
            2.0,
            ">=",
            f"{fmt('durable_pool_always')} / {fmt('durable_pool_always_pure')} "
            "(STATEENGINE_PURE_PYTHON=1); the C loops build the blocks only: a one-record "
            "write's fixed cost and the fsync stay (docs/benchmarks.md)",
        ),
        _t(
            "1-node cluster ≥ 0.5× a single server's writes/s, 100 in flight (issue 19)",
            ratio("cluster_single_inflight", "cluster_write_inflight"),
            0.5,
            ">=",
            f"{fmt('cluster_write_inflight')} / {fmt('cluster_single_inflight')}; 1 in flight "
            f"{_x(ratio('cluster_single_one', 'cluster_write_one'))}",
        ),
    ]
    restart = us.get("restart_server")
    n = config.get("restart_records", 0)
    if restart is not None and n != 1_000_000:
        out.append(
            _t(
                "restart of 10⁶ records ≤ 10 s",
                None,
                10.0,
                "<=",
                f"measured {restart / 1e6:.2f} s with {n:,} records: the target needs the full "
                "mode (10⁶)",
            )
        )
    else:
        out.append(
            _t(
                "restart of 10⁶ records ≤ 10 s",
                None if restart is None else restart / 1e6,
                10.0,
                "<=",
                fmt("restart_server") + f"; the store alone: {fmt('restart_store')}",
            )
        )
    out.append(
        _t(
            "restart ≤ 1.5× the store's recover alone",
            ratio("restart_server", "restart_store"),
            1.5,
            "<=",
            f"{fmt('restart_server')} / {fmt('restart_store')} ({n:,} records; the server's "
            "time includes its interpreter's start and imports)",
        )
    )
    return out + claim_targets(rows)


def claim_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 16's "Must show" targets for the claim, wake and range rows of this run (the big
    table holds ``big_records``: 10^6 in the full mode)."""
    us = {r["key"]: r["median_us"] for r in rows}
    shown = {r["key"]: f"{r['system']} {show(r)}" for r in rows}

    def faster(slow: str, fast: str) -> float | None:
        return us[slow] / us[fast] if slow in us and fast in us else None

    def fmt(key: str) -> str:
        return shown.get(key, f"{key}: not measured")

    out = []
    for w, label in (("claim", "table of the tasks alone"), ("claimbig", "big table")):
        out.append(
            _t(
                f"claim ≥ 1.5× Redis LMOVE ({label})",
                faster(f"{w}_redis", f"{w}_stateengine"),
                1.5,
                ">=",
                f"tasks/s {fmt(f'{w}_stateengine')} / {fmt(f'{w}_redis')}",
            )
        )
        out.append(
            _t(
                f"claim ≥ 2× PostgreSQL SKIP LOCKED ({label})",
                faster(f"{w}_postgres", f"{w}_stateengine"),
                2.0,
                ">=",
                f"tasks/s {fmt(f'{w}_stateengine')} / {fmt(f'{w}_postgres')}",
            )
        )
    out.append(
        _t(
            "claim rate from the big table ≥ 0.8× from the tasks alone",
            faster("claim_stateengine", "claimbig_stateengine"),
            0.8,
            ">=",
            f"{fmt('claimbig_stateengine')} / {fmt('claim_stateengine')}",
        )
    )
    out.append(
        _t(
            "blocking-claim wake ≤ 1.5× one acknowledged write",
            faster("wake_stateengine", "wake_stateengine_write"),
            1.5,
            "<=",
            f"{fmt('wake_stateengine')} / {fmt('wake_stateengine_write')}; Redis BLMOVE wake "
            f"{fmt('wake_redis')}, {_x(faster('wake_redis', 'wake_redis_write'))} its LPUSH; "
            f"a write with 50 claims parked {_x(faster('parkedwrite_50', 'parkedwrite_none'))} "
            "one with none",
        )
    )
    out.append(
        _t(
            "range list: index ≥ 100× faster than no index",
            faster("range_scan", "range_indexed"),
            100.0,
            ">=",
            f"on the writer: {fmt('range_scan')} / {fmt('range_indexed')}; "
            f"client.list_records {_x(faster('range_client', 'range_indexed'))} and the "
            f"arena-side list (a scan) {_x(faster('range_arena', 'range_indexed'))} the "
            "writer's indexed one",
        )
    )
    out.append(
        _t(
            "range list with an index ≤ 3× the records by id",
            faster("range_indexed", "range_byid"),
            3.0,
            "<=",
            f"{fmt('range_indexed')} / {fmt('range_byid')}; vs one BATCH of GET_RECORD "
            f"{_x(faster('range_indexed', 'range_byid_batch'))}; the arena-side list "
            f"{_x(faster('range_arena', 'range_byid'))}",
        )
    )
    return out


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _rate(us: float | None) -> float | None:
    return None if us is None else 1e6 / us


def fmt_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M/s"
    return f"{rate / 1e3:.1f} k/s" if rate >= 1e3 else f"{rate:.0f} /s"


def show(r: dict[str, Any]) -> str:
    """A row's median in its unit."""
    if r["unit"] == "/s":
        return fmt_rate(r["rate"])
    if r["unit"] == "s":
        return f"{r['median_us'] / 1e6:.2f} s"
    return f"{r['median_us']:.2f} µs"


def spread(r: dict[str, Any]) -> str:
    if r["unit"] == "/s":
        return f"{fmt_rate(1e6 / r['max_us'])}–{fmt_rate(1e6 / r['min_us'])}"
    if r["unit"] == "s":
        return f"{r['min_us'] / 1e6:.2f}–{r['max_us'] / 1e6:.2f} s"
    return f"{r['min_us']:.2f}–{r['max_us']:.2f}"


def _value(t: dict[str, Any]) -> str:
    if t["value"] is None:
        return "—"
    v = t["value"]
    if "records/s" in t["target"]:
        return fmt_rate(v)
    if "µs" in t["target"]:
        return f"{v:.2f} µs"
    if t["target"].startswith("restart") and "×" not in t["target"]:
        return f"{v:.2f} s"
    return f"{v:.2f}×"


# --- rendering ---------------------------------------------------------------------------------


def render(doc: dict[str, Any]) -> list[str]:
    """The table of medians and ratios, then the targets."""
    rows = doc["rows"]
    width = max([len(r["system"]) for r in rows] + [20])
    lines = [
        f"{'system':{width}}  {'median':>12}  {'spread (min–max)':>24}  {'n':>2}  {'ratio':>8}  vs",
    ]
    lines.append("-" * len(lines[0]))
    for w in WORKLOADS:
        mine = [r for r in rows if r["workload"] == w.name]
        if not mine:
            continue
        lines.append(f"[{w.name}] {w.title}")
        for r in mine:
            ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
            vs = "(ref)" if r["ref"] == r["key"] else (r["ref"] or "")
            lines.append(
                f"{r['system']:{width}}  {show(r):>12}  {spread(r):>24}  {r['repeats']:>2}  "
                f"{ratio:>8}  {vs}"
            )
    lines.append("")
    lines.append(
        "ratio: time per op ÷ the reference row's (µs and s rows: < 1 is faster); "
        "rate ÷ the reference's (/s rows: > 1 is faster)"
    )
    lines.append("")
    lines.append("Targets:")
    tw = max(len(t["target"]) for t in doc["targets"])
    for t in doc["targets"]:
        lines.append(f"  {t['status']:4}  {t['target']:{tw}}  {_value(t):>10}   {t['detail']}")
    return lines


def markdown(doc: dict[str, Any]) -> list[str]:
    """The same table as Markdown, for the README."""
    lines = ["| workload | system | median | spread | ratio | vs |", "|---|---|---:|---:|---:|---|"]
    for w in WORKLOADS:
        for r in (r for r in doc["rows"] if r["workload"] == w.name):
            ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
            vs = "ref" if r["ref"] == r["key"] else (r["ref"] or "")
            lines.append(f"| {w.name} | {r['system']} | {show(r)} | {spread(r)} | {ratio} | {vs} |")
    lines += ["", "| target | measured | status |", "|---|---:|---|"]
    for t in doc["targets"]:
        lines.append(f"| {t['target']} | {_value(t)} | {t['status']} |")
    return lines


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def compare(a_path: Path, b_path: Path) -> list[str]:
    """Per-row ratios B/A of two result files (median time per op; and rate for /s rows)."""
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    rows_a = {r["key"]: r for r in a["rows"]}
    lines = [
        f"{tag}: {path} ({d.get('mode')}, {d.get('date')}, load average "
        f"{' '.join(f'{x:.2f}' for x in d['environment'].get('loadavg_start', []))})"
        for tag, path, d in (("A", a_path, a), ("B", b_path, b))
    ]
    lines.append("")

    def name(r: dict[str, Any]) -> str:
        return f"{r['workload']}: {r['system']}"

    width = max([len(name(r)) for r in [*a["rows"], *b["rows"]]] + [20])
    lines.append(f"{'workload: system':{width}}  {'A':>12}  {'B':>12}  {'B/A':>7}")
    ratios: list[float] = []
    for r in b["rows"]:
        ra = rows_a.get(r["key"])
        if ra is None:
            lines.append(f"{name(r):{width}}  {'—':>12}  {show(r):>12}  (new)")
            continue
        # B/A of the figure shown: time for µs/s rows, rate for /s rows.
        q = (
            r["median_us"] / ra["median_us"]
            if r["unit"] != "/s"
            else ra["median_us"] / r["median_us"]
        )
        ratios.append(r["median_us"] / ra["median_us"])
        lines.append(f"{name(r):{width}}  {show(ra):>12}  {show(r):>12}  {q:6.2f}×")
    for key in rows_a.keys() - {r["key"] for r in b["rows"]}:
        lines.append(f"{name(rows_a[key]):{width}}  {show(rows_a[key]):>12}  {'—':>12}  (gone)")
    if ratios:
        lines.append(
            f"\ngeometric mean of time-per-op ratios B/A over {len(ratios)} rows: "
            f"{statistics.geometric_mean(ratios):.2f}× (< 1: B faster)"
        )
    ta = {t["target"]: t for t in a.get("targets", [])}
    lines.append("\nTargets (A → B):")
    for t in b.get("targets", []):
        old = ta.get(t["target"], {})
        lines.append(
            f"  {old.get('status', '—'):4} {_value(old) if old else '—':>10} → "
            f"{t['status']:4} {_value(t):>10}  {t['target']}"
        )
    return lines


def chart(doc: dict[str, Any], path: Path) -> str:
    """A PNG of every target's headroom (measured ÷ limit, oriented so > 1 passes).

    Needs matplotlib (``pip install -e '.[chart]'``); returns a line saying what was done.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install -e '.[chart]')"
    ts = [t for t in doc["targets"] if t["value"] is not None]
    if not ts:
        return "chart skipped: no target was measured"
    names = [t["target"] for t in ts]
    head = [
        t["value"] / t["limit"] if t["cmp"] in (">=", ">") else t["limit"] / t["value"] for t in ts
    ]
    colors = ["#2a9d4b" if t["status"] == "PASS" else "#c8553d" for t in ts]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(ts) + 1.4))
    ax.barh(names[::-1], head[::-1], color=colors[::-1])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("headroom: measured ÷ target (> 1 meets the target; log scale)")
    for i, (h, t) in enumerate(zip(head[::-1], ts[::-1], strict=True)):
        ax.text(h, i, f" {_value(t)}", va="center", fontsize=8)
    env = doc["environment"]
    ax.set_title(
        f"stateengine vs its targets — {doc['mode']} run {doc['date'][:10]}, "
        f"{env.get('cpu_count')} cores, load {env.get('loadavg_start', [0])[0]:.1f}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"
