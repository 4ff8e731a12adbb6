"""Snapshots across processes: exact as of v, all-or-nothing, expiry never returns data."""

from __future__ import annotations

import queue
import time

import msgpack
import shm_workers as W
from shm_harness import SPAWN

from stateengine.shm import ArenaWriter, faults

N = 120


def _rewrite(w: ArenaWriter, seq: int) -> None:
    w.commit(seq, [(W.TABLE, i, msgpack.packb(W.record(i, seq))) for i in range(N)])


class _Result(Exception):
    pass


def run_snapshot_rewrite(fault: str | None = None) -> list[str]:
    """Run phases A, B, C; return the list of what the reader saw wrong."""
    writer_faults = {fault} & {"publish_early", "reclaim_unsafe"}
    reader_faults = [fault] if fault and not writer_faults else []
    faults.FAULTS.update(writer_faults)
    try:
        w = ArenaWriter.create("setest", initial_size=1 << 20, grace=0.01, expiry=0.5)
    finally:
        faults.FAULTS.difference_update(writer_faults)
    out = SPAWN.Queue()
    go, stop = SPAWN.Event(), SPAWN.Event()
    p = SPAWN.Process(target=W.snapshot_reader, args=(w.name, N, reader_faults, out, go, stop))
    try:
        seq = 1
        _rewrite(w, seq)
        p.start()

        def wait_msg(kind: str, timeout: float = 60) -> tuple[object, ...]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    msg: tuple[object, ...] = out.get(timeout=0.01)
                except queue.Empty:
                    if not p.is_alive():
                        break
                    continue
                if msg[0] == "result":
                    raise _Result(msg[1])
                if msg[0] == kind:
                    return msg
            raise AssertionError(f"reader sent no {kind!r}")

        # A
        wait_msg("pinned")
        for _ in range(15):  # rewrite everything, space churns (the pin must hold it)
            seq += 1
            _rewrite(w, seq)
        go.set()
        wait_msg("A done")
        # B: keep committing until the reader is through
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seq += 1
            _rewrite(w, seq)
            try:
                msg = out.get_nowait()
            except queue.Empty:
                continue
            if msg[0] == "result":
                raise _Result(msg[1])
            assert msg[0] == "B done"
            break
        # C: the pin expires (0.5 s); the writer reuses the space meanwhile
        wait_msg("pinned")
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            seq += 1
            _rewrite(w, seq)
        if not writer_faults:  # the expired pin no longer counts
            assert w.stats()["oldest_pinned"] is None
        for _ in range(5):
            seq += 1
            _rewrite(w, seq)
        go.set()
        wait_msg("result-never")
    except _Result as res:
        problems: list[str] = res.args[0]
        return problems
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join(5)
        w.close()
    raise AssertionError("unreachable")


def test_snapshot_exact_all_or_nothing_and_expiry() -> None:
    assert run_snapshot_rewrite() == []
