"""In-process behaviour of the arena: overlays, drops, meta, ring catch-up, cache."""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import pytest

from stateengine.errors import SnapshotExpired
from stateengine.shm import ArenaReader, ArenaWriter
from stateengine.shm.alloc import Allocator
from stateengine.shm.codec import MsgpackCodec


@pytest.fixture
def arena() -> object:
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=0.0, expiry=5.0)
    r = ArenaReader.attach(w.name)
    yield w, r
    r.close()
    w.close()


def pk(obj: object) -> bytes:
    return msgpack.packb(obj)


def test_snapshot_isolated_from_plain_gets_deletes_drops(arena: tuple) -> None:
    w, r = arena
    w.commit(1, [("a", i, pk(i)) for i in range(5)] + [("b", "x", pk("bx"))], meta={"a": b"m1"})
    with r.snapshot() as snap:
        w.commit(2, [("a", 2, pk(20)), ("a", 9, pk(9))], [("a", 0)])
        w.commit(3, [], [], dropped_tables=["b"], meta={"a": b"m3"})
        w.commit(4, [("b", "y", pk("by")), ("a", 0, pk(100))])
        # the reader moves on...
        assert r.get("a", 2) == 20 and r.get("a", 0) == 100 and r.get("b", "x") is None
        assert r.get("b", "y") == "by"
        # ...the snapshot stays at 1, order included
        assert snap.version == 1
        assert snap.items("a") == [(i, i) for i in range(5)]
        assert snap.get("b", "x") == "bx" and snap.get("b", "y") is None
        assert snap.tables() == ["a", "b"] and snap.meta("a") == b"m1"
    with r.snapshot() as snap:
        assert snap.version == 4
        # 0 was deleted and re-put: it moved to the end; 2 was overwritten in place
        assert [i for i, _ in snap.items("a")] == [1, 2, 3, 4, 9, 0]
        assert snap.meta("a") == b"m3" and snap.meta("b") is None
        assert snap.tables() == ["a", "b"]


def test_unchanged_meta_is_not_rewritten(arena: tuple) -> None:
    """The same meta bytes again keep their block (no second block, allocation or ring
    op per commit); changed bytes, a removal, or a drop and re-creation in the same
    commit still take effect, and a reader sees the meta at every version."""
    w, r = arena
    w.commit(1, [("a", 1, pk(1))], meta={"a": b"m1", "b": b"mb"})
    blocks = dict(w._tables["\x00meta"])
    free = w.stats()["free_bytes"]
    w.commit(2, [], meta={"a": b"m1", "b": bytearray(b"mb")})
    assert w._tables["\x00meta"] == blocks and w.stats()["free_bytes"] == free

    def meta(table: str) -> bytes | None:
        with r.snapshot() as snap:
            m: bytes | None = snap.meta(table)
            return m

    assert meta("a") == b"m1" and meta("b") == b"mb" and r.version == 2
    w.commit(3, [], meta={"a": b"m1x", "b": b"mb"})
    assert meta("a") == b"m1x" and w._tables["\x00meta"]["b"] == blocks["b"]
    w.commit(4, [("b", 1, pk(2))], dropped_tables=["b"], meta={"b": b"mb"})
    assert meta("b") == b"mb" and w._tables["\x00meta"]["b"] != blocks["b"]
    w.commit(5, [], meta={"a": None, "b": b"mb"})
    assert meta("a") is None and meta("b") == b"mb"
    with r.snapshot() as snap:
        assert snap.tables() == ["a", "b"] and snap.ids("a") == [1]


def test_reader_far_behind_ring_rebuilds_from_checkpoint() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=0.0, ring_size=4096)
    r = ArenaReader.attach(w.name)
    try:
        with r.snapshot() as snap:
            for s in range(1, 400):  # wraps the 4 KiB ring many times
                w.commit(s, [("t", s % 7, pk(s))])
            w.commit(400, [("t", 99, pk(b"x" * 5000))])  # bigger than half the ring
            assert r.get("t", 3) == 395 and r.get("t", 99) == b"x" * 5000
            assert snap.version == 0 and snap.ids("t") == []  # kept the old dicts
    finally:
        r.close()
        w.close()


def test_get_cached_sees_changes(arena: tuple) -> None:
    w, r = arena
    w.commit(1, [("t", 1, pk({"a": 1}))])
    first = r.get_cached("t", 1)
    assert first == {"a": 1} and r.get_cached("t", 1) is first
    w.commit(2, [("t", 1, pk({"a": 2}))])
    assert r.get_cached("t", 1) == {"a": 2}
    w.commit(3, [], [("t", 1)])
    assert r.get_cached("t", 1) is None


def test_decode_int_keys_and_custom_codec(arena: tuple) -> None:
    """The default decode (inlined in get) keeps int map keys; another codec's decode is used."""
    w, r = arena
    w.commit(1, [("t", 1, pk({1: "one", "a": [1, 2]}))])
    assert r.get("t", 1) == {1: "one", "a": [1, 2]}
    assert r.get_cached("t", 1) == {1: "one", "a": [1, 2]}
    with r.snapshot() as snap:
        assert snap.get("t", 1) == {1: "one", "a": [1, 2]}
        assert snap.items("t") == [(1, {1: "one", "a": [1, 2]})]

    class TupleCodec(MsgpackCodec):
        def __init__(self) -> None:
            super().__init__()
            self.decode = lambda raw: msgpack.unpackb(raw, strict_map_key=False, use_list=False)

    r2 = ArenaReader.attach(w.name, codec=TupleCodec())
    try:
        assert r2.get("t", 1) == {1: "one", "a": (1, 2)}
        with r2.snapshot() as snap:
            assert snap.get("t", 1) == {1: "one", "a": (1, 2)}
    finally:
        r2.close()


def test_wait_for_and_timeout(arena: tuple) -> None:
    w, r = arena
    t = threading.Timer(0.05, lambda: w.commit(7, [("t", 1, pk(1))]))
    t.start()
    assert r.wait_for(7, timeout=5) >= 7
    t.join()
    with pytest.raises(TimeoutError):
        r.wait_for(8, timeout=0.05)


def test_snapshot_expiry_local_clock() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20, expiry=0.05)
    r = ArenaReader.attach(w.name)
    try:
        w.commit(1, [("t", 1, pk(1))])
        with r.snapshot() as snap:
            assert snap.get("t", 1) == 1
            threading.Event().wait(0.1)
            with pytest.raises(SnapshotExpired):
                snap.get("t", 1)
    finally:
        r.close()
        w.close()


def test_closed_handles_are_loud(arena: tuple) -> None:
    w, r = arena
    snap = r.snapshot()
    snap.close()
    with pytest.raises(ValueError):
        snap.get("t", 1)
    r2 = ArenaReader.attach(w.name)
    r2.close()
    r2.close()
    with pytest.raises(ValueError):
        r2.get("t", 1)


def test_allocator_best_fit_and_coalescing() -> None:
    a = Allocator(64, 1024)
    x, y, z = a.alloc(64), a.alloc(128), a.alloc(64)
    assert (x, y, z) == (64, 128, 256)
    a.free(y, 128)
    assert a.alloc(64) == 128  # best fit takes the hole
    a.free(128, 64)
    a.free(x, 64)
    a.free(z, 64)
    a.check()
    assert a.extents() == [(64, 1024)]
    with pytest.raises(ValueError):
        a.free(64, 8)


def _steady_stream(w: ArenaWriter, clock: list[float], commits: int, dt: float) -> int:
    """Rewrite one record *commits* times, *dt* apart on the fake clock; return the most
    retired batches seen at once."""
    most = 0
    for seq in range(1, commits + 1):
        clock[0] += dt
        w.commit(seq, [("t", 1, msgpack.packb({"n": seq}))])
        most = max(most, len(w._pending))  # stats() would scan the pins itself
    return most


@pytest.mark.parametrize("control", [False, True])
def test_commits_reclaim_at_most_every_quarter_grace_and_stay_bounded(
    control: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits reclaim in batches (issue 17: a pin scan per commit cost a one-record
    commit several µs) but a steady stream still gets its space back: at most what
    ``grace + grace / 4`` of commits retire stays retired. Control: commits that never
    reclaim let the retired batches grow with the stream."""
    clock = [100.0]
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=1.0, _clock=lambda: clock[0])
    try:
        scans = [0]
        min_pin = w._min_pin

        def counted(now: float) -> int | None:
            scans[0] += 1
            return min_pin(now)

        monkeypatch.setattr(w, "_min_pin", counted)
        if control:
            monkeypatch.setattr(w, "reclaim", lambda force=False: 0)
        most = _steady_stream(w, clock, commits=2000, dt=0.01)
        bound = int((1.0 + 1.0 / 4) / 0.01) + 2  # batches retired in grace + grace/4
        if control:
            assert most > 1500  # nothing came back
            return
        assert most <= bound, most
        # 20 s of commits: a scan every ~0.25 s after the first second, not 2000 scans
        assert scans[0] <= 20 / 0.25 + 2, scans[0]
        assert w.stats()["generation"] == 1  # space came back: the arena never grew
    finally:
        w.close()


def test_commits_reclaim_every_time_under_grace_zero() -> None:
    """grace 0 (tests, tools): each commit frees what the previous one retired, as before."""
    clock = [0.0]
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=0.0, _clock=lambda: clock[0])
    try:
        assert _steady_stream(w, clock, commits=50, dt=0.0) <= 1
    finally:
        w.close()


def test_get_for_answers_as_get(arena: tuple) -> None:
    """``_get_for`` (the client's fast read: C, or the pure path's inlined copy of
    ``get``) answers exactly as ``get`` when the reader may answer, STALE when its index
    is before ``min_seq`` or the deadline passed; after a write it syncs first, as get."""
    import time

    from stateengine.shm import blocks

    w, r = arena
    w.commit(1, [("a", 1, pk({"x": 1})), ("a", "k", pk({2: "int key"})), ("b", 2, pk(None))])
    later = time.monotonic() + 60

    def twin_get_for(*args: Any) -> Any:  # the pure path's _get_for for any other get
        return blocks.ReaderCorePy._get_for(r, *args)

    fns = [r._get_for, r._get_for_pure, twin_get_for]
    for fn in fns:  # the test is on the local index (read-your-writes), not the seq word
        assert fn("a", 1, 1, later) is blocks.STALE
    assert r.version == 1
    for table, rid in [("a", 1), ("a", "k"), ("b", 2), ("a", 9), ("nope", 1)]:
        for fn in fns:
            assert fn(table, rid, 1, later) == r.get(table, rid), (fn, table, rid)
            assert fn(table, rid, 2, later) is blocks.STALE  # behind this client's write
            assert fn(table, rid, 1, 0.0) is blocks.STALE  # a re-check is due
    w.commit(2, [("a", 1, pk({"x": 2}))])  # the seq word moves: each syncs first
    for fn in fns:
        assert fn("a", 1, 1, later) == {"x": 2}
    # a copy that does not validate is never decoded: retried, then refused, as get
    e = r._idx["a"][1]
    r._idx["a"][1] = (e[0], e[1], e[2], e[3] ^ 1, *e[4:])
    calls = [(fn, ("a", 1, 1, later)) for fn in fns] + [(r.get, ("a", 1))]
    for fn, args in calls:
        with pytest.raises(SnapshotExpired, match="could not read a consistent"):
            fn(*args)
