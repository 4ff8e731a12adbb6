"""The compiled block building (shm/_speedups.c) against its pure-Python twin (shm/blocks.py).

Both must give byte-identical blocks, the same index entries and checkpoint rows, and the
same error types and messages for bad input; under ``CI=true`` (CI has gcc) the compiled
path must be the one that runs, which proves the build works.
"""

from __future__ import annotations

import array
import importlib
import itertools
import os
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stateengine.limits import ARENA_KEY_BYTES
from stateengine.shm import blocks
from stateengine.shm import writer as writer_module
from stateengine.shm.codec import key_prefix, pack_internal

PURE = os.environ.get("STATEENGINE_PURE_PYTHON") == "1"


def _speedups() -> ModuleType | None:
    try:
        return importlib.import_module("stateengine.shm._speedups")
    except ImportError:
        return None


C = _speedups()
needs_c = pytest.mark.skipif(C is None, reason="the C extension is not built here")


def test_the_path_that_runs() -> None:
    """The flag says what runs: pure Python when asked; compiled wherever CI built it."""
    assert blocks.PATH == ("compiled C" if blocks.COMPILED else "pure Python")
    if PURE:
        assert not blocks.COMPILED
    elif os.environ.get("CI") == "true":
        assert blocks.COMPILED, "CI has a C compiler: the extension must have been built"
    else:
        assert blocks.COMPILED == (C is not None)


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # the twin must raise the same type with the same message
        return ("error", type(exc), str(exc))


ints = st.one_of(
    st.integers(-40, 300),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**63, -(2**63) - 1, 2**31, -(2**31) - 1, 65535, 65536, -32769]),
)
strs = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\udc80", "é" * 20, "k" * 31, "k" * 32, "k" * 255, "k" * 256, "z" * 70000]),
)
# msgpack's int and str formats change at these: every one drawn often
EDGES = [
    v + d
    for v in (0, 32, 128, 256, 32768, 65536, 2**31, 2**32, 2**63)
    for d in (-1, 0)
    for v in (v, -v)
    if -(2**63) <= v + d < 2**63
]
good_ids = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from(EDGES),
    st.text(max_size=300),
    st.sampled_from([31, 32, 255, 256, 65535, 65536]).map(lambda n: "k" * n),
)
tables = st.sampled_from(["t", "u", "ä" * 40, "x" * 300, "", "\x00meta", "\x00x", 5, None])
datas = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=40).map(bytearray),
    st.binary(max_size=40).map(memoryview),
    st.sampled_from(["str", None, b"x" * 1000]),
)
puts = st.lists(
    st.one_of(
        st.tuples(tables, st.one_of(ints, strs, st.just(True), st.just(1.5)), datas),
        st.tuples(st.sampled_from(["t", "u"]), good_ids, st.binary(max_size=300)),
        st.tuples(st.sampled_from(["t", "u"]), good_ids, st.binary(max_size=300)).map(list),
    ),
    max_size=12,
)


@needs_c
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(puts=puts, seq=st.integers(1, 2**63 - 1), known=st.booleans())
def test_prepare_c_equals_python(puts: list[Any], seq: int, known: bool) -> None:
    start = {"t": key_prefix("t")} if known else {}
    pre_c, pre_py = dict(start), dict(start)
    monkey = blocks._c
    blocks._c = C
    try:
        got_c = _outcome(lambda: blocks._prepare_c(puts, seq, pre_c, 500))
    finally:
        blocks._c = monkey
    got_py = _outcome(lambda: blocks.prepare_python(puts, seq, pre_py, 500))
    assert got_c == got_py
    if got_c[0] == "ok":
        assert pre_c == pre_py


def _table(draw: Any) -> tuple[list[Any], list[Any]]:
    ids = draw(st.lists(good_ids, max_size=40, unique=True))
    raw = st.binary(max_size=200).map(msgspec.Raw)
    recs = draw(st.lists(st.one_of(st.binary(max_size=200), raw), min_size=len(ids)))
    return ids, recs[: len(ids)]


@st.composite
def loaded(draw: Any) -> tuple[list[Any], list[Any]]:
    return _table(draw)


@needs_c
@settings(max_examples=150, deadline=None)
@given(
    table=loaded(),
    seq=st.integers(1, 2**63 - 1),
    name=st.sampled_from(["t", "ä" * 40]),
    off=st.sampled_from([0, 8, 200, 65536 - 256, 70000]),
    chunk=st.integers(1, 50),
)
def test_measure_and_place_c_equal_python(
    table: tuple[list[Any], list[Any]], seq: int, name: str, off: int, chunk: int
) -> None:
    """Blocks, index entries and checkpoint rows alike, chunk by chunk, at any offset
    (offsets past 2**32 share the uint encoder with ids and versions up to 2**63)."""
    ids, recs = table
    prefix = key_prefix(name)
    assert C is not None
    got_c = C.measure(ids, recs, len(prefix), msgspec.Raw)
    got_py = blocks.MEASURE_PY(ids, recs, len(prefix))
    assert got_c is not None and got_py is not None
    assert tuple(got_c) == got_py[:5]
    size = got_py[0]
    assume(got_py[1] <= ARENA_KEY_BYTES)  # the writer refuses a longer key before place()

    mm_c, mm_py = bytearray(off + size), bytearray(off + size)
    td_c: dict[Any, Any] = {}
    td_py: dict[Any, Any] = {}
    cols_c, cols_py = (array.array("q", [-1]) * (5 * len(ids)) for _ in "cp")
    rows_c, rows_py = [], []
    o_c = o_py = off
    for i in range(0, len(ids), chunk):
        j = min(i + chunk, len(ids))
        o_c, r = C.place(mm_c, o_c, seq, prefix, ids, recs, i, j, td_c, cols_c, msgspec.Raw)
        rows_c.append(r)
        o_py, r = blocks.PLACE_PY(
            mm_py, o_py, seq, prefix, ids, recs, i, j, td_py, cols_py, got_py[5]
        )
        rows_py.append(r)
    assert o_c == o_py == off + size
    assert mm_c == mm_py
    assert td_c == td_py and cols_c == cols_py
    assert rows_c == rows_py
    # the compact index is the entries a commit makes (test_shm_bulk compares those)
    entries = {rid: writer_module._expand((cols_py, seq), pos) for rid, pos in td_py.items()}
    assert list(td_py.values()) == list(range(len(td_py)))
    expect = [[rid, *(e[k] for k in (2, 3, 4, 5, 6, 0))] for rid, e in entries.items()]
    assert pack_internal(expect) == _array(len(expect)) + b"".join(rows_c)


_U64 = st.integers(0, 2**64 - 1)


@needs_c
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ids=st.lists(good_ids, max_size=30, unique=True),
    fields=st.lists(st.tuples(_U64, _U64, _U64, _U64, _U64, _U64, _U64, _U64), min_size=30),
    cols=st.lists(
        st.tuples(
            st.integers(0, 2**48),  # off
            st.integers(16, 70000),  # pstart - off: header and key
            st.integers(0, 2**32),  # payload length
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
        ),
        min_size=30,
        max_size=30,
    ),
    compact=st.lists(st.booleans(), min_size=30),
    odd=st.sampled_from([None, -1, "x", 2**64, (1, 2)]),
)
def test_rows_c_equal_python(
    ids: list[Any], fields: list[Any], cols: list[Any], compact: list[bool], odd: Any
) -> None:
    """A writer's table's checkpoint rows: entries as tuples (any 64-bit unsigned fields)
    or a loaded record's pos in the table's cols, mixed, give the same bytes in C as the
    twin's rows packed by msgpack, and the same extents (what a DROP retires); an entry C
    does not take (a negative field, not an int, a pos past cols) makes it answer None
    and ``rows`` give the twin's bytes or error."""
    assert C is not None
    arr = array.array("q", [x for o, k, d, h, c in cols for x in (o, o + k, o + k + d, h, c)])
    tdict = {rid: (i % 30 if compact[i] else fields[i]) for i, rid in enumerate(ids)}
    loaded = (arr, 7)
    assert C.rows(tdict, arr) == blocks.ROWS_PY(tdict, loaded)
    assert C.extents(tdict, arr) == list(blocks.EXTENTS_PY(tdict, loaded))
    assert blocks.entries(tdict, loaded) == [
        e if type(e) is tuple else blocks.expand(loaded, e) for e in tdict.values()
    ]
    rows = blocks.row_tuples(tdict, loaded)
    assert pack_internal(rows) == _array(len(rows)) + blocks.ROWS_PY(tdict, loaded)
    if ids and odd is not None:
        e = tdict[ids[-1]]
        tdict[ids[-1]] = (*e[:2], odd, *e[3:]) if type(e) is tuple else 30 if odd == -1 else odd
        assert C.rows(tdict, arr) is None
        assert _outcome(lambda: blocks.rows(tdict, loaded)) == _outcome(
            lambda: blocks.ROWS_PY(tdict, loaded)
        )
        assert _outcome(lambda: list(blocks.extents(tdict, loaded))) == _outcome(
            lambda: list(blocks.EXTENTS_PY(tdict, loaded))
        )


def _array(n: int) -> bytes:
    return pack_internal([None] * n)[: len(pack_internal([None] * n)) - n]


@needs_c
@pytest.mark.parametrize(
    "ids, recs",
    [
        ([1, "a"], [b"x", b"y"]),
        ([True], [b"x"]),
        ([2**63], [b"x"]),
        ([-(2**63) - 1], [b"x"]),
        ([1.5], [b"x"]),
        (["\udc80"], [b"x"]),
        ([1], [bytearray(b"x")]),
        ([1], ["x"]),
        ([1], [memoryview(b"x")]),
    ],
)
def test_measure_refuses_alike(ids: list[Any], recs: list[Any]) -> None:
    """C measures only the plain case; the twin measures it too, or refuses (None), or
    raises: measure() as a whole gives the same on both paths."""
    assert C is not None
    got_c = C.measure(ids, recs, 3, msgspec.Raw)
    got_py = _outcome(lambda: blocks.MEASURE_PY(ids, recs, 3))
    if got_c is None:
        assert got_py[0] == "error" or got_py[1] is None
    else:
        assert got_py[0] == "ok" and tuple(got_c) == got_py[1][:5]


def _cols(n: int = 1) -> array.array[int]:
    return array.array("q", [0]) * (5 * n)


@needs_c
def test_place_refuses_a_block_past_the_mapping() -> None:
    assert C is not None
    with pytest.raises(ValueError, match="past the mapping"):
        C.place(bytearray(40), 8, 1, b"\x92\xa1t", [1], [b"x" * 30], 0, 1, {}, _cols(), msgspec.Raw)
    with pytest.raises(ValueError, match="past the mapping"):
        blocks.PLACE_PY(
            bytearray(40), 8, 1, b"\x92\xa1t", [1], [b"x" * 30], 0, 1, {}, _cols(), None
        )
    with pytest.raises(TypeError):
        C.place(bytes(64), 0, 1, b"\x92\xa1t", [1], [b"x"], 0, 1, {}, _cols(), msgspec.Raw)
    with pytest.raises(TypeError):
        blocks.PLACE_PY(bytes(64), 0, 1, b"\x92\xa1t", [1], [b"x"], 0, 1, {}, _cols(), None)
    # an offset near the top of the signed range: the bound must not wrap (review: it did,
    # and the block went to buf + off)
    with pytest.raises(ValueError, match="past the mapping"):
        C.place(
            bytearray(64), 2**63 - 8, 1, b"\x92\xa1t", [1], [b"x"], 0, 1, {}, _cols(), msgspec.Raw
        )
    # cols too short for the records placed: refused alike, nothing written past it
    for place in (C.place, blocks.PLACE_PY):
        raw = msgspec.Raw if place is C.place else None
        with pytest.raises(ValueError, match="cols"):
            place(bytearray(64), 0, 1, b"\x92\xa1t", [1, 2], [b"x", b"y"], 0, 2, {}, _cols(), raw)
    with pytest.raises(OverflowError):
        C.place(bytearray(64), 0, -1, b"\x92\xa1t", [1], [b"x"], 0, 1, {}, _cols(), msgspec.Raw)


@needs_c
def test_prepare_survives_python_code_that_empties_its_list() -> None:
    """A key's ``__eq__`` (run by the prefix lookup) clears the puts mid-call: the C loop
    re-measures the list and holds the put it works on, so no freed tuple is read."""
    assert C is not None
    puts: list[Any] = []

    class Clearing(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            puts.clear()
            return str.__eq__(self, other)

    puts.extend(("t", f"id{i}", b"x" * 100) for i in range(50))
    out: list[Any] = []
    stop, _need, _estimate = C.prepare(puts, 0, 1, {Clearing("t"): b"\x92\xa1t"}, 1000, out)
    assert stop == 1 and len(out) == 1 and out[0][1] == "id0"


@needs_c
@settings(max_examples=150, deadline=None)
@given(
    table=st.sampled_from(["t", "\x00meta"]),
    rid=good_ids,
    data=st.binary(max_size=300),
    seq=st.integers(1, 2**63 - 1),
)
def test_prepare_one_c_equals_python(table: str, rid: Any, data: bytes, seq: int) -> None:
    """A table's metadata block (no size limit), as commit and load build it."""
    prefix = key_prefix(table)
    saved = blocks._c
    blocks._c = C
    try:
        got_c = _outcome(lambda: blocks._prepare_one_c(prefix, table, rid, seq, data))
    finally:
        blocks._c = saved
    assert got_c == _outcome(lambda: blocks._prepare_one_py(prefix, table, rid, seq, data))


@needs_c
@pytest.mark.parametrize(
    ("rid", "seq", "data"),
    [
        (2**70, 1, b"x"),  # an id past 64 bits
        ("x" * 70_000, 1, b"x"),  # a key too long
        (True, 1, b"x"),  # not an exact int
        (1, -1, b"x"),  # a version below 0
        (1, 2**64, b"x"),  # a version past 64 bits
        (1, 1, bytearray(b"x")),  # not exact bytes
        ("\ud800", 1, b"x"),  # a lone surrogate
    ],
)
def test_prepare_one_c_hands_other_inputs_to_python(rid: Any, seq: int, data: Any) -> None:
    """What C's prepare_one does not take, the twin does: the same result or error."""
    prefix = key_prefix("t")
    saved = blocks._c
    blocks._c = C
    try:
        got_c = _outcome(lambda: blocks._prepare_one_c(prefix, "t", rid, seq, data))
    finally:
        blocks._c = saved
    assert got_c == _outcome(lambda: blocks._prepare_one_py(prefix, "t", rid, seq, data))


# --- the reader's get: ReaderCore (C) against ReaderCorePy -------------------------------


def _hooked(base: type) -> type:
    """A core whose ways back into Python say which one was taken."""

    class Hooked(base):  # type: ignore[misc, valid-type]
        def _get_sync(self, table: Any, rid: Any) -> Any:
            return ("sync", table, rid)

        def _get_retried(self, table: Any, rid: Any) -> Any:
            return ("retried", table, rid)

        def get(self, table: Any, rid: Any) -> Any:
            return ("get", table, rid)

    return Hooked


records = st.one_of(
    st.dictionaries(
        st.one_of(st.text(max_size=6), st.integers(-5, 5)),
        st.one_of(
            st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.none(), st.binary(max_size=9)
        ),
        max_size=6,
    ).map(lambda d: pack_internal(d)),
    st.binary(max_size=12),  # not msgpack, or trailing bytes: unpackb's errors alike
)
# what an index entry can be: good, a wrong CRC, or damaged in every way C parses
DAMAGE = [
    "ok",
    "crc",
    "past",
    "backwards",
    "negative",
    "crc33",
    "hcrc33",
    "negcrc",
    "crc65",
    "list",
    "short",
    "float",
    "huge",
    "none",
]


def _entry(start: int, payload: bytes, hcrc: int, how: str, size: int) -> Any:
    end = start + len(payload)
    crc = zlib.crc32(payload, hcrc)
    e: Any = (start, end, hcrc, crc, 0, 0)
    return {
        "ok": e,
        "crc": (start, end, hcrc, crc ^ 1, 0, 0),
        "past": (start, size + 1, hcrc, crc, 0, 0),
        "backwards": (end, start - 1, hcrc, crc, 0, 0),
        "negative": (-1, end, hcrc, crc, 0, 0),
        "crc33": (start, end, hcrc, crc | 1 << 32, 0, 0),
        "hcrc33": (start, end, hcrc | 1 << 32, crc, 0, 0),
        "negcrc": (start, end, hcrc, -1, 0, 0),
        "crc65": (start, end, hcrc | 1 << 64, crc | 1 << 64, 0, 0),  # past unsigned long
        "list": list(e),
        "short": e[:3],
        "float": (float(start), end, hcrc, crc),
        "huge": (start, 2**70, hcrc, crc),
        "none": None,
    }[how]


@needs_c
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recs=st.lists(
        st.tuples(records, st.sampled_from(DAMAGE), st.integers(0, 2**32 - 1)), max_size=8
    ),
    seq=st.integers(0, 2**63 - 2),
    behind=st.booleans(),
    attached=st.booleans(),
    plain=st.booleans(),
    mapping=st.sampled_from(["mmap", "none", "bytes"]),
    min_seq=st.sampled_from([-(2**70), -1, 0, 1, 2**70, None]),
    deadline=st.sampled_from([0.0, float("inf"), -1, 10**12]),
)
def test_reader_get_c_equals_python(
    recs: list[tuple[bytes, str, int]],
    seq: int,
    behind: bool,
    attached: bool,
    plain: bool,
    mapping: str,
    min_seq: int | None,
    deadline: float,
) -> None:
    """``_get_c`` and ``_get_for``: the same record, None, STALE, hook or error as the twin,
    for good, torn and damaged entries, a moved seq word, a released control mapping."""
    import mmap

    assert C is not None
    size = sum(len(p) for p, _h, _c in recs) + 8
    data = mmap.mmap(-1, size)
    ctl = mmap.mmap(-1, 64)
    ctl[8:16] = seq.to_bytes(8, "little")
    tdict: dict[Any, Any] = {}
    pos = 0
    for i, (payload, how, hcrc) in enumerate(recs):
        data[pos : pos + len(payload)] = payload
        tdict[i] = _entry(pos, payload, hcrc, how, size)
        pos += len(payload)
    idx = {"t": tdict, "v": [1], "n": None}
    gmm = {"mmap": data, "none": None, "bytes": bytes(data)}[mapping]
    cores = [_hooked(C.ReaderCore)(), _hooked(blocks.ReaderCorePy)()]
    for core in cores:
        core._core_attach(ctl, 8, msgpack.unpackb)
        if not attached:
            core._core_release()
        core._seq = seq + behind
        core._idx = idx
        core._gmm = gmm
        core._plain = plain
    try:
        queries = [("t", i) for i in range(len(recs))]
        queries += [("t", 99), ("nope", 1), ("v", 1), ("n", 1), (["x"], 1), ("t", [1])]
        for table, rid in queries:
            got = [_outcome(lambda c=c, t=table, r=rid: c._get_c(t, r)) for c in cores]
            assert got[0] == got[1], (table, rid)
            ms = seq if min_seq is None else min_seq
            got = [
                _outcome(lambda c=c, t=table, r=rid, m=ms: c._get_for(t, r, m, deadline))
                for c in cores
            ]
            # each side's sentinel (they differ under STATEENGINE_PURE_PYTHON=1)
            got = [("ok", "STALE") if g[1:] in ((C.STALE,), (blocks.STALE,)) else g for g in got]
            assert got[0] == got[1], (table, rid, ms, deadline)
            if got[0] == ("ok", "STALE"):
                assert ms > seq + behind or deadline <= 10**11
        # the plain case: a good entry, attached and current, gives the decoded record;
        # a copy whose CRC does not match is never decoded (the control of the check)
        for i, (payload, how, _h) in enumerate(recs):
            if how == "crc" and attached and not behind and mapping != "none":
                assert cores[0]._get_c("t", i) == ("retried", "t", i)
            if how == "ok" and attached and not behind and mapping != "none":
                want = _outcome(lambda p=payload: msgpack.unpackb(p, strict_map_key=False))
                assert _outcome(lambda i=i: cores[0]._get_c("t", i)) == want
    finally:
        for core in cores:
            core._core_release()
        ctl.close()
        data.close()


@needs_c
def test_reader_core_attach_refuses_alike() -> None:
    import mmap

    assert C is not None
    ctl = mmap.mmap(-1, 64)
    try:
        for off, fn in [(57, len), (-8, len), (64, len), (4, len), (8, None), (8, 3)]:
            got = [
                _outcome(lambda c=c, o=off, f=fn: c._core_attach(ctl, o, f))
                for c in (C.ReaderCore(), blocks.ReaderCorePy())
            ]
            assert got[0][0] == got[1][0] == "error", (off, fn)
            assert got[0][1] is got[1][1], (off, fn)
    finally:
        ctl.close()


@needs_c
@pytest.mark.parametrize("drop_map", [False, True])
def test_reader_get_survives_python_code_that_empties_the_index(drop_map: bool) -> None:
    """A lookup can run Python code (an id's __eq__) that drops the index, the table's
    last reference and the mapping under the get: C holds what it uses, never crashes,
    and answers as the twin does (the entry it found; no mapping: TypeError)."""
    import mmap

    assert C is not None
    ctl = mmap.mmap(-1, 64)
    data = mmap.mmap(-1, 64)
    payload = msgpack.packb({"a": 1})
    data[0 : len(payload)] = payload
    crc = zlib.crc32(payload, 7)
    got = []
    for base in (C.ReaderCore, blocks.ReaderCorePy):
        core = _hooked(base)()

        class Evil:
            def __hash__(self) -> int:
                return hash(1)

            def __eq__(self, other: object, core: Any = core) -> bool:
                core._idx.clear()  # the outer dict: the table dict's last other reference
                core._idx = {}
                if drop_map:
                    core._gmm = None
                return True

        core._core_attach(ctl, 8, msgpack.unpackb)
        core._seq = 0
        core._idx = {"t": {1: (0, len(payload), 7, crc, 0, 0)}}
        core._gmm = data
        try:
            got.append(_outcome(lambda core=core: core._get_c("t", Evil())))
            assert core._get_c("t", 1) is None
        finally:
            core._core_release()
    assert got[0] == got[1]
    assert got[0][0] == ("error" if drop_map else "ok")
    ctl.close()
    data.close()


# --- flat_ids: the engine's check of a bulk load (server/engine.py _flat_set_state) ------

_FIELDS = ("id", "a", "b")
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.lists(st.integers(), max_size=1),
    st.just(bytearray(b"x")),
)
_KEYS = st.sampled_from(["id", "a", "b", "c", 1])
_RECORD = st.one_of(
    st.fixed_dictionaries(
        {"id": st.one_of(st.integers(), st.text(max_size=2)), "a": _VALUES, "b": _VALUES}
    ),
    st.dictionaries(_KEYS, _VALUES, max_size=4),
    st.builds(lambda v: {"b": v, "a": v, "id": 1}, _VALUES),
    st.lists(st.integers(), max_size=1),
)
_ACCEPTS = st.tuples(
    st.just(()),
    st.sampled_from([(int, str), (str,), (), (float, int, bool, type(None), bytes)]),
    st.sampled_from([(bytes,), (type(None), bool), (int, str, float)]),
)


@needs_c
@settings(max_examples=400, deadline=None)
@given(st.lists(_RECORD, max_size=6), _ACCEPTS)
def test_flat_ids_c_matches_python(records: list[Any], accepts: Any) -> None:
    """The C pass and its twin give the same ids, or both None, for loads of records that
    are and are not flat (keys missing, extra, out of order or not strs; values of other
    types; mixed or bool ids; not maps)."""
    assert C is not None
    assert C.flat_ids(records, _FIELDS, accepts) == blocks.FLAT_IDS_PY(records, _FIELDS, accepts)


def test_flat_ids_takes_a_flat_load_and_refuses_near_misses() -> None:
    """Both paths take the bench's shape and refuse each near miss (the comparison above
    is not vacuous: these are cases where the answer differs)."""
    accepts = ((), (str,), (int, float))
    good = [{"id": 1, "a": "x", "b": 2}, {"id": 2, "a": "y", "b": 2.5}]
    near = [
        [*good, {"id": 3, "b": 2, "a": "x"}],  # key order
        [*good, {"id": "3", "a": "x", "b": 2}],  # mixed id types
        [*good, {"id": True, "a": "x", "b": 2}],  # a bool id
        [*good, {"id": 3, "a": "x", "b": True}],  # a type the field does not take as is
        [*good, {"id": 3, "a": "x"}],  # a missing field
        [*good, {"id": 3, "a": "x", "b": 2, "c": 1}],  # an extra one
        [*good, [3, "x", 2]],  # not a map
        [],
    ]
    paths = [blocks.FLAT_IDS_PY] + ([C.flat_ids] if C is not None else [])
    for flat_ids in paths:
        assert flat_ids(good, _FIELDS, accepts) == [1, 2]
        for records in near:
            assert flat_ids(records, _FIELDS, accepts) is None, records


# --- bulk: a big commit's puts, a checkpoint's rows, a dropped table's extents -----------

_BULK_TABLES = ["t", "u", "ä" * 40, "new"]
_U = st.integers(0, 2**40)


@st.composite
def _entries(draw: Any, plain: bool = False) -> dict[Any, Any]:
    """A table's index: id -> (off, asize, pstart, pend, hcrc, crc, pos, version), now and
    then an entry C leaves to the twin (a negative field, past 63 bits, not a tuple)."""
    out: dict[Any, Any] = {}
    for rid in draw(st.lists(good_ids, max_size=8)):
        e = tuple(draw(st.lists(_U, min_size=8, max_size=8)))
        if not plain and draw(st.integers(0, 9)) == 0:
            k = draw(st.integers(0, 7))
            e = (*e[:k], draw(st.sampled_from([-1, 2**63, 2**64 - 1])), *e[k + 1 :])
            if draw(st.booleans()):
                e = list(e)  # type: ignore[assignment]
        out[rid] = e
    return out


@st.composite
def _commit_state(draw: Any) -> tuple[Any, ...]:
    tables = {t: draw(_entries()) for t in draw(st.sets(st.sampled_from(_BULK_TABLES[:3])))}
    next_pos = {
        t: draw(st.one_of(st.integers(0, 2**40), st.sampled_from([-1, 2**63, 1.5])))
        for t in draw(st.sets(st.sampled_from(_BULK_TABLES)))
    }
    created = draw(st.sets(st.sampled_from(_BULK_TABLES)))
    ids = [*tables.get("t", {}), 1, 2, "a"]
    raw = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_BULK_TABLES),
                st.one_of(good_ids, st.sampled_from(ids)),
                st.binary(max_size=60),
            ),
            max_size=12,
        )
    )
    seq = draw(st.integers(1, 2**63 - 1))
    prefixes = {t: key_prefix(t) for t in _BULK_TABLES}
    try:
        prepared = blocks.prepare_python(raw, seq, prefixes, 1 << 20)[0]
    except ValueError:  # an id too long: the writer refuses it before the puts' loop
        assume(False)
    if prepared and draw(st.integers(0, 4)) == 0:  # a put C leaves to the twin
        k = draw(st.integers(0, len(prepared) - 1))
        p = prepared[k]
        odd = draw(st.sampled_from(["rid", "big", "list", "klen"]))
        if odd == "rid":
            prepared[k] = (p[0], 1.5, *p[2:])
        elif odd == "big":
            prepared[k] = (p[0], 2**64, *p[2:])  # no msgpack int: the ring op raises
        elif odd == "list":
            prepared[k] = list(p)  # type: ignore[call-overload]
        else:
            prepared[k] = (*p[:3], -1, *p[4:])
    return tables, next_pos, created, prepared, seq


def _copy_state(tables: dict[str, dict[Any, Any]], *rest: Any) -> tuple[Any, ...]:
    return ({t: dict(d) for t, d in tables.items()}, *(type(x)(x) for x in rest))


def _commit_puts_compiled(*args: Any) -> Any:
    """blocks.commit_puts as the compiled path runs it (C, the twin for odd puts)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocks, "_c", C)
        return blocks.commit_puts(*args)


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    state=_commit_state(),
    off=st.sampled_from([0, 8, 200, 65536 - 256, 70000, 2**32 + 8]),
    write=st.booleans(),
    with_ops=st.booleans(),
)
def test_commit_puts_c_equals_python(state: Any, off: int, write: bool, with_ops: bool) -> None:
    """The same blocks written, index, positions, created tables, undo, retired extents
    and ring ops, put by put from any index state, and the same error where a put's op
    cannot be encoded; C stops at what is not the plain case and the twin takes it."""
    tables, next_pos, created, prepared, seq = state
    need = sum(len(p[2]) for p in prepared)
    assume(not write or off < 1 << 20)
    runs = []
    for fn in (_commit_puts_compiled, _twin_commit_puts):
        t2, n2, c2 = _copy_state(tables, next_pos, created)
        mm = bytearray(off + need + 8) if write else None
        undo: list[Any] = []
        retired: list[Any] = []
        ops: list[bytes] | None = [] if with_ops else None
        got = _outcome(
            lambda fn=fn, t2=t2, n2=n2, c2=c2, mm=mm, undo=undo, retired=retired, ops=ops: fn(
                mm, off, seq, prepared, t2, n2, c2, undo, retired, ops, {}
            )
        )
        runs.append((got, mm, t2, n2, c2, undo, retired, ops and b"".join(ops)))
    c_run, py_run = runs
    assert c_run[0] == py_run[0]
    if c_run[0][0] == "error":
        return  # the writer rolls the index back over undo: compared by the writer's tests
    assert c_run[0][1] == off + need
    assert c_run[1:] == py_run[1:]
    if with_ops:
        ops = c_run[7] or b""
        got_ops = msgpack.unpackb(_array(len(prepared)) + ops, strict_map_key=False)
        assert got_ops == [
            [2, p[0], p[1], e[2], e[3], e[4], e[5], e[6], e[0]]
            for p, e in zip(prepared, _entries_in_order(prepared, c_run[2], off), strict=True)
        ]


def _twin_commit_puts(mm: Any, off: int, seq: int, puts: Any, *rest: Any) -> int:
    return int(blocks.COMMIT_PUTS_PY(mm, off, seq, puts, 0, len(puts), *rest))


def _entries_in_order(prepared: Any, tables: Any, off: int) -> list[Any]:
    """Each put's entry as it was made: from the offsets, which go in order, and the final
    entry's position (an id keeps its position within a commit)."""
    out = []
    for t, rid, block, klen, dlen, hcrc, crc in prepared:
        pstart = off + 16 + klen
        out.append((off, len(block), pstart, pstart + dlen, hcrc, crc, tables[t][rid][6]))
        off += len(block)
    return out


@needs_c
def test_commit_puts_survives_python_code_that_empties_its_inputs() -> None:
    """A table key's ``__eq__`` (run by the lookup of the put's table) clears the puts and
    the tables mid-call: the C loop holds the put, the table and its dict it works on."""
    assert C is not None
    puts: list[Any] = []
    tables: dict[Any, Any] = {}

    class Clearing(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            puts.clear()
            tables.clear()
            return str.__eq__(self, other)

    prefixes = {"t": key_prefix("t")}
    puts.extend(blocks.prepare_python([("t", i, b"x" * 50) for i in range(50)], 3, prefixes, 99)[0])
    tables[Clearing("t")] = {0: (0, 8, 0, 0, 0, 0, 0, 1)}
    mm = bytearray(1 << 16)
    stop, off = C.commit_puts(mm, 0, 3, puts, 0, tables, {}, set(), [], [], [])
    assert stop == 1 and off == 80 and puts == []  # one block of 80 B
    assert list(tables) == ["t"] and list(tables["t"]) == [0]  # the lookup found none: made


# --- bulk: flat_merge, the engine's BATCH of plain patches (server/engine.py) ------------

_PATCH = st.one_of(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), _VALUES, max_size=3),
    st.dictionaries(_KEYS, _VALUES, max_size=2),  # "id", a field not in accepts, an int key
    st.builds(lambda v: {"b": v}, _VALUES),
    st.lists(st.integers(), max_size=1),  # not a dict: the twin's (the engine checks first)
)
_MERGE_ACCEPTS = st.fixed_dictionaries(
    {"id": st.just((int,)), "a": _ACCEPTS.map(lambda a: a[1]), "b": _ACCEPTS.map(lambda a: a[2])}
)


@needs_c
@settings(max_examples=400, deadline=None)
@given(
    ids=st.lists(st.one_of(st.integers(0, 5), st.sampled_from(["s", 1.5])), max_size=8),
    patches=st.data(),
    records=st.dictionaries(
        st.integers(0, 4),
        st.one_of(st.fixed_dictionaries({"id": st.integers(), "a": _VALUES}), st.just({})),
        max_size=5,
    ),
    accepts=_MERGE_ACCEPTS,
)
def test_flat_merge_c_equals_python(
    ids: list[Any], patches: Any, records: dict[Any, Any], accepts: dict[str, Any]
) -> None:
    """The same merged records (a later patch of an id on the earlier one's result, an
    empty record taken from the table as ``or`` does), or both None: a missing record,
    "id" patched, a field or a value type not accepted; the inputs left as they were."""
    fields = patches.draw(st.lists(_PATCH, min_size=len(ids), max_size=len(ids)))
    before = {k: dict(v) for k, v in records.items()}, [dict(f) for f in fields if type(f) is dict]
    assert C is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocks, "_c", C)
        got = _outcome(lambda: blocks.flat_merge(ids, fields, records, accepts))
    assert got == _outcome(lambda: blocks.FLAT_MERGE_PY(ids, fields, records, accepts))
    after = {k: dict(v) for k, v in records.items()}, [f for f in fields if type(f) is dict]
    assert after == before


def test_flat_merge_takes_plain_patches_and_refuses_near_misses() -> None:
    """Both paths merge the plain case (the comparison above is not vacuous) and refuse
    each near miss."""
    accepts = {"id": (int,), "a": (str,), "b": (int, float)}
    records = {1: {"id": 1, "a": "x", "b": 2}, 2: {"id": 2, "a": "y"}}
    paths = [blocks.FLAT_MERGE_PY] + ([blocks.flat_merge] if C is not None else [])
    for merge in paths:
        got = merge([1, 2, 1], [{"b": 3}, {"b": 2.5, "a": "z"}, {"a": "w"}], records, accepts)
        assert got == [
            {"id": 1, "a": "x", "b": 3},
            {"id": 2, "a": "z", "b": 2.5},
            {"id": 1, "a": "w", "b": 3},
        ]
        assert list(got[1]) == ["id", "a", "b"]  # {**old, **fields}: the old keys first
        assert records[1] == {"id": 1, "a": "x", "b": 2}  # the table's records untouched
        for ids, patch in [
            ([3], {"a": "x"}),  # a missing record
            ([1], {"id": 1}),  # the id patched
            ([1], {"c": 1}),  # a field not in the schema
            ([1], {"b": True}),  # a type the field does not take as is
            ([1], {1: "x"}),  # not a str key
        ]:
            assert merge(ids, [patch], records, accepts) is None, patch


_CMD_VALUES = st.one_of(
    st.sampled_from(["PATCH_RECORD", "CREATE_RECORD", "t", "u"]), st.none(), st.integers(0, 2)
)
_COMMAND = st.one_of(
    st.fixed_dictionaries(
        {
            "command": st.just("PATCH_RECORD"),
            "state": st.sampled_from(["t", "t", "u"]),
            "id": st.one_of(st.integers(-(2**64), 2**64), st.just(True), st.just("1")),
            "fields": st.one_of(st.just({"a": 1}), st.just([1])),
        }
    ),
    st.dictionaries(
        st.sampled_from(["command", "state", "id", "fields", "x", 1]), _CMD_VALUES, max_size=5
    ),
    st.lists(st.integers(), max_size=1),
)


@needs_c
@settings(max_examples=400, deadline=None)
@given(commands=st.lists(_COMMAND, min_size=1, max_size=6), name=st.sampled_from(["t", "u"]))
def test_flat_patch_args_c_equals_python(commands: list[Any], name: str) -> None:
    """The same ids and fields, or both None, for batches that are and are not plain
    patches of one table (a key missing or extra, another command or state, an id not an
    exact int in 64 bits, fields not a dict, not a map)."""
    assert C is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocks, "_c", C)
        got = _outcome(lambda: blocks.flat_patch_args(commands, name))
    assert got == _outcome(lambda: blocks.FLAT_PATCH_ARGS_PY(commands, name))


def test_flat_patch_args_takes_plain_patches_and_refuses_near_misses() -> None:
    def patch(rid: Any = 1, **kw: Any) -> dict[str, Any]:
        return {"command": "PATCH_RECORD", "state": "t", "id": rid, "fields": {"a": 1}, **kw}

    good = [patch(1), patch(2)]
    paths = [blocks.FLAT_PATCH_ARGS_PY] + ([blocks.flat_patch_args] if C is not None else [])
    for args in paths:
        assert args(good, "t") == ([1, 2], [{"a": 1}, {"a": 1}])
        for near in [
            patch(command="CREATE_RECORD"),
            patch(state="u"),
            patch(True),
            patch("1"),
            patch(2**63),
            patch(fields=[1]),
            {**patch(), "x": 1},
            {k: v for k, v in patch().items() if k != "fields"},
            [1],
        ]:
            assert args([*good, near], "t") is None, near


@needs_c
@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.integers(0, 5), max_size=8),
    expires=st.lists(st.one_of(st.none(), st.integers(), st.just("absent")), max_size=8),
)
def test_flat_apply_c_equals_python(ids: list[int], expires: list[Any]) -> None:
    """The same journal, stamped and stored records, changes and timed indexes, an id
    twice included (its second journal entry holds the first's record), or the same
    KeyError for an id not in the table."""
    runs = []
    for fn in (C.flat_apply if C is not None else None, blocks.FLAT_APPLY_PY):
        assert fn is not None
        records: dict[Any, Any] = {i: {"id": i, "v": 0} for i in range(5)}
        out = []
        for k, rid in enumerate(ids):
            rec: dict[str, Any] = {"id": rid, "v": k}
            if k < len(expires) and expires[k] != "absent":
                rec["_expires"] = expires[k]
            out.append(rec)
        changes: dict[Any, None] = {}
        journal: list[Any] = []
        got = _outcome(
            lambda fn=fn, records=records, out=out, changes=changes, journal=journal: fn(
                ids, out, records, changes, journal, "T", "t", 7, "MISSING", "_v", "_expires"
            )
        )
        runs.append((got, records, out, changes, journal))
    assert runs[0] == runs[1]


_CREATE = st.one_of(
    st.fixed_dictionaries(
        {
            "command": st.sampled_from(["CREATE_RECORD", "CREATE_RECORD", "PATCH_RECORD"]),
            "state": st.sampled_from(["t", "t", "u"]),
            "record": st.one_of(st.just({"id": 1}), st.just([1]), st.none()),
        }
    ),
    st.dictionaries(
        st.sampled_from(["command", "state", "record", "x", 1]), _CMD_VALUES, max_size=4
    ),
    st.lists(st.integers(), max_size=1),
)


@needs_c
@settings(max_examples=400, deadline=None)
@given(commands=st.lists(_CREATE, min_size=1, max_size=6), name=st.sampled_from(["t", "u"]))
def test_flat_create_args_c_equals_python(commands: list[Any], name: str) -> None:
    """The same records, or both None, for batches that are and are not creates into one
    table (a key missing or extra, another command or state, a non-str key, not a map)."""
    assert C is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocks, "_c", C)
        got = _outcome(lambda: blocks.flat_create_args(commands, name))
    assert got == _outcome(lambda: blocks.FLAT_CREATE_ARGS_PY(commands, name))


def test_flat_create_args_takes_creates_and_refuses_near_misses() -> None:
    def create(**kw: Any) -> dict[str, Any]:
        return {"command": "CREATE_RECORD", "state": "t", "record": {"id": 1}, **kw}

    good = [create(), create(record=[2])]
    paths = [blocks.FLAT_CREATE_ARGS_PY] + ([blocks.flat_create_args] if C is not None else [])
    for args in paths:
        assert args(good, "t") == [{"id": 1}, [2]]
        for near in [
            create(command="PATCH_RECORD"),
            create(state="u"),
            {**create(), "x": 1},
            {k: v for k, v in create().items() if k != "record"},
            [1],
        ]:
            assert args([*good, near], "t") is None, near


@needs_c
@settings(max_examples=300, deadline=None)
@given(
    exts=st.lists(
        st.tuples(st.integers(0, 40).map(lambda k: 8 * k), st.integers(1, 6).map(lambda k: 8 * k)),
        max_size=20,
    ),
    ordered=st.booleans(),
)
def test_runs_c_equals_python(exts: list[tuple[int, int]], ordered: bool) -> None:
    """A dropped table's blocks as runs: sorted, touching ones merged, overlapping ones
    apart (the allocator's free_many refuses those), the same from C and the twin."""
    if ordered:
        exts = sorted(exts)
    assert C is not None
    got = C.runs(exts)
    assert got == blocks.RUNS_PY(exts)
    assert sum(n for _o, n in got) == sum(n for _o, n in exts)
    assert all(a[0] + a[1] != b[0] for a, b in itertools.pairwise(got))
    with pytest.raises(TypeError):
        C.runs([(-8, 8)])
