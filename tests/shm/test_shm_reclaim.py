"""Reclamation against dead and stalled readers, measured from outside the process."""

from __future__ import annotations

import os
import signal
import time

import msgpack
import shm_workers as W
from shm_harness import SPAWN

from stateengine.shm import ArenaWriter
from stateengine.shm.layout import allocated_bytes

N = 64
LONG = bool(os.environ.get("STATEENGINE_SHM_LONG"))


def _put(w: ArenaWriter, seq: int, i: int) -> None:
    w.commit(seq, [(W.TABLE, i, msgpack.packb(W.record(i, seq)))])


def _start_holder(w: ArenaWriter, hold: float) -> tuple[object, object, object, int]:
    out, go = SPAWN.Queue(), SPAWN.Event()
    p = SPAWN.Process(target=W.hold_snapshot, args=(w.name, out, go, hold))
    p.start()
    msg = out.get(timeout=60)
    assert msg[0] == "pinned"
    return p, out, go, msg[1]


def test_kill9_reader_space_reclaimed_within_1s() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=0.01, expiry=60)
    try:
        seq = 0
        for i in range(N):
            seq += 1
            _put(w, seq, i)
        p, _out, _go, v = _start_holder(w, hold=60)
        for i in range(N):  # retire everything the reader can see
            seq += 1
            _put(w, seq, i)
        assert w.stats()["oldest_pinned"] == v
        assert w.stats()["retired_bytes"] > 0
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            seq += 1
            _put(w, seq, seq % N)
            st = w.stats()
            if st["oldest_pinned"] is None and st["horizon"] > v:
                break
            time.sleep(0.01)
        took = time.monotonic() - t0
        p.join(10)  # type: ignore[attr-defined]
        assert p.exitcode == -signal.SIGKILL  # type: ignore[attr-defined]
        assert st["oldest_pinned"] is None and st["horizon"] > v, st
        assert took < 1.0
    finally:
        w.close()


def test_sigstopped_reader_expires_and_memory_stays_bounded() -> None:
    """10^5 overwrites in CI (10^6 with STATEENGINE_SHM_LONG=1) past a stopped reader."""
    size = 1 << 20
    w = ArenaWriter.create("setest", initial_size=size, max_size=size, grace=0.005, expiry=0.3)
    try:
        seq = 0
        for i in range(N):
            seq += 1
            _put(w, seq, i)
        p, out, go, _v = _start_holder(w, hold=120)
        os.kill(p.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
        try:
            bound = allocated_bytes(w.name) + size  # control + the one generation
            overwrites = 1_000_000 if LONG else 100_000
            peak = 0
            for k in range(overwrites):
                seq += 1
                _put(w, seq, k % N)
                if k % 5000 == 0:
                    peak = max(peak, sum(allocated_bytes(f) for f in w.files()))
            st = w.stats()
            assert st["generation"] == 1, st  # never grew past the stalled pin
            assert st["oldest_pinned"] is None  # the stalled pin expired
            assert peak <= bound, (peak, bound)
            assert sum(allocated_bytes(f) for f in w.files()) <= bound
        finally:
            os.kill(p.pid, signal.SIGCONT)  # type: ignore[attr-defined]
        go.set()  # type: ignore[attr-defined]
        msg = out.get(timeout=30)  # type: ignore[attr-defined]
        assert msg[0] == "expired", msg
        p.join(30)  # type: ignore[attr-defined]
        assert p.exitcode == 0  # type: ignore[attr-defined]
    finally:
        w.close()


def test_writer_reclaim_without_commits_after_reader_closes() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20, grace=0.0)
    try:
        from stateengine.shm import ArenaReader

        for s in range(1, 50):
            _put(w, s, s % 5)
        with ArenaReader.attach(w.name) as r:
            snap = r.snapshot()
            for s in range(50, 100):
                _put(w, s, s % 5)
            assert w.stats()["retired_bytes"] > 0
            snap.close()
        assert w.reclaim() > 0
        assert w.stats()["retired_bytes"] == 0
    finally:
        w.close()
