"""The SSE change feed (writes from another process reach an HTTP client), and the token
(issue 14 items 8 and 9): required on every address and every route, handed to a
browser as a login URL traded for a cookie, and taken from a file or the environment."""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gwutil import Gateway, client, start, wait_output

from stateengine.app.gateway import auth
from stateengine.app.gateway.__main__ import split_bind
from stateengine.app.gateway.app import cookie_name
from stateengine.app.gateway.auth import check_token, is_loopback, resolve_token, token_matches

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


def test_token_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert not is_loopback("192.0.2.1") and not is_loopback("example.com")
    with pytest.raises(ValueError, match="at least 16"):
        check_token("short")
    with pytest.raises(ValueError, match="only letters"):
        check_token("0123456789abcdef; Path=/")  # a cookie or a URL could not carry it
    assert split_bind("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError):
        split_bind("nohost")
    # The comparison is hmac.compare_digest's: its time does not depend on where a guess
    # differs (a timing attack learns the length at most).
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert token_matches(b"x" * 20, "x" * 20) and not token_matches(b"y" * 20, "x" * 20)
    assert not token_matches(b"", "x" * 20)
    assert calls == [(b"x" * 20, b"x" * 20), (b"y" * 20, b"x" * 20), (b"", b"x" * 20)]


def test_token_file_is_made_private_and_reused(tmp_path: Path) -> None:
    token = resolve_token(None, tmp_path)
    path = tmp_path / "http.token"
    assert token and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token(None, tmp_path) == token
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        resolve_token(None, tmp_path)


def routes(gateway: Gateway) -> list[tuple[str, str]]:
    """Every (method, path) of the gateway, from its own OpenAPI description (read with
    the token), path parameters filled in, plus the pages it does not describe."""
    spec = gateway.http.get("/openapi.json").json()
    out = [("GET", "/"), ("GET", "/static/dashboard.js"), ("GET", "/openapi.json")]
    out += [("GET", "/docs"), ("GET", "/api/nonexistent")]
    for path, methods in spec["paths"].items():
        filled = path.replace("{state}", "a_open").replace("{id}", "1").replace("{key}", "k")
        out += [(m.upper(), filled) for m in methods]
    return out


def test_every_route_needs_the_token_on_loopback(gateway: Gateway) -> None:
    """Issue 14 item 8: loopback is not private (any local user can connect), so a
    request without the token changes and reveals nothing."""
    http = gateway.http  # sends the token
    assert http.post("/api/states/a_open/records", json={"id": 1, "x": 1}).status_code == 201
    before = http.get("/api/states/a_open/records").json()
    seen = set()
    with httpx.Client(base_url=gateway.url, timeout=10.0) as anon:
        for method, path in routes(gateway):
            seen.add(path)
            r = anon.request(method, path, json={"x": 2})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.json()["error"]["type"] == "Unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "login_url" in r.json()["error"]["message"]
            wrong = {"Authorization": "Bearer " + gateway.info.token[:-1] + "!"}
            assert anon.request(method, path, json={"x": 2}, headers=wrong).status_code == 401
            cookie = {"Cookie": f"{cookie_name(port(gateway))}=nottherighttoken12345"}
            assert anon.request(method, path, json={"x": 2}, headers=cookie).status_code == 401
    assert {"/api/feed", "/api/states/a_open", "/api/batch", "/api/stats"} <= seen
    assert http.get("/api/states/a_open/records").json() == before  # nothing changed
    assert http.get("/api/states").status_code == 200  # the bearer token is enough


def port(gateway: Gateway) -> int:
    return int(gateway.url.rstrip("/").rsplit(":", 1)[1])


def test_login_url_trades_the_token_for_a_cookie(gateway: Gateway) -> None:
    info = gateway.info
    assert info.login_url == f"{info.url}?token={info.token}"
    http_json = gateway.data_dir / "http.json"
    assert stat.S_IMODE(http_json.stat().st_mode) == 0o600  # it holds the token
    assert json.loads(http_json.read_text())["token"] == info.token
    with httpx.Client(base_url=info.url, timeout=10.0) as browser:
        assert browser.get("/").status_code == 401
        r = browser.get(info.login_url)
        assert r.status_code == 303 and r.headers["location"] == "/"  # the clean URL
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith(f"{cookie_name(port(gateway))}={info.token};")
        assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
        # Any page: the other query parameters stay, the token goes.
        r = browser.get("/api/states", params={"token": info.token, "x": "1"})
        assert r.status_code == 303 and r.headers["location"] == "/api/states?x=1"
        # The cookie (as a browser keeps it) opens every page, the feed included.
        assert browser.get("/").status_code == 200
        assert "<html" in browser.get("/").text.lower()
        assert browser.get("/api/states").status_code == 200
        with browser.stream("GET", "/api/feed") as feed:
            assert feed.status_code == 200 and next(feed.iter_lines()) == "event: hello"
        # A wrong ?token= is refused even with the right cookie; a write never logs in.
        assert browser.get("/", params={"token": "x" * 43}).status_code == 401
        r = browser.post("/api/states", params={"token": info.token}, json={"state": "a_q"})
        assert r.status_code == 401
    assert gateway.http.get("/api/states/a_q").status_code == 404


def test_off_loopback_needs_the_token_too(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(tmp_path / "x")]
    out = subprocess.run(
        [*cmd, "--http", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STATEENGINE_HTTP_TOKEN": "short"},
    )
    assert out.returncode == 1 and "at least 16" in out.stderr
    # A real gateway on all interfaces, reached through loopback (no Host check there).
    server, info = start(tmp_path, bind="0.0.0.0:0")
    try:
        token = (server.data_dir / "http.token").read_text().strip()
        assert info.token == token
        out = wait_output(server, "  http:")
        assert f"?token={token}" in out and "0.0.0.0" not in out
        with httpx.Client(base_url=info.url, timeout=10.0) as http:
            assert http.get("/api/states").status_code == 401
            r = http.post("/api/states/a_t/records", json={"x": 1}, headers=info.headers)
            assert r.status_code == 201
            assert http.get("/api/states/a_t", headers=info.headers).json()["size"] == 1
            r = http.get("/api/states/a_t", headers={"Host": "evil.example"}, params={"x": 1})
            assert r.status_code == 401  # not 403: off loopback, names are not checked
        with server.connect() as client:
            assert client.list_states() == ["a_t"]
    finally:
        assert server.stop() == 0
        server.cleanup()
    assert not (server.data_dir / "http.json").exists()
    assert os.path.exists(server.data_dir / "http.token")


def test_loopback_refuses_a_foreign_host_name(gateway: Gateway) -> None:
    """DNS rebinding: a page of evil.example that resolves to 127.0.0.1 is refused."""
    r = gateway.http.get("/api/states", headers={"Host": "evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "Forbidden"


# --- issue 14 item 9: the token off the command line -------------------------------------


def test_token_from_a_file_the_environment_or_argv_with_a_warning(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"file-token-0123456789abcdef\n")
    os.close(fd)
    ways: list[tuple[str, tuple[str, ...], dict[str, str], str]] = [
        ("file", ("--http-token-file", str(secret)), {}, "file-token-0123456789abcdef"),
        (
            "env",
            (),
            {"STATEENGINE_HTTP_TOKEN": "env-token-0123456789abcdef"},
            "env-token-0123456789abcdef",
        ),
        (
            "argv",
            ("--http-token", "argv-token-0123456789abcdef"),
            {},
            "argv-token-0123456789abcdef",
        ),
    ]
    for name, args, env, expected in ways:
        server, info = start(tmp_path / name, *args, env=env)
        try:
            assert info.token == expected, name
            with client(info) as http:
                assert http.get("/api/states").status_code == 200, name
            with httpx.Client(base_url=info.url, timeout=10.0) as anon:
                assert anon.get("/api/states").status_code == 401, name
            assert not (server.data_dir / "http.token").exists(), name  # given: none kept
            # The gateway child gets the token through its environment, never its argv.
            gw_cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes()
            assert expected.encode() not in gw_cmdline, name
        finally:
            assert server.stop() == 0
            output = server.output()
            server.cleanup()
        warned = "WARNING" in output and "visible to every local user" in output
        assert warned == (name == "argv"), (name, output)


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("file-token-0123456789abcdef")
    secret.chmod(0o644)
    cmd = [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(tmp_path / "d")]
    out = subprocess.run(
        [*cmd, "--http", "127.0.0.1:0", "--http-token-file", str(secret)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and f"chmod 600 {secret}" in out.stderr, out.stderr
    with pytest.raises(ValueError, match="not both"):
        resolve_token("argv-token-0123456789abcdef", tmp_path, secret)
    with pytest.raises(OSError):
        resolve_token(None, tmp_path, tmp_path / "missing")


def test_serve_stops_its_gateway_with_a_stream_open(tmp_path: Path) -> None:
    """SIGTERM to ``serve`` ends open SSE streams and the gateway promptly and cleanly."""
    server, info = start(tmp_path)
    try:
        gw_pid = info.pid
        with (
            client(info) as http,
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


def test_the_http_page_authentication_snippet_runs(gateway: Gateway, capsys: Any) -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "http.md").read_text()
    section = readme.split("**Authentication.**", 1)[1].split("**The dashboard**", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    exec(compile(snippet, "docs/http.md", "exec"), {"data_dir": gateway.data_dir})
    assert "'states':" in capsys.readouterr().out
