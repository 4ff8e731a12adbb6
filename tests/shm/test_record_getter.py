"""``Client.get_record`` in C (``ClientCore._get_record_c``, shm/_speedups.c) against its
twin ``Client._get_record_py``: the same answer or error, the same calls into Python (the
slow path, the server) and the same view state afterwards, for every branch of the body:
no view, the arena off, a closed client, ids only the server judges, no reader, STALE
(behind the client's writes, a re-check due), a miss, records with a TTL past, ahead or
not comparable, a record that is not a dict, ``SnapshotExpired`` and other errors from the
reader, a codec's or a fault switch's get (not ``_plain``), unset attributes, a keyword
call, and a subclass whose property shadows one of the C members."""

from __future__ import annotations

import mmap
import time
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.client import client as client_module
from stateengine.client.client import Client
from stateengine.client.view import ArenaView
from stateengine.errors import SnapshotExpired
from stateengine.shm import blocks
from stateengine.shm.codec import pack_internal

needs_c = pytest.mark.skipif(not blocks.COMPILED, reason="the C extension is not built here")


class Reader(blocks.ReaderCore):
    """A reader core over a private mapping whose ways back into Python do what ``act``
    says and are logged."""

    act = "none"
    log: list[Any]

    def _hook(self, kind: str, table: Any, rid: Any) -> Any:
        self.log.append((kind, table, rid))
        if self.act == "expired":
            raise SnapshotExpired("superseded")
        if self.act == "error":
            raise KeyError(kind)
        if self.act == "record":
            return {"via": kind}
        return None

    def _get_sync(self, table: Any, rid: Any) -> Any:
        return self._hook("sync", table, rid)

    def _get_retried(self, table: Any, rid: Any) -> Any:
        return self._hook("retried", table, rid)

    def get(self, table: Any, rid: Any) -> Any:
        self.log.append(("get", table, rid))
        if self._plain:
            return self._get_c(table, rid)
        return self._hook("codec", table, rid)


class Probe(Client):
    """A client with no socket: the server's answer is logged, the slow path scripted."""

    log: list[Any]
    slow: Any

    def __init__(self) -> None:  # nothing: the test sets what get_record reads
        pass

    def _call(self, request: dict[str, Any]) -> Any:
        self.log.append(("server", request["state"], request["id"]))
        return ("server", request["state"], request["id"])

    def _reader_slow(self) -> Any:
        self.log.append(("slow",))
        return self.slow


class ShadowedProbe(Probe):
    """``use_arena`` a property: the C member under it is set, but Python reads this."""

    @property
    def use_arena(self) -> Any:  # type: ignore[override]
        return self.log is None  # False


IDS = [1, "k", 5, 7, 8, 9, 10, 999, 1.0, True, [1], None]
RECORDS: list[Any] = [
    {"n": 1},
    {"n": 2, "_expires": 0.0},  # past
    {"n": 3, "_expires": 1e18},  # ahead
    {"n": 4, "_expires": 2**63 - 1},  # an int, ahead
    {"n": 5, "_expires": "soon"},  # not comparable: TypeError
    [1, 2],  # not a dict
    {"n": 6},
]


def _world(
    cls: type[Probe],
    seed: dict[str, Any],
) -> tuple[Probe, Any, Reader, list[Any], list[mmap.mmap]]:
    log: list[Any] = []
    data = mmap.mmap(-1, 4096)
    ctl = mmap.mmap(-1, 64)
    ctl[8:16] = seed["seq"].to_bytes(8, "little")
    tdict: dict[Any, Any] = {}
    pos = 0
    for i, rec in enumerate(RECORDS):
        raw = pack_internal(rec)
        data[pos : pos + len(raw)] = raw
        tdict[[1, "k", 5, 7, 8, 9, 10][i]] = (pos, pos + len(raw), 0, zlib.crc32(raw), 0, 0)
        pos += len(raw)
    reader = Reader()
    reader._core_attach(ctl, 8, msgpack.unpackb)
    reader._seq = seed["seq"] - seed["moved"]  # a moved seq word: the _get_sync hook
    reader._idx = {"t": tdict}
    reader._gmm = data
    reader._plain = seed["plain"]
    reader.act = seed["act"]
    reader.log = log
    view = ArenaView.__new__(ArenaView)
    view.reader = reader if seed["reader"] else None
    view.deadline = seed["deadline"]
    client = cls()
    client.log = log
    client.slow = reader if seed["slow"] else None
    if seed["view"]:
        client._view = view
    elif seed["view"] is None:
        client._view = None
    if seed["use_arena"] is not None:
        if cls is ShadowedProbe:
            blocks.ClientBase.use_arena.__set__(client, seed["use_arena"])  # type: ignore[attr-defined]
        else:
            client.use_arena = seed["use_arena"]
    if seed["closed"] is not None:
        client._closed = seed["closed"]
    if seed["seen"] is not None:
        client.seen_seq = seed["seen"]
    return client, view, reader, log, [data, ctl]


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("error", type(exc), str(exc))


def _run(cls: type[Probe], seed: dict[str, Any], how: str, state: Any, rid: Any) -> Any:
    client, view, reader, log, maps = _world(cls, seed)
    fn = Client._get_record_c if how == "c" else Client._get_record_py  # type: ignore[attr-defined]
    try:
        if seed["kw"]:
            got = _outcome(lambda: fn(client, state=state, id=rid))
        else:
            got = _outcome(lambda: fn(client, state, rid))
        return got, log, view.deadline, reader._seq
    finally:
        reader._core_release()
        for m in maps:
            m.close()


def _mostly(usual: Any, *others: Any) -> st.SearchStrategy[Any]:
    """*usual* three times in four (the plain path), else one of *others*."""
    return st.one_of(st.just(usual), st.just(usual), st.just(usual), st.sampled_from(others))


seeds = st.fixed_dictionaries(
    {
        "seq": st.integers(2, 2**40),
        "moved": _mostly(0, 1),  # the seq word moved: the _get_sync hook
        "plain": _mostly(True, False),
        "act": st.sampled_from(["none", "record", "expired", "error"]),
        "reader": _mostly(True, False),
        "slow": st.booleans(),
        "view": _mostly(True, None, False),  # False: never set
        "use_arena": _mostly(True, False, 1, 0, None),
        "closed": _mostly(False, True, 0, None),
        "seen": _mostly(0, 1, 2**41, 2**70, -1, None, "x"),
        "deadline": _mostly(float("inf"), 1e18, 0.0, -1, 10**30, "x"),
        "kw": _mostly(False, True),
    }
)


@needs_c
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds, shadowed=_mostly(False, True))
def test_get_record_c_equals_python(seed: dict[str, Any], shadowed: bool) -> None:
    cls = ShadowedProbe if shadowed else Probe
    for state in ("t", "nope"):
        for rid in IDS:
            c = _run(cls, seed, "c", state, rid)
            py = _run(cls, seed, "py", state, rid)
            assert c == py, (seed, state, rid)


PLAIN = {
    "seq": 10, "moved": 0, "plain": True, "act": "none", "reader": True, "slow": True,
    "view": True, "use_arena": True, "closed": False, "seen": 0, "deadline": 1e18,
    "kw": False,
}  # fmt: skip


@needs_c
@pytest.mark.parametrize(
    ("change", "rid", "log", "deadline"),
    [
        ({}, 1, [], 1e18),  # an arena hit
        ({}, 999, [("server", "t", 999)], 1e18),  # a miss
        ({}, 1.0, [("server", "t", 1.0)], 1e18),  # an id only the server judges
        ({"moved": 1, "act": "expired"}, 1, [("sync", "t", 1), ("server", "t", 1)], 0.0),
        (
            {"plain": False, "act": "expired"},
            1,
            [("get", "t", 1), ("codec", "t", 1), ("server", "t", 1)],
            0.0,
        ),
        ({"seen": 11}, 1, [("slow",), ("get", "t", 1)], 1e18),  # STALE: behind the writes
        ({"deadline": 0.0}, 1, [("slow",), ("get", "t", 1)], 0.0),  # STALE: a re-check due
        ({"reader": False}, 1, [("slow",), ("get", "t", 1)], 1e18),
        ({"reader": False, "slow": False}, 1, [("slow",), ("server", "t", 1)], 1e18),
        ({"use_arena": False}, 1, [("server", "t", 1)], 1e18),
        ({"closed": True}, 1, [("server", "t", 1)], 1e18),
    ],
)
def test_get_record_c_takes_each_way_as_python(
    change: dict[str, Any], rid: Any, log: list[Any], deadline: float
) -> None:
    """Each branch, with the calls it makes into Python and the view's re-check (the
    hypothesis test's draws reach some of these rarely)."""
    seed = {**PLAIN, **change}
    c = _run(Probe, seed, "c", "t", rid)
    assert c == _run(Probe, seed, "py", "t", rid)
    assert (c[1], c[2]) == (log, deadline)


@needs_c
def test_get_record_c_reads_the_arena_and_honours_the_ttl() -> None:
    """The plain cases answer from the arena without the server, and a record past its
    TTL (with ``_wall_time`` patched, as the body reads it at each use) goes there."""
    seed = PLAIN
    got, log, _d, _s = _run(Probe, seed, "c", "t", 1)
    assert (got, log) == (("ok", {"n": 1}), [])
    got, log, _d, _s = _run(Probe, seed, "c", "t", 5)  # _expires 1e18: live
    assert got == ("ok", {"n": 3, "_expires": 1e18})
    saved = client_module._wall_time
    client_module._wall_time = lambda: 2e18
    try:
        got, log, _d, _s = _run(Probe, seed, "c", "t", 5)
    finally:
        client_module._wall_time = saved
    assert (got, log) == (("ok", ("server", "t", 5)), [("server", "t", 5)])
    got, log, _d, _s = _run(Probe, seed, "c", "t", 999)  # a miss
    assert log == [("server", "t", 999)]


def test_get_record_is_the_twin_on_the_pure_path() -> None:
    if blocks.COMPILED:
        assert Client.get_record is Client._get_record_c  # type: ignore[attr-defined]
        assert Client.get_record.__doc__ is not None
        assert Client.get_record.__doc__.startswith(Client._get_record_py.__doc__.split("\n")[0])  # type: ignore[union-attr]
    else:
        assert Client.get_record is Client._get_record_py
    assert time.time is client_module._wall_time


class OverridingReader(Reader):
    def _get_for(self, table: Any, rid: Any, min_seq: int, deadline: float) -> Any:
        self.log.append(("override", table, rid))
        return {"n": "override"}


class DuckView:
    """Not an ArenaView: no C members to read."""

    def __init__(self, reader: Any, deadline: float) -> None:
        self.reader = reader
        self.deadline = deadline

    def recheck_soon(self) -> None:
        self.deadline = 0.0


@needs_c
@pytest.mark.parametrize("how", ["override", "duck"])
def test_get_record_c_honours_python_overrides(how: str) -> None:
    """A reader class overriding ``_get_for`` and a view that is not an ArenaView: C
    takes them through Python's attribute lookups, as the twin does (a C read of their
    members would miss the override or read another layout)."""
    results = []
    for fn in (Client._get_record_c, Client._get_record_py):  # type: ignore[attr-defined]
        client, _view, reader, log, maps = _world(Probe, PLAIN)
        try:
            if how == "override":
                reader.__class__ = OverridingReader
            else:
                client._view = DuckView(reader, 1e18)  # type: ignore[assignment]
            results.append((_outcome(lambda fn=fn, c=client: fn(c, "t", 1)), log))
        finally:
            reader._core_release()
            for m in maps:
                m.close()
    assert results[0] == results[1]
    want = {"n": "override"} if how == "override" else {"n": 1}
    assert results[0][0] == ("ok", want)


class Guarded(Probe):
    """A client whose ``__getattribute__`` turns the arena off (review of the C path: it
    read the members directly, so the arena answered where Python went to the server)."""

    def __getattribute__(self, name: str) -> Any:
        if name == "use_arena":
            return False
        return super().__getattribute__(name)


@needs_c
def test_get_record_c_honours_a_getattribute_override() -> None:
    """A class with its own ``__getattribute__`` gets Python's lookups from C too."""
    results = []
    for how in ("c", "py"):
        got, log, *_ = _run(Guarded, PLAIN, how, "t", 1)
        results.append((got, log))
    assert results[0] == results[1]
