"""Process bodies for the arena tests (imported by spawn children: keep it light).

The writer's schedule is a pure function of the commit seq, so any reader can tell
what every record must be at any version: commit ``s`` touches group
``s % GROUPS`` (ids ``g*K .. g*K+K-1``); it deletes the group when
``(s // GROUPS) % 7 == 3``, else puts each id with a value derived from its id and
``s``. Record sizes cycle through ``SIZES`` so reused blocks partly overlap.
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any

import msgpack

from stateengine.errors import SnapshotExpired
from stateengine.shm import ArenaReader, faults

# ids a commit touches; STATEENGINE_SHM_STRESS_K (read by the spawned readers too) makes
# the commits big enough for the writer's bulk path (ArenaWriter._apply_bulk: 16 puts)
K = int(os.environ.get("STATEENGINE_SHM_STRESS_K", "4"))
SIZES = (0, 24, 80, 200, 520, 1000)
TABLE = "t"


def record(i: int, s: int) -> dict[str, Any]:
    n = SIZES[(i * 7 + s * 3) % len(SIZES)]
    return {
        "id": i,
        "v": s,
        "chk": (i * 1000003 + s * 7919) % 2**31,
        "pad": bytes([(i + s) % 251]) * n,
    }


def commit_args(s: int, groups: int) -> tuple[list[tuple[str, int, bytes]], list[tuple[str, int]]]:
    g = s % groups
    ids = range(g * K, g * K + K)
    if (s // groups) % 7 == 3:
        return [], [(TABLE, i) for i in ids]
    return [(TABLE, i, msgpack.packb(record(i, s))) for i in ids], []


def expected(i: int, v: int, groups: int) -> int | None:
    """Version of record ``i`` at version ``v`` (None: absent)."""
    g = i // K
    s = v - ((v - g) % groups)
    if s < 1 or (s // groups) % 7 == 3:
        return None
    return s


def check(i: int, rec: Any, groups: int) -> str | None:
    """None if ``rec`` is a record the writer really wrote for id ``i``, else why not."""
    if not isinstance(rec, dict):
        return f"not a map: {rec!r:.80}"
    s = rec.get("v")
    if rec.get("id") != i or not isinstance(s, int):
        return f"id {i}: got id {rec.get('id')!r} v {s!r}"
    if rec != record(i, s):
        return f"id {i} v {s}: payload differs"
    if s % groups != i // K or (s // groups) % 7 == 3:
        return f"id {i}: version {s} never wrote it"
    return None


def describe(exc: BaseException) -> str:
    """An exception as text without repr(): msgpack's ExtraData keeps the object decoded
    from torn bytes, whose repr can be nested deeply enough to raise RecursionError."""
    return f"{type(exc).__name__}: {str(exc)[:100]}"


def stress_reader(
    name: str, groups: int, reads: int, seconds: float, fault: list[str], out: Any
) -> None:
    """Validate ``reads`` gets (and a snapshot every 100) against the schedule."""
    faults.FAULTS.update(fault)
    rnd = random.Random(os.getpid())
    r = ArenaReader.attach(name)
    n_ids = groups * K
    last: dict[int, int] = {}
    res: dict[str, Any] = {
        "reads": 0,
        "snap_reads": 0,
        "wrong": 0,
        "expired": 0,
        "nonmonotonic": 0,
        "examples": [],
        "snapshots": 0,
    }

    def bad(msg: str) -> None:
        res["wrong"] += 1
        if len(res["examples"]) < 5:
            res["examples"].append(msg)

    deadline = time.monotonic() + seconds
    last_version = 0
    try:
        n = 0
        while n < reads and time.monotonic() < deadline:
            for _ in range(100):
                i = rnd.randrange(n_ids)
                try:
                    # odd ids through the per-reader cache: its miss path validates too
                    rec = r.get_cached(TABLE, i) if i & 1 else r.get(TABLE, i)
                except SnapshotExpired as exc:
                    res["expired"] += 1
                    res["examples"].append(f"get: {exc}"[:120])
                    continue
                except Exception as exc:  # a torn record that failed to decode
                    bad(f"get {i}: {describe(exc)}")
                    continue
                n += 1
                v = r.version
                if v < last_version:
                    res["nonmonotonic"] += 1
                last_version = v
                if rec is None:
                    continue
                why = check(i, rec, groups)
                if why:
                    bad("get " + why)
                    continue
                if rec["v"] > v:
                    bad(f"get {i}: version {rec['v']} above published {v}")
                if rec["v"] < last.get(i, 0):
                    res["nonmonotonic"] += 1
                last[i] = rec["v"]
            # a snapshot: a few records, each exactly as of its version
            try:
                with r.snapshot() as snap:
                    res["snapshots"] += 1
                    v = snap.version
                    for _ in range(8):
                        i = rnd.randrange(n_ids)
                        try:
                            rec = snap.get(TABLE, i)
                        except SnapshotExpired:
                            raise
                        except Exception as exc:
                            bad(f"snap {i}: {describe(exc)}")
                            continue
                        res["snap_reads"] += 1
                        want = expected(i, v, groups)
                        got = None if rec is None else rec.get("v")
                        if got != want or (rec is not None and check(i, rec, groups)):
                            bad(f"snap at {v} id {i}: want v{want} got {got}")
            except SnapshotExpired as exc:
                res["expired"] += 1
                res["examples"].append(f"snap: {exc}"[:120])
        res["reads"] = n
    finally:
        r.close()
    out.put(res)


def hold_snapshot(name: str, out: Any, go: Any, hold: float) -> None:
    """Pin a snapshot, report its version, wait for ``go`` (or ``hold`` s), then read."""
    r = ArenaReader.attach(name)
    try:
        with r.snapshot() as snap:
            ids = snap.ids(TABLE)
            out.put(("pinned", snap.version, os.getpid()))
            go.wait(hold)
            try:
                rows = snap.items(TABLE)
                out.put(("read", snap.version, len(rows), len(ids)))
            except SnapshotExpired as exc:
                out.put(("expired", str(exc)))
    finally:
        r.close()


def pool_read(args: tuple[str, int]) -> int:
    name, n = args
    with ArenaReader.attach(name) as r:
        got = 0
        for i in range(n):
            if r.get(TABLE, i) is not None:
                got += 1
        with r.snapshot() as snap:
            got += len(snap.ids(TABLE)) * 0
        return got


def pool_main(name: str) -> int:
    """A worker that is not a child of the writer, with its own spawn and fork pools."""
    import multiprocessing as mp

    with ArenaReader.attach(name) as r:
        n = 50
        base = sum(1 for i in range(n) if r.get(TABLE, i) is not None)
        for method in ("spawn", "fork"):
            ctx = mp.get_context(method)
            with ctx.Pool(2) as pool:
                got = pool.map(pool_read, [(name, n)] * 4, chunksize=1)
            if got != [base] * 4:
                print(f"{method} pool read {got}, want {base}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "pool":
        sys.exit(pool_main(sys.argv[2]))
    if sys.argv[1] == "writer":  # a writer that waits to be killed
        from stateengine.shm import ArenaWriter

        w = ArenaWriter.create(sys.argv[2], initial_size=1 << 20)
        w.commit(1, puts=[(TABLE, 1, msgpack.packb(record(1, 1)))])
        print(w.name, flush=True)
        time.sleep(60)


def snapshot_reader(name: str, n: int, fault: list[str], out: Any, go: Any, stop: Any) -> None:
    """Phases A (exact at v), B (all-or-nothing), C (expiry) of the snapshot test."""
    faults.FAULTS.update(fault)
    problems: list[str] = []
    r = ArenaReader.attach(name)
    try:
        # A: pin, let the writer rewrite everything, then read everything at v
        try:
            with r.snapshot() as snap:
                v = snap.version
                out.put(("pinned", v))
                go.wait(30)
                go.clear()
                rows = snap.items(TABLE)
                if [i for i, _ in rows] != list(range(n)):
                    problems.append(f"A: ids at {v} are {[i for i, _ in rows][:5]}...")
                for i, rec in rows:
                    if rec != record(i, v):
                        problems.append(f"A: id {i} at {v}: v{rec.get('v')}")
                        break
                for i in range(n):
                    if snap.get(TABLE, i) != record(i, v):
                        problems.append(f"A: get {i} at {v}")
                        break
                if r.get(TABLE, 0) == record(0, v):
                    problems.append("A: plain get did not see the newer version")
                if snap.get(TABLE, 0) != record(0, v):
                    problems.append("A: snapshot moved after a plain get")
        except Exception as exc:
            problems.append(f"A: {describe(exc)}")
        out.put(("A done",))
        # B: many snapshots while the writer commits whole-table rewrites
        for _ in range(150):
            try:
                with r.snapshot() as snap:
                    v = snap.version
                    vs = {rec["v"] for _i, rec in snap.items(TABLE)}
                    if vs != {v}:
                        problems.append(f"B: snapshot {v} saw versions {sorted(vs)[:4]}")
                        break
            except Exception as exc:
                problems.append(f"B: {describe(exc)}")
                break
        out.put(("B done",))
        # C: hold a snapshot past expiry while the writer reuses its space
        try:
            with r.snapshot() as snap:
                out.put(("pinned", snap.version))
                go.wait(30)
                try:
                    rows = snap.items(TABLE)
                    bad = [i for i, rec in rows if rec != record(i, snap.version)]
                    problems.append(f"C: expired snapshot returned data ({len(bad)} wrong)")
                except SnapshotExpired:
                    pass
        except Exception as exc:
            problems.append(f"C: {describe(exc)}")
    finally:
        r.close()
    out.put(("result", problems))


def acked_reader(
    name: str, acked: Any, seconds: float, reads: int, fault: list[str], out: Any
) -> None:
    """Read the counter record after reading the newest acknowledged count; report every
    read that returned an older count (a stale read, test_shm_meta.py)."""
    faults.FAULTS.update(fault)
    r = ArenaReader.attach(name)
    res: dict[str, Any] = {"reads": 0, "stale": 0, "expired": 0, "examples": []}
    deadline = time.monotonic() + seconds
    try:
        while res["reads"] < reads and time.monotonic() < deadline:
            for i in range(200):
                want = acked.value
                try:
                    if i % 50 == 0:
                        with r.snapshot() as snap:
                            rec = snap.get("c", 1)
                    else:
                        rec = r.get("c", 1)
                except SnapshotExpired:
                    res["expired"] += 1
                    continue
                res["reads"] += 1
                got = -1 if rec is None else rec["n"]
                if got < want:
                    res["stale"] += 1
                    if len(res["examples"]) < 5:
                        res["examples"].append(f"acked {want}, read {got} at v{r.version}")
    finally:
        r.close()
    out.put(res)
