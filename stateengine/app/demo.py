"""``stateengine demo``: a real server, a pool of worker processes, and a crash.

The writer starts on the embedded defaults; three spawned workers claim tasks with
``CLAIM_RECORD`` under a lease, count progress with ``INCREMENT`` and complete each task
with ``if_version`` fencing. The demo kill -9s one worker in the middle of a task; its
lease runs out and another worker finishes the task. Live progress, then a summary.

It cannot hurt: by default it runs on a temporary data directory of its own, removed
afterwards (kept, with the server's log inside, only when the demo failed); given
``--data-dir``, it refuses a directory that already holds its tables or that a running
server holds, and writes nothing outside it. ``demo --wire`` (:func:`wire`) sends a short
session to a real server over a plain ZeroMQ socket and prints each frame both ways.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from stateengine.app.gateway import gateway_info
from stateengine.client.client import Client
from stateengine.errors import StateEngineError, VersionConflict
from stateengine.runtime import discovery as paths
from stateengine.testing import ServerProcess

#: the tables the demo makes; a data directory that holds one of them is refused
TABLES = ("tasks", "counters")
TASKS = 30
WORKERS = 3
LEASE = 1.5
STUCK_WORKER = 0  # hangs on its 4th task, and is killed there


def worker(endpoint: str, wid: int) -> None:
    rng = random.Random(wid)
    claimed = 0
    with Client(endpoint, timeout=10) as client:
        for _ in range(TASKS * 3):  # bounded: the pool ends when nothing is claimable
            task = client.claim_record(
                "tasks",
                where={"status": "pending"},
                fields={"status": "running", "worker": f"w{wid}"},
                order_by="id",
                lease_seconds=LEASE,
                wait=LEASE,  # parked in the server: a lease running out wakes it, no polling
            )
            if task is None:
                if not client.list_records("tasks", where={"status": "running"}, limit=1):
                    return
                continue
            client.increment("tasks", task["id"], "attempts")
            claimed += 1
            if wid == STUCK_WORKER and claimed == 4:
                time.sleep(60)  # this worker hangs on a task: the demo kills it here
            time.sleep(rng.uniform(0.05, 0.2))  # the "work"
            # Completion and the counter in one BATCH: all or nothing, even under kill -9.
            finish = {
                "command": "BATCH",
                "commands": [
                    {"command": "PATCH_RECORD", "state": "tasks", "id": task["id"],
                     "fields": {"status": "done"}, "if_match": {"worker": f"w{wid}"}},
                    {"command": "INCREMENT", "state": "counters", "id": "done", "field": "n"},
                ],
            }  # fmt: skip
            reply = client.execute(finish)
            if not reply["ok"] and reply["error"]["type"] != VersionConflict.__name__:
                raise RuntimeError(reply["error"]["message"])
            # A VersionConflict: someone re-claimed it after our lease ran out.


DEMO: list[dict[str, Any]] = [
    {
        "command": "CREATE_STATE",
        "state": "tasks",
        "schema": {"title": "string", "status": "string", "priority": "integer"},
    },
    {
        "command": "CREATE_RECORD",
        "state": "tasks",
        "record": {"title": "load orders.csv", "status": "pending", "priority": 2},
    },
    {
        "command": "CREATE_RECORD",
        "state": "tasks",
        "record": {"title": "dedupe customers", "status": "pending", "priority": 1},
    },
    {
        "command": "CREATE_RECORD",
        "state": "tasks",
        "record": {"title": "oops", "status": "pending", "priority": "high"},
    },
    {
        "command": "CLAIM_RECORD",
        "state": "tasks",
        "where": {"status": "pending"},
        "fields": {"status": "running"},
        "order_by": "priority",
        "lease_seconds": 30,
    },
    {
        "command": "PATCH_RECORD",
        "state": "tasks",
        "id": 2,
        "fields": {"status": "done"},
        "if_version": 4,
    },
    {
        "command": "PATCH_RECORD",
        "state": "tasks",
        "id": 2,
        "fields": {"status": "again"},
        "if_version": 4,
    },
    {
        "command": "BATCH",
        "commands": [
            {"command": "CREATE_STATE", "state": "counters"},
            {"command": "CREATE_RECORD", "state": "counters", "record": {"id": "rows", "n": 0}},
            {"command": "INCREMENT", "state": "counters", "id": "rows", "field": "n", "by": 500},
        ],
    },
    {"command": "LIST_RECORDS", "state": "tasks", "order_by": "-priority"},
    {"command": "GET_STATE_INFO", "state": "tasks"},
    {"command": "GET_SCHEMA", "state": "tasks"},
    {"command": "LIST_STATES"},
    {"command": "STATS"},
]


#: how the demo runs ``stateengine serve``: this interpreter, without the working
#: directory on ``sys.path`` (``-P``), so the server runs the installed package that runs
#: the demo, not a checkout's source folder that the current directory happens to hold
LAUNCHER = (sys.executable, "-P", "-m", "stateengine")


class DemoServer(ServerProcess):
    """The demo's server, its log inside its data directory (nothing beside it)."""

    @property
    def log_path(self) -> Path:
        return self.data_dir / "demo-server.log"


class DemoRefused(Exception):
    """The demo will not run here: one line for the user, exit 1."""


@contextlib.contextmanager
def demo_data_dir(data_dir: str | None) -> Iterator[tuple[Path, list[bool]]]:
    """The data directory to run on, and a flag list: set ``keep[0]`` to keep it.

    Given none, a private temporary directory, removed afterwards unless kept. Given
    one, it is made private (0700) if new; one a running server holds is refused.

    :raises DemoRefused: a server runs on *data_dir*, or it is open to other users.
    """
    keep = [data_dir is not None]
    made = None if data_dir else tempfile.mkdtemp(prefix="stateengine-demo-")  # mode 0700
    data = Path(made or str(data_dir)).absolute()
    try:
        with contextlib.suppress(StateEngineError):
            info = paths.read_server_file(data)
            pid = info.get("pid")
            if isinstance(pid, int) and paths.pid_alive(pid, info.get("start_time")):
                raise DemoRefused(
                    f"a server (pid {pid}) is running on {data}; the demo starts its own:"
                    " leave out --data-dir, or name an unused directory"
                )
        try:
            paths.private_dir(data)  # before the log is written into it
        except OSError as exc:
            raise DemoRefused(str(exc)) from None
        yield data, keep
    finally:
        if not keep[0]:
            shutil.rmtree(data, ignore_errors=True)


def run(data_dir: str | None = None, http: str | None = None, linger: float = 0.0) -> int:
    """Run the demo; with *http*, also the dashboard, kept up *linger* s after the summary.

    :return: 0 when every task was done exactly once; 1 otherwise or when refused
        (one line on stderr says why).
    """
    if http:
        missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            print(
                f"stateengine demo: --http needs {' and '.join(missing)} (the 'http' extra):"
                " pip install -e '.[http]' in the checkout",
                file=sys.stderr,
            )
            return 1
    try:
        with demo_data_dir(data_dir) as (data, keep):
            ok = pool(data, http, linger)
            if not ok:
                keep[0] = True
                print(f"stateengine demo: kept {data} (the server's log: demo-server.log)")
    except DemoRefused as exc:
        print(f"stateengine demo: {exc}", file=sys.stderr)
        return 1
    print(
        "stateengine demo: server stopped;",
        "all tasks done exactly once" if ok else "NOT all tasks done",
    )
    return 0 if ok else 1


def pool(data: Path, http: str | None, linger: float) -> bool:
    """Start the server on *data*, run the worker pool, kill one, print the summary.

    :raises DemoRefused: the server did not start, or *data* already holds a table of
        :data:`TABLES`.
    """
    print(f"stateengine demo: starting the server on {data}")
    serve_args = ("--http", http) if http else ()
    try:
        server = DemoServer(data, *serve_args, launcher=LAUNCHER).start()
    except RuntimeError as exc:
        last = [line for line in str(exc).splitlines() if line.strip()][-1:]
        raise DemoRefused(f"the server did not start: {' '.join(last)}") from None
    try:
        return pool_on(server, http, linger)
    finally:
        server.stop()
        server.cleanup()


def pool_on(server: ServerProcess, http: str | None, linger: float) -> bool:
    """The demo on a started *server*; whether every task was done exactly once."""
    data = server.data_dir
    with server.connect() as client:
        print(f"  endpoint {server.endpoint}")
        taken = sorted(set(TABLES) & set(client.list_states()))
        if taken:
            raise DemoRefused(
                f"{data} already holds the table(s) {', '.join(taken)}; the demo never"
                " touches existing tables: leave out --data-dir for a temporary one"
            )
        if http:
            # The login URL: it leaves the gateway's token in the browser's cookie.
            print(f"  dashboard {gateway_info(data).login_url}  (open it in a browser to watch)")
        print()
        client.create_state(
            "tasks",
            schema={
                "title": "string",
                "status": "string",
                "worker": "string?",
                "attempts": "integer",
            },
            indexes=[["status", "id"]],  # claims and the running-task check use it
        )
        client.set_state(
            "tasks",
            [
                {
                    "title": f"load part-{i:03d}.csv",
                    "status": "pending",
                    "worker": None,
                    "attempts": 0,
                }
                for i in range(TASKS)
            ],
        )
        client.create_record("counters", {"id": "done", "n": 0})
        ctx = mp.get_context("spawn")
        procs = {w: ctx.Process(target=worker, args=(server.endpoint, w)) for w in range(WORKERS)}
        for p in procs.values():
            p.start()
        victim, killed_task, seen = STUCK_WORKER, None, None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(p.is_alive() for p in procs.values()):
            running = client.list_records("tasks", where={"status": "running"})
            done = client.get_record("counters", "done")["n"]
            if killed_task is None:
                mine = [t["id"] for t in running if t["worker"] == f"w{victim}"]
                if mine and mine[0] == seen:  # the same task on two looks: the worker hangs
                    os.kill(procs[victim].pid or 0, signal.SIGKILL)
                    killed_task = mine[0]
                    print(
                        f"  !! kill -9 worker w{victim} while it runs task {killed_task};"
                        f" its lease ends in {LEASE} s"
                    )
                seen = mine[0] if mine else None
            busy = " ".join(f"{t['worker']}:#{t['id']}" for t in running)
            print(f"  done {done:>2}/{TASKS}  running [{busy}]", flush=True)
            time.sleep(0.4)
        for p in procs.values():
            p.join(5)
            if p.is_alive():
                p.kill()
        tasks = client.list_records("tasks")
        done = client.get_record("counters", "done")["n"]
        by_worker = Counter(t["worker"] for t in tasks if t["status"] == "done")
        print("\nsummary")
        print(f"  tasks done: {sum(by_worker.values())}/{TASKS}, counter says {done}")
        print(f"  by worker:  {dict(sorted(by_worker.items()))}")
        if killed_task is not None:
            t = client.get_record("tasks", killed_task)
            print(
                f"  task {killed_task}: claimed {t['attempts']} times, finished by "
                f"{t['worker']} after w{victim}'s lease ran out"
            )
        ok = done == TASKS and all(t["status"] == "done" for t in tasks)
        if http and linger > 0:
            print(f"\nthe dashboard stays up for {linger:g} s (Ctrl-C ends it sooner)")
            try:
                time.sleep(linger)
            except KeyboardInterrupt:
                pass
    return ok


def wire() -> int:
    """``demo --wire``: :data:`DEMO` sent to a real server, each frame printed both ways.

    A server starts on a temporary data directory (``--store none``); a plain ZeroMQ
    DEALER socket, as any client in any language would use, sends each request as one
    JSON frame (``req_id`` first) and prints the frame the server sent back, byte for
    byte. The directory is removed afterwards.

    :return: 0, or 1 when the server did not start or stopped answering.
    """
    with demo_data_dir(None) as (data, keep):
        server = DemoServer(data, "--store", "none", launcher=LAUNCHER)
        try:
            server.start()
        except RuntimeError as exc:
            keep[0] = True
            print(f"stateengine demo: the server did not start: {exc}", file=sys.stderr)
            return 1
        try:
            return send_frames(server)
        finally:
            server.stop()
            server.cleanup()


def send_frames(server: DemoServer) -> int:
    """Send :data:`DEMO` over a DEALER socket to *server*; print every frame."""
    print(f"stateengine demo --wire: a real server, pid {server.pid}, at {server.endpoint}")
    print("each request is one frame on a ZeroMQ DEALER socket (JSON here; msgpack works")
    print("too); the server's ROUTER answers with one frame, in the request's format\n")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    try:
        sock.connect(server.endpoint)
        for n, request in enumerate(DEMO, 1):
            frame = json.dumps({"req_id": n, **request}).encode()
            print(f">> {len(frame)} bytes: {frame.decode()}")
            sock.send(frame)
            try:
                reply = sock.recv()
            except zmq.Again:
                print("stateengine demo: no reply within 10 s", file=sys.stderr)
                return 1
            print(f"<< {len(reply)} bytes: {reply.decode()}\n")
    finally:
        sock.close(linger=0)
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1] if len(sys.argv) > 1 else None))
