"""CPU time of a start's parts, in this process: what the ``restart`` row's server spends.

    PYTHONPATH=. python -m bench.restartcpu [--records N] [--repeats K] [--data DIR] [--server]

A data dir holding a snapshot of N records (default 10^6, the bench's shape; kept in
``--data`` when given, so runs of two checkouts read the same file) is recovered and
published as ``Server.start`` does it: the cyclic GC off, an empty ``ArenaPublisher``, the
log store's ``recover``, the engine's deadlines, ``publish_state`` from the recovered
bytes. Each repeat runs in a fresh interpreter (a start's memory is fresh too); the
figures are ``time.process_time`` per part (its system time and minor page faults
apart: a start's fresh memory is mostly page faults), the arena writer's steps inside
the publish included, then the median of each over the repeats. CPU, not wall: on a shared machine
the medians of interleaved runs compare where wall times do not.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import proc_cpu

#: the arena writer's steps of a load, timed inside ``publish_state``
WRITER_STEPS = ("_grow", "_load_blocks", "_place", "_write_checkpoint")


def make_snapshot(data: Path, n: int) -> None:
    from bench.durability import big_engine
    from stateengine.server.engine import TableEngine
    from stateengine.server.persist_log import LogStore
    from stateengine.server.persistence import open_store

    data.mkdir(mode=0o700, parents=True)  # a data directory must be private
    store = open_store(data, "log", "always", snapshot_mode="inline")
    assert isinstance(store, LogStore)
    store.recover(TableEngine())
    store.snapshot(big_engine(n))
    store.close()


#: the main thread's CPU and faults where the platform tells them apart (Linux): the start's
#: critical path, without the arena reserve's thread working beside it (its share is in
#: the ``all threads`` line)
_RUSAGE = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
_CPU = time.thread_time if _RUSAGE != resource.RUSAGE_SELF else time.process_time


def one_start(data: Path) -> dict[str, float]:
    """The parts of one start on *data*, CPU seconds (run in a fresh process)."""
    gc.disable()
    total0 = time.process_time()
    from stateengine.server.engine import TableEngine
    from stateengine.server.persistence import open_store
    from stateengine.server.publish import ArenaPublisher
    from stateengine.shm.writer import ArenaWriter

    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = _CPU()
            r0 = resource.getrusage(_RUSAGE)
            try:
                return fn(*args, **kwargs)
            finally:
                r1 = resource.getrusage(_RUSAGE)
                for key, value in (
                    (name, _CPU() - t0),
                    (f"{name} (system)", r1.ru_stime - r0.ru_stime),
                    (f"{name} (page faults)", r1.ru_minflt - r0.ru_minflt),
                ):
                    times[key] = times.get(key, 0.0) + value

        return run

    for step in WRITER_STEPS:
        setattr(ArenaWriter, step, timed(f"  {step}", getattr(ArenaWriter, step)))
    engine = TableEngine()
    publisher = timed("arena create", ArenaPublisher)(engine)
    store = open_store(data, "log")
    try:
        # Server._reserve_arena (getattr: a checkout from before it runs this too)
        hint = getattr(store, "recovery_bytes", None)
        reserve = getattr(publisher, "reserve", None)
        if hint is not None and reserve is not None:
            timed("arena reserve", reserve)(hint())
        report = timed("recover", store.recover)(engine)
        ttl_tables = getattr(report, "ttl_tables", None)
        rebuild = engine.rebuild_deadlines
        timed("rebuild_deadlines", rebuild)(*([ttl_tables] if ttl_tables is not None else []))
        timed("publish_state", publisher.publish_state)(report.encoded)
        times["all threads, start to publish"] = time.process_time() - total0
    finally:
        store.close()
        publisher.close()
    return times


def server_start(data: Path, timeout: float = 300.0) -> dict[str, float]:
    """A real ``stateengine serve --store log`` on *data*, from launch to its first reply
    (what the bench's ``restart_server`` row times): its CPU then, the whole process's and
    its main thread's (the arena reserve's thread apart; Linux's /proc), and the wall time."""
    from stateengine.client.client import Client
    from stateengine.runtime import discovery as paths

    (data / "server.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(data), "--store", "log"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"the server did not start within {timeout} s")
            try:
                info = paths.read_server_file(data)
            except Exception:
                info = {}
            if info.get("pid") == proc.pid:
                break
            time.sleep(0.005)
        with Client(info["endpoint"], timeout=timeout) as c:
            c.list_states()  # the first reply
        wall = time.perf_counter() - t0
        return {
            "server, all threads": proc_cpu(proc.pid),
            "server, main thread": proc_cpu(proc.pid, proc.pid),
            "server, wall (launch to reply)": wall,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, help="snapshot dir to make or reuse")
    parser.add_argument(
        "--server",
        action="store_true",
        help="also time a real server's start to its first reply, each repeat (Linux)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(one_start(args.child)))
        return 0
    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="se-restartcpu-"))
        data = tmp / "data"
    try:
        if not (data / "snapshot.sesnap").exists():
            make_snapshot(data, args.records)
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-m", "bench.restartcpu", "--child", str(data)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            if args.server:
                runs[-1].update(server_start(data))
                runs[-1]["server main thread / recover"] = (
                    runs[-1]["server, main thread"] / runs[-1]["recover"]
                )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"CPU seconds (user + system), median (min-max) of {args.repeats} starts on {data}:")
    for name in runs[0]:
        values = [r[name] for r in runs]
        fmt = "9.0f" if name.endswith("faults)") else "9.3f"
        print(
            f"{name:36s} {statistics.median(values):{fmt}}  "
            f"({min(values):{fmt.lstrip('9')}}-{max(values):{fmt.lstrip('9')}})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
