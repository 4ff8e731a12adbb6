"""Redo ``docs/dashboard.png``: a demo workload with the dashboard open in headless Chromium.

    python docs/dashboard_screenshot.py [--out docs/dashboard.png] [--seconds 12]

Starts ``stateengine serve --http 127.0.0.1:0`` on a temporary data directory, then a
small ETL run in worker processes: a loader fills ``leads``, three workers claim
``tasks`` under leases and count rows in ``progress`` with ``INCREMENT``. The dashboard
is opened in Debian's chromium (installed with apt-get when missing, as the browser
test does), left to fill its rate graphs, and screenshotted. Everything it starts is
stopped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "http"))

from gwbrowser import blankness, make_driver, require_chromium  # noqa: E402
from gwutil import wait_for_gateway  # noqa: E402

from stateengine.client.client import Client  # noqa: E402
from stateengine.testing import ServerProcess  # noqa: E402

SPAWN = mp.get_context("spawn")


def loader(data_dir: str, seconds: float) -> None:
    rng = random.Random(1)
    with Client(data_dir=data_dir, timeout=10) as c:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            c.create_record(
                "leads",
                {
                    "email": f"user{n}@example.com",
                    "source": rng.choice(["csv", "api", "form"]),
                    "score": rng.randint(1, 100),
                },
            )
            time.sleep(rng.uniform(0.01, 0.04))


def worker(data_dir: str, wid: int, seconds: float) -> None:
    rng = random.Random(wid)
    with Client(data_dir=data_dir, timeout=10) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            task = c.claim_record(
                "tasks",
                where={"status": "pending"},
                fields={"status": "running", "worker": f"w{wid}"},
                order_by="id",
                lease_seconds=5,
            )
            if task is None:
                time.sleep(0.1)
                continue
            for _ in range(rng.randint(2, 6)):
                c.increment("progress", "rows", "n", by=rng.randint(50, 500))
                time.sleep(rng.uniform(0.02, 0.08))
            c.patch_record("tasks", task["id"], {"status": "done"}, if_version=task["_version"])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    p.add_argument("--seconds", type=float, default=12.0)
    args = p.parse_args()
    require_chromium()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", "--http", "127.0.0.1:0").start()
        procs: list[mp.process.BaseProcess] = []
        try:
            gateway = wait_for_gateway(server.data_dir, server)  # URL and token (http.json)
            with server.connect() as c:
                c.create_state(
                    "tasks", schema={"title": "string", "status": "string", "worker": "string?"}
                )
                c.set_state(
                    "tasks",
                    [
                        {"title": f"load part-{i:03}.csv", "status": "pending", "worker": None}
                        for i in range(400)
                    ],
                )
                c.create_record("progress", {"id": "rows", "n": 0})
                c.create_state("flags", schema={"on": "boolean"})
                c.create_record("flags", {"id": "dedupe", "on": True})
            data_dir = str(server.data_dir)
            procs = [SPAWN.Process(target=loader, args=(data_dir, args.seconds + 10))]
            procs += [
                SPAWN.Process(target=worker, args=(data_dir, w, args.seconds + 10))
                for w in range(3)
            ]
            for proc in procs:
                proc.start()
            driver = make_driver(Path(tmp) / "profile", 1440, 860)
            try:
                driver.get(gateway.login_url)  # the token becomes the dashboard's cookie
                time.sleep(args.seconds)
                driver.execute_script("select('tasks');")
                time.sleep(1.5)
                png = driver.get_screenshot_as_png()
            finally:
                driver.quit()
            colours, busy = blankness(png)
            assert colours >= 16 and busy >= 0.02, (colours, busy)
            Path(args.out).write_bytes(png)
            print(f"wrote {args.out} ({len(png)} bytes, {colours} colours)")
        finally:
            for proc in procs:
                proc.terminate()
                proc.join(10)
            server.stop()
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
