"""``stateengine demo``: a real server, a pool of worker processes, and a crash.

The writer starts on the embedded defaults; three spawned workers claim tasks with
``CLAIM_RECORD`` under a lease, count progress with ``INCREMENT`` and complete each task
with ``if_version`` fencing. The demo kill -9s one worker in the middle of a task; its
lease runs out and another worker finishes the task. Live progress, then a summary.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sys
import time
from collections import Counter

from stateengine.app.gateway import gateway_info
from stateengine.client.client import Client
from stateengine.errors import VersionConflict
from stateengine.runtime import discovery as paths
from stateengine.testing import ServerProcess

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


def run(data_dir: str | None = None, http: str | None = None, linger: float = 0.0) -> int:
    """Run the demo; with *http*, also the dashboard, kept up *linger* s after the summary."""
    data = paths.resolve_data_dir(data_dir)
    print(f"stateengine demo: starting the server on {data}")
    serve_args = ("--http", http) if http else ()
    with ServerProcess(data, *serve_args) as server, server.connect() as client:
        print(f"  endpoint {server.endpoint}")
        if http:
            # The login URL: it leaves the gateway's token in the browser's cookie.
            print(f"  dashboard {gateway_info(data).login_url}  (open it in a browser to watch)")
        print()
        for name in ("tasks", "counters"):
            if name in client.list_states():
                client.delete_state(name)
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
    print(
        "stateengine demo: server stopped;",
        "all tasks done exactly once" if ok else "NOT all tasks done",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1] if len(sys.argv) > 1 else None))
