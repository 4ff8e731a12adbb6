"""How every benchmark row is measured: calibrated repeats, round-robin, medians.

Shared by ``bench/server.py`` and the suite (``python -m bench``), so their figures are
taken the same way: each row is warmed up, its repeats sized to about the same wall time,
then repeat 1 of every row runs, then repeat 2, ... so a burst of machine noise spreads
over all rows instead of landing on one.
"""

from __future__ import annotations

import gc
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Row:
    """One line of the table: ``body(n)`` performs *n* operations (writes, gets, echoes)."""

    key: str
    label: str
    body: Callable[[int], None]
    ops: int = 0  # operations per repeat, set by calibration
    samples_us: list[float] = field(default_factory=list)  # µs per operation, per repeat
    # A fixed-wall-time row instead: ``window()`` runs once and returns (µs/op, ops);
    # its ops column is the median of the ops each repeat held.
    window: Callable[[], tuple[float, int]] | None = None
    ops_seen: list[int] = field(default_factory=list)  # ops per repeat of a window row
    # The suite's grouping (``python -m bench``): what is measured, on which system, and
    # whether the row reads best as time per op ("us") or as a rate ("/s").
    workload: str = ""
    system: str = ""
    unit: str = "us"
    # Untimed, before every timed run: e.g. an arena reader catching up with the writes
    # other rows made since its last repeat, so a get row times the steady-state get.
    setup: Callable[[], object] | None = None
    # Rows too slow to repeat as often as the others (a restart of 10^6 records): at most
    # this many repeats, and no warm-up run.
    max_repeats: int | None = None

    @property
    def us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def rate(self) -> float:
        return 1e6 / self.us


def timed(body: Callable[[int], None], n: int) -> float:
    """Seconds for ``body(n)``."""
    gc.collect()
    start = time.perf_counter()
    body(n)
    return time.perf_counter() - start


def for_seconds(
    body: Callable[[int], None], seconds: float, chunk: int
) -> Callable[[], tuple[float, int]]:
    """A fixed-wall-time run of *body* (in chunks of *chunk* ops): (µs per op, ops).

    For rows whose cost per op swings by 10× with the disk (fsync): a repeat sized by
    calibration could otherwise run for minutes; this one ends after *seconds*.
    """

    def window() -> tuple[float, int]:
        ops = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            body(chunk)
            ops += chunk
            now = time.perf_counter()
            if now >= deadline:
                return (now - start) / ops * 1e6, ops

    return window


def calibrate(row: Row, seconds: float, granule: int) -> None:
    """Warm the row up, then size its repeats to take about *seconds* each.

    The estimate is the fastest of three short runs, so one burst of noise during
    calibration does not shrink the row's repeats.
    """
    if row.window is not None:
        if row.max_repeats is None:
            row.ops = row.window()[1]  # warm-up; its size is whatever the window holds
        return
    if row.setup is not None:
        row.setup()
    timed(row.body, granule)  # warm-up: first connections, caches, allocator
    n = granule
    while True:
        dt = timed(row.body, n)
        if dt >= 0.03 or n >= 1_000_000:
            break
        n *= 4
    per_op = min(dt, timed(row.body, n), timed(row.body, n)) / n
    row.ops = max(granule, int(seconds / per_op) // granule * granule)


def measure(rows: list[Row], repeats: int) -> None:
    for _ in range(repeats):
        for row in rows:
            if row.max_repeats is not None and len(row.samples_us) >= row.max_repeats:
                continue
            if row.window is not None:
                gc.collect()
                us, ops = row.window()
                row.samples_us.append(us)
                row.ops_seen.append(ops)
            else:
                if row.setup is not None:
                    row.setup()
                row.samples_us.append(timed(row.body, row.ops) / row.ops * 1e6)
    for row in rows:
        if row.ops_seen:
            row.ops = int(statistics.median(row.ops_seen))


def proc_cpu(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) of process *pid*, or of its thread *tid*, so far
    (Linux ``/proc``, clock ticks): the ``*cpu`` scripts' reading of another process."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def callgrind_total(module: str, args: list[str], env: dict[str, str] | None = None) -> int:
    """The instructions ``python -m <module> <args>`` runs under ``valgrind
    --tool=callgrind`` (its "Collected" total): the CPU tools' --instructions rows, which
    the machine's load does not move."""
    run = subprocess.run(
        [
            *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
            *(sys.executable, "-m", module, *args),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{run.stderr[-2000:]}")
    return int(found.group(1))
