"""``ArenaWriter.reserve``: a start's arena generation made on a thread beside the recovery.

The load must take the reserved generation when it is big enough and build there the
arena it builds without one (the same reads); a reservation the load does not take (too
small, never loaded, its thread failed) must leave no file and no thread behind, at
the load or at ``close`` (a failed start). Each test checks the reservation was made
(its file existed, or the load took it): none passes by reserving nothing.
"""

from __future__ import annotations

import mmap
import os
import resource
import sys
import threading
from typing import Any

import msgpack
import pytest

from stateengine.shm import ArenaReader, ArenaWriter, faults
from stateengine.shm import layout as L

MiB = 1 << 20


def records(n: int) -> dict[str, tuple[list[int], list[bytes]]]:
    return {"t": (list(range(n)), [msgpack.packb({"i": i, "s": "x" * 40}) for i in range(n)])}


def reserve_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "arena-reserve"]


def spare_path(w: ArenaWriter) -> str:
    return L.gen_path(w.name, 2)


def test_the_load_takes_the_reserved_generation() -> None:
    w = ArenaWriter.create("setest", initial_size=64 * 1024)
    try:
        data = records(20_000)  # ~1.3 MB of blocks from ~1.2 MB of records
        w.reserve(sum(map(len, data["t"][1])))
        spare = w._spare
        assert spare is not None
        made = spare.result()  # the test waits; a start does not
        assert made is not None and os.path.exists(spare_path(w))
        w.load(3, data, {"t": msgpack.packb({"size": 20_000})})
        assert w._gen is made and w._spare is None  # taken, not made again
        with ArenaReader.attach(w.name) as r:
            assert r.get("t", 0) == {"i": 0, "s": "x" * 40}
            assert r.get("t", 19_999) == {"i": 19_999, "s": "x" * 40}
        w.commit(4, [("t", 5, msgpack.packb("after"))])
        with ArenaReader.attach(w.name) as r:
            assert r.get("t", 5) == "after"
    finally:
        w.close()
    assert not os.path.exists(spare_path(w)) and not reserve_threads()


def test_a_reservation_too_small_is_dropped_and_the_load_grows() -> None:
    w = ArenaWriter.create("setest", initial_size=64 * 1024)
    try:
        data = records(20_000)
        w.reserve(200 * 1024)  # a hint far below what the load needs
        spare = w._spare
        assert spare is not None and spare.result() is not None
        w.load(3, data)
        assert w._gen is not None and w._gen.gen == 2 and w._gen is not spare.gen
        with ArenaReader.attach(w.name) as r:
            assert r.get("t", 19_999) == {"i": 19_999, "s": "x" * 40}
        # the first generation retiring, the second made by the load itself
        assert sorted(w.files()) == sorted([w.name, spare_path(w), L.gen_path(w.name, 1)])
    finally:
        w.close()
    assert not os.path.exists(spare_path(w)) and not reserve_threads()


@pytest.mark.parametrize("load", [False, True])
def test_a_failed_start_leaves_no_spare(load: bool) -> None:
    """close() before any load (recovery failed: the server closes the arena) or a load
    that fits without it: the thread is joined and the spare's file removed."""
    w = ArenaWriter.create("setest", initial_size=16 * MiB)
    try:
        w.reserve(8 * MiB)
        spare = w._spare
        assert spare is not None
        if load:
            spare.result()
            assert os.path.exists(spare_path(w))  # control: there was a spare to remove
            w.load(1, records(10))  # fits the first generation
            assert w._gen is not None and w._gen.gen == 1 and w._spare is None
            assert not os.path.exists(spare_path(w))
    finally:
        w.close()
    # close() joined the thread: the spare was made (the file it removed existed)
    assert spare.gen is not None and spare.error is None
    assert not os.path.exists(spare_path(w)) and not reserve_threads()
    assert not os.path.exists(w.name)


def test_a_failed_reservation_leaves_the_load_as_without_it(monkeypatch: Any) -> None:
    monkeypatch.setattr(faults, "FAULTS", faults.FAULTS | {"reserve_fails"})
    w = ArenaWriter.create("setest", initial_size=64 * 1024)
    try:
        w.reserve(1 * MiB)
        spare = w._spare
        assert spare is not None
        assert spare.result() is None and isinstance(spare.error, OSError)
        assert not os.path.exists(spare_path(w))  # the thread removed its own file
        w.load(3, records(20_000))
        with ArenaReader.attach(w.name) as r:
            assert r.get("t", 19_999) == {"i": 19_999, "s": "x" * 40}
    finally:
        w.close()
    assert not reserve_threads()


def test_reserve_is_for_a_fresh_arena_only() -> None:
    w = ArenaWriter.create("setest", initial_size=64 * 1024)
    try:
        w.commit(1, [("t", 1, msgpack.packb(1))])
        w.reserve(8 * MiB)
        assert w._spare is None
    finally:
        w.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_POPULATE_WRITE")
def test_populate_faults_the_mapping_in() -> None:
    """Writing a populated mapping takes no page fault; the control, a mapping of the
    same file not populated, one a page (a kernel without MADV_POPULATE_WRITE: skipped)."""
    pages = 256
    size = pages * mmap.PAGESIZE
    fd = os.memfd_create("setest-populate")
    try:
        L.allocate(fd, 2 * size)
        done, control = L.map_fd(fd, size, writable=True), mmap.mmap(fd, size, offset=size)
        try:
            if not L.populate(done):
                pytest.skip("this kernel has no MADV_POPULATE_WRITE")

            def faults_writing(mm: mmap.mmap) -> int:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                for page in range(pages):
                    mm[page * mmap.PAGESIZE] = 1
                return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

            assert faults_writing(done) < pages // 8
            assert faults_writing(control) >= pages // 2
        finally:
            done.close()
            control.close()
    finally:
        os.close(fd)


def test_a_spare_given_up_on_is_removed_by_its_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() stops waiting after JOIN_TIMEOUT (here 0): the generation the thread
    finishes afterwards is nobody's, so the thread removes its file itself."""
    from stateengine.shm import writer as writer_module

    go, started = threading.Event(), threading.Event()
    real_populate = L.populate

    def slow_populate(mm: Any) -> bool:
        started.set()  # the file is made
        go.wait(30)  # held until the writer has given up on the spare
        return real_populate(mm)

    monkeypatch.setattr(writer_module._Spare, "JOIN_TIMEOUT", 0.0)
    monkeypatch.setattr(L, "populate", slow_populate)
    w = ArenaWriter.create("setest", initial_size=16 * MiB)
    w.reserve(8 * MiB)
    spare = w._spare
    assert spare is not None and started.wait(30)
    w.close()  # gives up at once: the thread is still populating
    assert os.path.exists(spare_path(w))  # control: the file was there when it gave up
    go.set()
    spare._thread.join(30)
    assert not spare._thread.is_alive()
    assert spare.gen is None and not os.path.exists(spare_path(w))
