"""Runs the writer schedule of ``shm_workers`` in the test process against reader children."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import shm_workers as W

from stateengine.shm import ArenaWriter, faults

SPAWN = mp.get_context("spawn")


@dataclass
class StressResult:
    commits: int
    readers: list[dict[str, Any]] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(r[key] for r in self.readers)


def run_stress(
    *,
    groups: int = 100,
    readers: int = 2,
    reads: int = 500_000,
    seconds: float = 60.0,
    reader_faults: tuple[str, ...] = (),
    writer_faults: tuple[str, ...] = (),
    grace: float = 0.0,
    initial_size: int = 1 << 20,
) -> StressResult:
    """1 writer (here) committing the schedule nonstop, ``readers`` spawn children."""
    faults.FAULTS.update(writer_faults)
    try:
        w = ArenaWriter.create("setest", initial_size=initial_size, grace=grace, expiry=5.0)
    finally:
        faults.FAULTS.difference_update(writer_faults)
    procs: list[Any] = []
    try:
        seq = 0
        for _ in range(groups):  # populate
            seq += 1
            puts, dels = W.commit_args(seq, groups)
            w.commit(seq, puts, dels)
        out = SPAWN.Queue()
        procs = [
            SPAWN.Process(
                target=W.stress_reader,
                args=(w.name, groups, reads, seconds, list(reader_faults), out),
            )
            for _ in range(readers)
        ]
        for p in procs:
            p.start()
        results: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds + 60
        while len(results) < readers and time.monotonic() < deadline:
            for _ in range(20):
                seq += 1
                puts, dels = W.commit_args(seq, groups)
                w.commit(seq, puts, dels)
            try:
                results.append(out.get_nowait())
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and out.empty():
                    break
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0, f"reader exit code {p.exitcode}"
        assert len(results) == readers, "a reader did not report"
        return StressResult(commits=seq, readers=results)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        w.close()


def shm_files(name: str) -> list[str]:
    d = os.path.dirname(name)
    base = os.path.basename(name)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith(base))
