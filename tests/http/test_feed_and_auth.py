"""The SSE change feed (writes from another process reach an HTTP client) and the
bearer-token rule off loopback (a real gateway bound to 0.0.0.0, reached on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gwutil import Gateway, start, wait_output

from stateengine.app.gateway.__main__ import split_bind
from stateengine.app.gateway.auth import check_token, is_loopback, resolve_token

WRITER = """
import sys, time
from stateengine.client.client import Client
with Client(data_dir=sys.argv[1], timeout=10) as c:
    for i in range(100):
        c.create_record("f_sse", {"from": "writer", "i": i})
        time.sleep(0.1)
"""


def sse_events(lines: Any, deadline: float) -> Any:
    """(event, data) pairs from an SSE line iterator, until *deadline*."""
    event, data = None, None
    for line in lines:
        if time.monotonic() > deadline:
            return
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and event is not None:
            yield event, data
            event, data = None, None


def test_feed_streams_writes_made_by_another_process(gateway: Gateway) -> None:
    http = gateway.http
    assert http.post("/api/states", json={"state": "f_sse"}).status_code == 201
    writer = None
    with http.stream("GET", "/api/feed", params={"tables": "f_sse", "records": "true"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.iter_lines(), time.monotonic() + 20)
        assert next(events)[0] == "hello"
        # Only now write, from another process; a subscription takes a moment to reach
        # the writer, so the writer keeps writing until the test has seen its records.
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(gateway.data_dir)])
        try:
            seen = []
            for event, data in events:
                assert event == "change" and data["table"] == "f_sse"
                seen.append(data)
                if len(seen) == 3:
                    break
        finally:
            writer.terminate()
            writer.wait(10)
    assert len(seen) == 3, "no change events within 20 s"
    assert [d["puts"][0]["from"] for d in seen] == ["writer"] * 3
    seqs = [d["seq"] for d in seen]
    assert seqs == sorted(seqs) and all(d["size"] >= 1 for d in seen)
    assert all(d["put_ids"] == [d["puts"][0]["id"]] for d in seen)


def test_token_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert not is_loopback("192.0.2.1") and not is_loopback("example.com")
    check_token(None, "127.0.0.1")  # loopback stays open
    with pytest.raises(ValueError, match="without a bearer token"):
        check_token(None, "0.0.0.0")
    with pytest.raises(ValueError, match="at least 16"):
        check_token("short", "0.0.0.0")
    assert split_bind("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError):
        split_bind("nohost")


def test_token_file_is_made_private_and_reused(tmp_path: Path) -> None:
    token = resolve_token(None, "0.0.0.0", tmp_path)
    path = tmp_path / "http.token"
    assert token and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token(None, "0.0.0.0", tmp_path) == token
    assert resolve_token(None, "127.0.0.1", tmp_path) is None  # loopback: no token
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others"):
        resolve_token(None, "0.0.0.0", tmp_path)


def test_off_loopback_requires_the_token(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(tmp_path / "x")]
    out = subprocess.run(
        [*cmd, "--http", "0.0.0.0:0", "--http-token", "short"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "at least 16" in out.stderr
    # A real gateway on all interfaces, reached through loopback only.
    server, url = start(tmp_path, bind="0.0.0.0:0")
    try:
        token = (server.data_dir / "http.token").read_text().strip()
        out = wait_output(server, "  http:")
        assert "bearer token required, in" in out and "0.0.0.0" not in out
        with httpx.Client(base_url=url, timeout=10.0) as http:
            for path in ("/", "/api/states", "/openapi.json", "/api/feed"):
                r = http.get(path)
                assert r.status_code == 401, path
                assert r.json()["error"]["type"] == "Unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")
            r = http.get("/api/states", headers={"Authorization": "Bearer " + token[:-1] + "x"})
            assert r.status_code == 401
            r = http.post(
                "/api/states/a_t/records",
                json={"x": 1},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201
            assert http.get("/api/states/a_t", params={"token": token}).status_code == 200
            # The dashboard: /?token=T sets an HttpOnly cookie and drops the token from the URL.
            r = http.get("/", params={"token": token})
            assert r.status_code == 303 and r.headers["location"] == "/"
            assert "httponly" in r.headers["set-cookie"].lower()
            http.cookies.set("stateengine_token", token)
            assert http.get("/").status_code == 200
            assert http.get("/api/states/a_t").json()["size"] == 1
        with server.connect() as client:
            assert client.list_states() == ["a_t"]  # the 401s changed nothing
    finally:
        assert server.stop() == 0
        server.cleanup()
    assert not (server.data_dir / "http.json").exists()
    assert os.path.exists(server.data_dir / "http.token")


def test_serve_stops_its_gateway_with_a_stream_open(tmp_path: Path) -> None:
    """SIGTERM to ``serve`` ends open SSE streams and the gateway promptly and cleanly."""
    server, url = start(tmp_path)
    try:
        gw_pid = json.loads((server.data_dir / "http.json").read_text())["pid"]
        with (
            httpx.Client(base_url=url, timeout=10.0) as http,
            http.stream("GET", "/api/feed") as r,
        ):
            lines = r.iter_lines()
            assert next(lines) == "event: hello"
            started = time.monotonic()
            assert server.stop() == 0
            assert time.monotonic() - started < 8
            rest = list(lines)  # the stream ended instead of hanging
            assert all("change" not in line for line in rest)
        with pytest.raises(ProcessLookupError):
            os.kill(gw_pid, 0)
        out = server.output()
        assert "killed" not in out and "stopped after" in out
        assert not (server.data_dir / "http.json").exists()
    finally:
        server.stop()
        server.cleanup()
