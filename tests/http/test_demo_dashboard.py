"""``stateengine demo --http``: the README's demo with its dashboard, watched over HTTP."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from stateengine.errors import StateEngineError
from stateengine.runtime import discovery as paths


def line_reader(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The demo's output lines, read by a thread (select() misses lines already buffered)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def read_until(lines: queue.Queue[str], marker: str, timeout: float) -> list[str]:
    """Lines the demo printed up to the one containing *marker* (bounded wait)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"no {marker!r} within {timeout} s; printed:\n{''.join(seen)}")


def stop_orphaned_server(data_dir: Path) -> None:
    """SIGTERM the server a killed demo left running, and wait for it (bounded)."""
    with contextlib.suppress(StateEngineError):
        pid = int(paths.read_server_file(data_dir)["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and paths.pid_alive(pid, None):
            time.sleep(0.05)


def test_demo_serves_its_dashboard_while_it_runs(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "stateengine", "demo", "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(
        [*cmd, "--http", "127.0.0.1:0", "--linger", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines, pump = line_reader(proc)
    try:
        started = read_until(lines, "dashboard http://", 60)
        login = started[-1].split()[1]  # the login URL: http://HOST:PORT/?token=T
        url, _, token = login.partition("?token=")
        with httpx.Client(base_url=url, timeout=10.0) as http:
            assert http.get("/").status_code == 401  # the token is required on loopback too
            r = http.get(login)
            assert r.status_code == 303 and r.headers["location"] == "/"
            assert "<html" in http.get("/").text.lower()  # with the cookie it just got
            http.headers["Authorization"] = f"Bearer {token}"
            finished = read_until(lines, "the dashboard stays up", 120)
            assert any("tasks done: 30/30" in line for line in finished), finished
            info = http.get("/api/states/tasks").json()
            assert info["size"] == 30, info
            page = http.get("/api/states/tasks/records", params={"limit": 5}).json()
            records = page["records"]
            assert len(records) == 5 and all(r["status"] == "done" for r in records), page
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends the linger: the server stops
        assert proc.wait(30) == 0
        assert "all tasks done exactly once" in "".join(read_until(lines, "demo: server", 10))
    finally:
        if proc.poll() is None:
            proc.kill()  # no cleanup runs in the demo: stop the server it started
            proc.wait(10)
            stop_orphaned_server(tmp_path / "d")
        pump.join(10)  # EOF once the demo and its workers are gone
        assert proc.stdout is not None
        proc.stdout.close()
