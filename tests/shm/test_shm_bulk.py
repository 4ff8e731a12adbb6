"""The bulk write path: prepared blocks, one extent per big commit, checkpoint-only commits.

Whatever path a commit takes (one extent for its blocks or one each, a ring entry or a
checkpoint, a redo after growth), readers must see exactly the records committed, with
the same block bytes (key, CRC) as a block built one at a time.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.errors import PayloadTooLarge
from stateengine.shm import ArenaReader, ArenaWriter
from stateengine.shm import layout as L
from stateengine.shm import writer as writer_module
from stateengine.shm.codec import MsgpackCodec, internal_packer, key_prefix, pack_internal


def pk(obj: object) -> bytes:
    return msgpack.packb(obj)


@pytest.mark.parametrize("table", ["t", "ä" * 40, "x" * 300])
@pytest.mark.parametrize(
    "rid", [0, 1, -1, 127, 128, -33, 2**32, -(2**63), 2**63 - 1, "", "é", "k" * 70000]
)
def test_key_prefix_plus_id_is_the_packed_key(table: str, rid: int | str) -> None:
    assert key_prefix(table) + internal_packer()(rid) == pack_internal([table, rid])


def _index(w: ArenaWriter) -> dict[str, dict[Any, tuple[int, ...]]]:
    """The writer's index, every entry in full (a loaded record's compact one expanded)."""
    return {
        t: dict(zip(d, writer_module._entries(d, w._loaded.get(t)), strict=True))
        for t, d in w._tables.items()
    }


def _blocks_ok(w: ArenaWriter) -> None:
    """Every indexed block in the writer's mapping holds its header, key and CRC."""
    gen = w._gen
    assert gen is not None
    for t, tdict in _index(w).items():
        for rid, (off, asize, pstart, pend, hcrc, crc, _pos, ver) in tdict.items():
            total, klen, kind, version = L.BLOCK_HEADER.unpack_from(gen.mm, off)
            assert kind == L.KIND_RECORD and version == ver and L.align(total) == asize
            assert gen.mm[off + 16 : off + 16 + klen] == pack_internal([t, rid])
            assert pstart == off + 16 + klen and pend == off + total - 4
            assert zlib.crc32(gen.mm[off:pstart]) == hcrc
            assert zlib.crc32(gen.mm[pstart:pend], hcrc) == crc
            assert L.CRC.unpack_from(gen.mm, pend)[0] == crc
    w._alloc.check()


def test_bulk_commit_fresh_fragmented_and_grown() -> None:
    w = ArenaWriter.create("setest", initial_size=256 * 1024, grace=0.0, ring_size=8192)
    r = ArenaReader.attach(w.name)
    try:
        # small commits (one extent each), then delete every other one: fragments
        w.commit(1, [("t", i, pk({"i": i, "s": "a" * (i % 50)})) for i in range(200)])
        w.commit(2, [], [("t", i) for i in range(0, 200, 2)])
        w.commit(3, [("u", "x", pk(1))])  # reclaims seq 2's space
        expect = {i: {"i": i, "s": "a" * (i % 50)} for i in range(1, 200, 2)}
        # a bulk commit bigger than any single hole but not than the free space
        big = [("t", i, pk({"i": i, "b": "z" * (i % 90)})) for i in range(1000, 1400)]
        big.append(("t", 1001, pk("last put of an id wins")))
        w.commit(4, big, meta={"t": b"meta4"})
        expect.update({i: {"i": i, "b": "z" * (i % 90)} for i in range(1000, 1400)})
        expect[1001] = "last put of an id wins"
        _blocks_ok(w)
        with r.snapshot() as snap:
            assert snap.version == 4
            assert dict(snap.items("t")) == expect
            assert snap.meta("t") == b"meta4" and snap.get("u", "x") == 1
        # far bigger than the arena: grows, the commit is redone in the new generation
        gen = w.stats()["generation"]
        w.commit(5, [("v", i, pk([i] * 20)) for i in range(20_000)])
        assert w.stats()["generation"] > gen
        _blocks_ok(w)
        assert r.get("v", 19_999) == [19_999] * 20 and r.get("t", 1001) == expect[1001]
        with r.snapshot() as snap:
            assert len(snap.ids("v")) == 20_000 and dict(snap.items("t")) == expect
        # and small commits keep working on top, through the ring
        for s in range(6, 60):
            w.commit(s, [("v", s, pk(-s))], [("v", s + 100)])
        assert r.get("v", 59) == -59 and r.get("v", 159) is None
        _blocks_ok(w)
    finally:
        r.close()
        w.close()


def test_commit_that_cannot_fit_its_checkpoint_grows_before_writing(monkeypatch: Any) -> None:
    """A bulk commit whose blocks fit but whose checkpoint (its ops cannot fit the ring)
    does not: the writer grows before indexing and writing the puts, not after (it did
    all of it twice; this test fails on the writer before that change)."""
    writes: list[int] = []
    region = writer_module.ArenaWriter._write_region

    def counted(mm: Any, off: int, puts: Any, deferred: Any) -> None:
        writes.append(len(puts))
        region(mm, off, puts, deferred)

    monkeypatch.setattr(writer_module.ArenaWriter, "_write_region", staticmethod(counted))
    commit_puts = writer_module._blocks.commit_puts

    def counted_puts(mm: Any, off: int, seq: int, puts: Any, *rest: Any) -> int:
        writes.append(len(puts))  # the one-region path writes its blocks here
        return commit_puts(mm, off, seq, puts, *rest)

    monkeypatch.setattr(writer_module._blocks, "commit_puts", counted_puts)
    with ArenaWriter.create("setest", initial_size=1 << 20, grace=0.0, ring_size=8192) as w:
        # blocks of 184 bytes; a checkpoint row takes >= 14 (offsets of 3 bytes and more)
        rec = pk("x" * 150)
        n = w.stats()["free_bytes"] // 190
        w.commit(1, [("t", i, rec) for i in range(n)])
        assert w.stats()["generation"] == 2 and writes == [n]
        _blocks_ok(w)
        with ArenaReader.attach(w.name) as r, r.snapshot() as snap:
            assert len(snap.ids("t")) == n and snap.get("t", n - 1) == "x" * 150


def test_failed_bulk_commit_changes_nothing() -> None:
    w = ArenaWriter.create("setest", initial_size=256 * 1024, max_size=256 * 1024, grace=0.0)
    r = ArenaReader.attach(w.name)
    try:
        w.commit(1, [("t", i, pk(i)) for i in range(100)])
        free = w.stats()["free_bytes"]
        with pytest.raises(ValueError):  # a bad id in the middle: nothing is written
            w.commit(2, [("t", i, pk(i)) for i in range(50)] + [("t", 2**64, pk(0))])
        with pytest.raises(TypeError):
            w.commit(2, [("t", i, pk(i)) for i in range(50)] + [("t", 1, "not bytes")])
        with pytest.raises(ValueError):
            w.commit(2, [("t", i, pk(i)) for i in range(50)] + [("\x00meta", 1, pk(0))])
        from stateengine.errors import CapacityError

        with pytest.raises(CapacityError):  # cannot grow past max_size
            w.commit(2, [("t", i, pk("y" * 500)) for i in range(1000)])
        assert w.seq == 1 and r.version == 1
        w.reclaim()
        assert w.stats()["free_bytes"] >= free
        with r.snapshot() as snap:
            assert dict(snap.items("t")) == {i: i for i in range(100)}
        w.commit(2, [("t", i, pk(-i)) for i in range(100)])
        assert r.get("t", 99) == -99
        _blocks_ok(w)
    finally:
        r.close()
        w.close()


def test_bulk_commit_into_holes_when_no_extent_fits() -> None:
    w = ArenaWriter.create("setest", initial_size=256 * 1024, grace=0.0)
    r = ArenaReader.attach(w.name)
    try:
        seq, i = 0, 0
        while w.stats()["largest_free"] > 48 * 1024:  # fill, one commit per record
            seq += 1
            w.commit(seq, [("t", i, pk("r" * 150))])
            i += 1
        seq += 1
        w.commit(seq, [], [("t", j) for j in range(0, i, 2)])  # holes between live blocks
        seq += 1
        w.commit(seq, [("u", 0, pk(0))])  # reclaims them
        st = w.stats()
        n = st["largest_free"] // 150 + 16
        assert st["largest_free"] < n * 176 and n * 184 + 8192 < st["free_bytes"]
        seq += 1
        w.commit(seq, [("v", j, pk("s" * 150)) for j in range(n)])
        assert w.stats()["generation"] == st["generation"]  # no extent fitted: into holes
        _blocks_ok(w)
        with r.snapshot() as snap:
            assert dict(snap.items("v")) == {j: "s" * 150 for j in range(n)}
            assert dict(snap.items("t")) == {j: "r" * 150 for j in range(1, i, 2)}
    finally:
        r.close()
        w.close()


def test_free_many_equals_freeing_one_by_one() -> None:
    import random

    from stateengine.shm.alloc import Allocator

    rng = random.Random(7)
    for _round in range(50):
        a, b = Allocator(64, 1 << 16), Allocator(64, 1 << 16)
        live: list[tuple[int, int]] = []
        for _ in range(rng.randrange(1, 200)):
            n = 8 * rng.randrange(1, 40)
            off = a.alloc(n)
            assert off == b.alloc(n)
            if off is None:
                break
            live.append((off, n))
        rng.shuffle(live)
        for k in range(0, len(live), 17):
            chunk = live[k : k + 17]
            assert a.free_many(chunk) == sum(n for _o, n in chunk)
            for off, n in chunk:
                b.free(off, n)
            a.check()
            assert a.extents() == b.extents() and a.free_bytes == b.free_bytes
    a = Allocator(64, 4096)
    xs = [a.alloc(64) for _ in range(10)]
    y = a.alloc(64)
    assert y is not None and None not in xs
    a.free(y, 64)
    before = a.extents()
    with pytest.raises(ValueError):  # y is free already: nothing is freed
        a.free_many([(x, 64) for x in xs if x is not None] + [(y, 64)])
    with pytest.raises(ValueError):  # overlapping extents
        a.free_many([(x, 64) for x in xs if x is not None] + [((xs[0] or 0) + 8, 8)])
    assert a.extents() == before
    assert a.free_many([]) == 0


def test_rollback_of_a_commit_that_fails_midway_in_holes() -> None:
    from stateengine.errors import CapacityError

    w = ArenaWriter.create("setest", initial_size=256 * 1024, max_size=256 * 1024, grace=0.0)
    r = ArenaReader.attach(w.name)
    try:
        seq, i = 0, 0
        while w.stats()["largest_free"] > 48 * 1024:
            seq += 1
            w.commit(seq, [("t", i, pk("r" * 150))])
            i += 1
        seq += 1
        w.commit(seq, [], [("t", j) for j in range(0, i, 2)])
        seq += 1
        w.commit(seq, [("u", 0, pk(0))])
        st = w.stats()
        before = (w._alloc.extents(), {t: dict(d) for t, d in w._tables.items()})
        # blocks too big for any hole, fewer bytes than the free space: the per-block
        # path starts, fills what fits, then fails; a fresh and an existing table
        n = int(st["free_bytes"] * 0.55 / 632)  # blocks of 632 B, 1.5 n of them
        puts = [("fresh", j, pk("z" * 600)) for j in range(n // 2)]
        puts += [("t", 1, pk("changed"))] + [("t", 10_000 + j, pk("z" * 600)) for j in range(n)]
        placed = []
        alloc = w._alloc.alloc

        def spy(size: int) -> int | None:
            off = alloc(size)
            placed.append(off)
            return off

        w._alloc.alloc = spy  # type: ignore[method-assign]
        with pytest.raises(CapacityError):
            w.commit(seq + 1, puts)
        w._alloc.alloc = alloc  # type: ignore[method-assign]
        assert len([o for o in placed if o is not None]) > n // 2  # failed midway
        assert w.seq == seq and r.version == seq
        assert (w._alloc.extents(), w._tables) == before
        assert r.get("fresh", 0) is None and r.get("t", 1) == "r" * 150
        w.commit(seq + 1, [("fresh", 0, pk(1))])
        assert r.get("fresh", 0) == 1
        _blocks_ok(w)
    finally:
        r.close()
        w.close()


def _writer_state(w: ArenaWriter) -> tuple[Any, ...]:
    return (
        {t: dict(d) for t, d in w._tables.items()},
        dict(w._next_pos),
        w._alloc.extents(),
        list(w._pending),
        w._pending_bytes,
        w.seq,
        w._ring_head,
    )


def _bulk_shape(shape: str) -> tuple[list[Any], dict[str, Any], dict[Any, Any]]:
    """A big commit's puts and arguments, and what a reader sees of "t" and "new" after."""
    if shape == "set_state":  # the table replaced whole: dropped, then every record
        puts = [("t", i, pk(-i)) for i in range(100, 400)]  # its ops not in a ring of 8 KiB
        expect = {("t", i): -i for i in range(100, 400)} | {("t", 50): None, ("u", 1): 1}
        return puts, {"dropped_tables": ["t"]}, expect
    # puts over existing ids, new ids, a new table, an id twice, a delete, meta
    puts = [("t", i, pk(-i)) for i in range(0, 400, 2)] + [("new", i, pk(i)) for i in range(20)]
    puts.append(("t", 4, pk(4444)))
    expect = {("t", 2): -2, ("t", 4): 4444, ("t", 3): None, ("t", 399): None, ("t", 5): 5}
    expect |= {("new", 19): 19, ("u", 1): None}
    return puts, {"deletes": [("u", 1)], "meta": {"t": b"m2", "new": b"m"}}, expect


@pytest.mark.parametrize("ring", [1 << 18, 8192])  # a ring entry; or too big: a checkpoint
@pytest.mark.parametrize("shape", ["set_state", "batch"])
@pytest.mark.parametrize("control", [False, True])
def test_bulk_commit_that_fails_after_its_puts_changes_nothing(
    monkeypatch: Any, ring: int, shape: str, control: bool
) -> None:
    """A big commit fails after ``blocks.commit_puts`` changed the index (the ring append
    raises): index, positions, free space, retired list, seq and ring as before, readers at
    the last version, and the same commit then succeeds. Control: with the rollback off
    the same comparison sees the change (so it can catch a rollback that misses one)."""
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=60.0, ring_size=ring)
    r = ArenaReader.attach(w.name)
    try:
        w.commit(1, [("t", i, pk(i)) for i in range(200)] + [("u", i, pk(i)) for i in range(20)])
        w.commit(2, [], [("t", 3)], meta={"t": b"m1"})
        before = _writer_state(w)
        puts, args, expect = _bulk_shape(shape)
        append = w._append_ring

        def boom(*a: Any, **k: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(w, "_append_ring", boom)
        if control:
            monkeypatch.setattr(w, "_undo", lambda undo: None)
        with pytest.raises(RuntimeError, match="boom"):
            w.commit(3, puts, **args)
        if control:
            assert _writer_state(w) != before
            return
        assert _writer_state(w) == before and r.version == 2
        assert r.get("t", 2) == 2 and r.get("new", 0) is None and r.get("t", 3) is None
        monkeypatch.setattr(w, "_append_ring", append)
        w.commit(3, puts, **args)
        for (t, rid), value in expect.items():
            assert r.get(t, rid) == value, (t, rid)
        _blocks_ok(w)
    finally:
        r.close()
        w.close()


@pytest.mark.parametrize("fail", [False, True])
def test_bulk_commit_over_loaded_records(monkeypatch: Any, fail: bool) -> None:
    """A big commit over a table load() placed (compact entries: a record's pos): the
    replaced records keep their positions and retire their blocks, new ids go after them;
    failing after its puts, it leaves the index (compact entries included) as it was."""
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=60.0)
    r = ArenaReader.attach(w.name)
    try:
        w.load(1, {"t": (list(range(100)), [pk(i) for i in range(100)])})
        assert all(type(e) is int for e in w._tables["t"].values())  # compact
        puts = [("t", i, pk(-i)) for i in range(0, 60, 2)] + [
            ("t", 500 + i, pk(i)) for i in range(5)
        ]
        if fail:
            before = (dict(w._tables["t"]), dict(w._next_pos), w._alloc.extents(), w.seq)

            def boom(*a: Any, **k: Any) -> None:
                raise RuntimeError("boom")

            monkeypatch.setattr(w, "_append_ring", boom)
            with pytest.raises(RuntimeError):
                w.commit(2, puts)
            assert (dict(w._tables["t"]), dict(w._next_pos), w._alloc.extents(), w.seq) == before
            monkeypatch.undo()
        w.commit(2, puts)
        full = _index(w)["t"]
        assert [full[i][6] for i in (0, 2, 58, 500, 504)] == [0, 2, 58, 100, 104]
        assert 30 in [len(b[2]) for b in w._pending]  # the replaced blocks retired
        assert r.get("t", 2) == -2 and r.get("t", 3) == 3 and r.get("t", 504) == 4
        with r.snapshot() as snap:
            assert list(snap.ids("t"))[:3] == [0, 1, 2] and len(snap.ids("t")) == 105
        _blocks_ok(w)
    finally:
        r.close()
        w.close()


@pytest.mark.parametrize("shape", ["set_state", "batch"])
def test_bulk_commit_whose_checkpoint_is_full_once_grows_and_retries(
    monkeypatch: Any, shape: str
) -> None:
    """The checkpoint after the puts finds no room (``_Full``) once: the commit rolls the
    puts back, grows and does it all again, as a commit that found the arena full does."""
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=60.0, ring_size=8192)
    r = ArenaReader.attach(w.name)
    try:
        w.commit(1, [("t", i, pk(i)) for i in range(200)] + [("u", i, pk(i)) for i in range(20)])
        w.commit(2, [], [("t", 3)], meta={"t": b"m1"})
        gen = w.stats()["generation"]
        puts, args, expect = _bulk_shape(shape)
        ckpt = w._write_checkpoint
        calls: list[int] = []

        def full_once(*a: Any, **k: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise writer_module._Full(1 << 20)
            ckpt(*a, **k)

        monkeypatch.setattr(w, "_write_checkpoint", full_once)
        w.commit(3, puts, **args)
        assert w.stats()["generation"] == gen + 1 and len(calls) >= 2
        for (t, rid), value in expect.items():
            assert r.get(t, rid) == value, (t, rid)
        _blocks_ok(w)
    finally:
        r.close()
        w.close()


EDGE_IDS: list[int | str] = [-(2**63), -(2**63) + 1, -1, 0, 127, 128, 2**32, 2**63 - 1]


def _load_input() -> dict[str, list[tuple[int | str, bytes]]]:
    return {
        "t": [(rid, pk({"id": rid, "s": "x" * (i % 13)})) for i, rid in enumerate(EDGE_IDS)]
        + [(i, pk({"i": i, "f": i / 3, "b": b"\x00" * (i % 9)})) for i in range(1000, 1600)],
        "ä" * 40: [("", pk(None)), ("é", pk([1, [2, {"k": b"v"}]])), (5, pk(2**64 - 1))],
        "mixed": [(i if i % 2 else f"s{i}", pk(i)) for i in range(40)],
    }


def _base(w: ArenaWriter) -> int:
    return min(e[0] for tdict in _index(w).values() for e in tdict.values())


@pytest.mark.parametrize("initial", [64 * 1024, 16 * 1024 * 1024])  # grows, or fits
def test_load_builds_the_arena_a_commit_builds(initial: int) -> None:
    """``load`` (a start's publish) and ``commit`` of the same puts leave the same index,
    the same blocks at the same offsets and the same reads; msgspec.Raw payloads (a
    store's own bytes) go in as they are."""
    data = _load_input()
    meta = {t: pk({"info": t}) for t in data} | {"empty": pk({"size": 0})}
    puts = [(t, rid, blob) for t, rows in data.items() for rid, blob in rows]
    a = ArenaWriter.create("setest", initial_size=initial, ring_size=8192)
    b = ArenaWriter.create("setest", initial_size=initial, ring_size=8192)
    try:
        a.commit(7, puts, meta=meta)
        # each record as a msgspec.Raw view of one buffer holding them all, as a store has
        raw = msgspec.msgpack.Decoder(list[msgspec.Raw])
        views = {
            t: raw.decode(
                msgpack.Packer().pack_array_header(len(rows)) + b"".join(x for _, x in rows)
            )
            for t, rows in data.items()
        }
        assert all(
            bytes(v) == x
            for t, rows in data.items()
            for v, (_, x) in zip(views[t], rows, strict=True)
        )
        b.load(7, {t: ([r for r, _ in rows], views[t]) for t, rows in data.items()}, meta)
        _blocks_ok(b)
        ga, gb = a._gen, b._gen
        assert ga is not None and gb is not None
        # a grown arena: the two grew by different steps, so compare from the region's start
        shift = _base(b) - _base(a)
        assert shift == 0 or initial < 1024 * 1024
        assert b._next_pos == a._next_pos and b._tables.keys() == a._tables.keys()
        ib = _index(b)
        for t, tdict in a._tables.items():
            assert list(b._tables[t]) == list(tdict)
            for rid, (off, asize, pstart, pend, *rest) in tdict.items():
                o = off + shift
                assert ib[t][rid] == (o, asize, pstart + shift, pend + shift, *rest)
                assert gb.mm[o : o + asize] == ga.mm[off : off + asize]
        ra, rb = ArenaReader.attach(a.name), ArenaReader.attach(b.name)
        try:
            with ra.snapshot() as sa, rb.snapshot() as sb:
                assert sb.version == sa.version == 7
                assert sb.tables() == sa.tables()
                for t in sa.tables():
                    assert sb.items_raw(t) == sa.items_raw(t) and sb.meta(t) == sa.meta(t)
            b.commit(8, [("t", 0, pk("after")), ("new", 1, pk(1))], [("t", 1000)])
            assert rb.get("t", 0) == "after" and rb.get("t", 1000) is None
            _blocks_ok(b)
        finally:
            ra.close()
            rb.close()
    finally:
        a.close()
        b.close()


def test_load_in_chunks_builds_the_arena_a_commit_builds(monkeypatch: Any) -> None:
    """``load`` builds, writes and checkpoints its records a chunk at a time
    (``_LOAD_CHUNK``): with chunks of 7 records (a table of 3, one of 40, one of 600-odd
    with a short last chunk) the index and the blocks are still those of a commit, and the
    checkpoint's bytes, encoded chunk by chunk, are the index's encoded whole. Control: a
    chunk's rows encoded with their array header make the comparison fail."""
    monkeypatch.setattr(writer_module, "_LOAD_CHUNK", 7)
    data = _load_input()
    meta = {t: pk({"info": t}) for t in data}
    a = ArenaWriter.create("setest", initial_size=16 * 1024 * 1024, ring_size=8192)
    b = ArenaWriter.create("setest", initial_size=16 * 1024 * 1024, ring_size=8192)
    try:
        a.commit(7, [(t, rid, blob) for t, rows in data.items() for rid, blob in rows], meta=meta)
        b.load(
            7, {t: ([r for r, _ in rows], [x for _, x in rows]) for t, rows in data.items()}, meta
        )
        _blocks_ok(b)
        assert _index(b) == a._tables and list(b._tables) == list(a._tables)
        for tdict in a._tables.values():
            for off, asize, *_ in tdict.values():
                assert b._gen.mm[off : off + asize] == a._gen.mm[off : off + asize]  # type: ignore[union-attr]
        pstart, pend, seq, _pos, hcrc, crc, _off, _asize = b._ckpt
        whole = pack_internal(
            [[t, writer_module._checkpoint_rows(d)] for t, d in _index(b).items()]
        )
        assert seq == 7 and b._gen.mm[pstart:pend] == whole  # type: ignore[union-attr]
        assert zlib.crc32(whole, hcrc) == crc
        r = ArenaReader.attach(b.name)
        try:
            assert r.get("t", 1599) == {"i": 1599, "f": 1599 / 3, "b": b"\x00" * (1599 % 9)}
            assert r.get("mixed", "s38") == 38
            with r.snapshot() as snap:
                assert snap.version == 7 and snap.meta("mixed") == pk({"info": "mixed"})
        finally:
            r.close()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("tables", "error"),
    [
        ({"t": ([1, 2, 1], [pk(1), pk(2), pk(3)])}, ValueError),  # a repeated id
        ({"t": ([2**63], [pk(1)])}, ValueError),  # an id past 64 bits
        ({"t": ([1.5], [pk(1)])}, TypeError),
        ({"t": ([1], ["not bytes"])}, TypeError),
        ({"t": ([1, 2], [pk(1)])}, ValueError),
        ({"t": ([1], [b"x" * 100])}, PayloadTooLarge),
        ({"\x00t": ([1], [pk(1)])}, ValueError),
    ],
)
def test_load_refuses_bad_input_and_publishes_nothing(tables: Any, error: type) -> None:
    w = ArenaWriter.create("setest", initial_size=64 * 1024, codec=MsgpackCodec(64))
    r = ArenaReader.attach(w.name)
    try:
        with pytest.raises(error):
            w.load(3, {"ok": ([1], [pk(1)]), **tables})
        assert w.seq == 0 and w._tables == {}
        with r.snapshot() as snap:
            assert snap.version == 0 and snap.tables() == []
        w.load(3, {"ok": ([1], [pk(1)])})  # still usable: the first version goes out
        assert r.get("ok", 1) == 1
        with pytest.raises(ValueError, match="empty arena"):
            w.load(4, {"ok": ([2], [pk(2)])})
        w._alloc.check()
    finally:
        r.close()
        w.close()


# --- a loaded table's compact index (writer._Cols) -------------------------------------

_IDS = st.one_of(st.integers(0, 150), st.sampled_from(["a", "b", "é", "k" * 40]))
_TABLES = st.sampled_from(["t", "u", "v"])
_STEP = st.tuples(
    st.lists(st.tuples(_TABLES, _IDS, st.binary(max_size=3000)), max_size=25),  # puts
    st.lists(st.tuples(_TABLES, _IDS), max_size=8),  # deletes
    st.lists(_TABLES, max_size=1),  # dropped tables
)


def _view(w: ArenaWriter) -> tuple[Any, ...]:
    """What must match between an arena built by ``load`` and one built by ``commit``:
    every entry but its offsets (the two grow by different steps), the positions, and
    what a reader attached now reads (from the checkpoint and the ring)."""
    index = {
        t: {
            rid: (asize, hcrc, crc, pos, ver)
            for rid, (_o, asize, _s, _e, hcrc, crc, pos, ver) in d.items()
        }
        for t, d in _index(w).items()
    }
    r = ArenaReader.attach(w.name)
    try:
        with r.snapshot() as snap:
            reads = {t: (sorted(map(repr, snap.items_raw(t))), snap.meta(t)) for t in snap.tables()}
            version = snap.version
    finally:
        r.close()
    return index, dict(w._next_pos), reads, version, w.stats()["live_records"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    t_ids=st.lists(_IDS, unique=True, max_size=120),
    u_ids=st.lists(_IDS, unique=True, max_size=5),
    steps=st.lists(_STEP, max_size=8),
    initial=st.sampled_from([64 * 1024, 1024 * 1024]),
)
def test_a_loaded_arena_takes_commits_as_a_committed_one(
    t_ids: list[Any], u_ids: list[Any], steps: list[Any], initial: int
) -> None:
    """A loaded record's entry is its pos in the table's ``_Cols`` until a commit replaces
    it: replaced, deleted, dropped with its table, moved by a growth, written into
    checkpoints (a small ring: most commits are checkpoints), the arena reads and
    indexes as the one a commit of the same records built, at every step, on both paths
    (STATEENGINE_PURE_PYTHON=1). Controls (run by hand): ``blocks.expand`` with an
    unaligned asize, or ``_grow`` not moving a loaded record's pstart, fail it."""
    data = {
        "t": [(rid, pk({"id": rid, "s": "x" * (i % 400)})) for i, rid in enumerate(t_ids)],
        "u": [(rid, pk([rid])) for rid in u_ids],
    }
    meta = {t: pk({"info": t}) for t in data}
    opts: dict[str, Any] = {"initial_size": initial, "ring_size": 1024, "grace": 0.0}
    a = ArenaWriter.create("setest", **opts)
    b = ArenaWriter.create("setest", **opts)
    try:
        a.commit(5, [(t, rid, x) for t, rows in data.items() for rid, x in rows], meta=meta)
        b.load(
            5, {t: ([r for r, _ in rows], [x for _, x in rows]) for t, rows in data.items()}, meta
        )
        assert all(type(e) is int for t in ("t", "u") for e in b._tables.get(t, {}).values())
        assert _view(b) == _view(a)
        for seq, (puts, deletes, drops) in enumerate(steps, start=6):
            for w in (a, b):
                w.commit(seq, puts, deletes, drops)
            _blocks_ok(b)
            assert _view(b) == _view(a)
    finally:
        a.close()
        b.close()


def test_a_failed_commit_leaves_a_loaded_index_as_it_was(monkeypatch: Any) -> None:
    """A commit that replaces, deletes and drops loaded records and then fails (its ring
    append raises) puts back the compact entries themselves, and the arena takes the same
    commit afterwards."""
    b = ArenaWriter.create("setest", initial_size=1024 * 1024, grace=0.0)
    r = ArenaReader.attach(b.name)
    try:
        ids = list(range(50))
        b.load(3, {"t": (ids, [pk(i) for i in ids]), "u": ([1], [pk("u")])})
        before = ({t: dict(d) for t, d in b._tables.items()}, dict(b._loaded), b._alloc.extents())
        puts = [("t", 1, pk("new")), ("t", 99, pk("added")), ("u", 2, pk(2))]

        def boom(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("ring")

        monkeypatch.setattr(b, "_append_ring", boom)
        with pytest.raises(RuntimeError, match="ring"):
            b.commit(4, puts, [("t", 2)], ["u"])
        assert (
            {t: dict(d) for t, d in b._tables.items()},
            dict(b._loaded),
            b._alloc.extents(),
        ) == before
        assert b.seq == 3 and r.get("t", 1) == 1 and r.get("u", 1) == "u"
        monkeypatch.undo()
        b.commit(4, puts, [("t", 2)], ["u"])
        assert r.get("t", 1) == "new" and r.get("t", 2) is None and r.get("t", 99) == "added"
        assert r.get("u", 1) is None and r.get("u", 2) == 2
        assert "u" not in b._loaded and type(b._tables["t"][3]) is int
        _blocks_ok(b)
    finally:
        r.close()
        b.close()


def test_a_loaded_arena_grows_as_a_committed_one() -> None:
    """A growth moves the loaded records in their ``_Cols`` (their entries stay
    compact), then commits over them and a checkpoint read the moved fields."""
    data = {"t": [(i, pk({"i": i, "s": "x" * (i % 300)})) for i in range(500)]}
    opts: dict[str, Any] = {"initial_size": 256 * 1024, "grace": 0.0}
    a = ArenaWriter.create("setest", **opts)
    b = ArenaWriter.create("setest", **opts)
    try:
        a.commit(5, [("t", rid, x) for rid, x in data["t"]], meta={"t": b"m"})
        b.load(5, {"t": ([r for r, _ in data["t"]], [x for _, x in data["t"]])}, {"t": b"m"})
        gen = b._gen
        big = [("t", 1000 + i, pk("y" * 600)) for i in range(200)]
        for w in (a, b):
            w.commit(6, big)
        assert b._gen is not gen and type(b._tables["t"][0]) is int  # grown, still compact
        _blocks_ok(b)
        assert _view(b) == _view(a)
        for w in (a, b):
            w.commit(7, [("t", 3, pk("replaced"))], [("t", 4)])
        _blocks_ok(b)
        assert _view(b) == _view(a)
    finally:
        a.close()
        b.close()
