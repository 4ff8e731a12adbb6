"""Every ``python`` and ``sh`` snippet of the README's tour and of docs/ runs as written.

Each document runs in a fresh directory, in order, as a reader would: an ``sh`` line
``stateengine serve ...`` starts a real server in the background (its data in
``./.stateengine``), other ``sh`` lines run to completion and must exit 0, and ``python``
snippets run in this process with that directory as the working directory.
``tests/unit/test_docs_links.py`` checks that no snippet of README.md or docs/ is left
without a test that runs it.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stateengine.runtime import discovery as paths

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # stateengine and python, as an activated venv has them


def fenced(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of *text*, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def section(text: str, title: str) -> str:
    """The ``## title`` section of a markdown text, up to the next ``## `` heading."""
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


class Reader:
    """Runs snippets in *cwd* as a reader with an activated venv would."""

    def __init__(self, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cwd = cwd
        monkeypatch.chdir(cwd)
        monkeypatch.delenv("STATEENGINE_DATA_DIR", raising=False)
        self.env = {k: v for k, v in os.environ.items() if k != "STATEENGINE_DATA_DIR"}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.servers: list[subprocess.Popen[bytes]] = []
        self.outputs: list[str] = []
        #: one namespace per page, as a reader keeps one interpreter open down a page
        self.namespace: dict[str, Any] = {"__name__": "__snippet__"}

    def run(self, lang: str, code: str, substitute: dict[str, str] | None = None) -> None:
        for old, new in (substitute or {}).items():
            code = code.replace(old, new)
        if lang == "python":
            exec(compile(code, "snippet", "exec"), self.namespace)
        elif lang == "sh":
            for line in code.splitlines():
                argv = shlex.split(line, comments=True)
                if argv:
                    self.command(argv)
        else:
            raise AssertionError(f"no runner for a {lang!r} snippet")

    def command(self, argv: list[str]) -> None:
        if argv[:2] == ["stateengine", "serve"]:
            log = open(self.cwd / f"serve-{len(self.servers)}.log", "wb")
            with log:
                proc = subprocess.Popen(
                    [str(BIN / "stateengine"), *argv[1:]],
                    cwd=self.cwd,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.servers.append(proc)
            data = self.cwd / ".stateengine"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert proc.poll() is None, self.server_output()
                try:
                    if paths.read_server_file(data).get("pid") == proc.pid:
                        return
                except Exception:
                    pass
                time.sleep(0.02)
            raise AssertionError(f"{argv} did not start:\n{self.server_output()}")
        exe = BIN / argv[0] if (BIN / argv[0]).exists() else argv[0]
        out = subprocess.run(
            [str(exe), *argv[1:]],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (argv, out.stdout, out.stderr)
        self.outputs.append(out.stdout)

    def server_output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.cwd.glob("serve-*.log"))

    def close(self) -> None:
        """Stop the servers (SIGTERM, as Ctrl-C would); each must exit 0."""
        codes = []
        for proc in self.servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(10))
        assert all(code == 0 for code in codes), (codes, self.server_output())


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Reader]:
    r = Reader(tmp_path, monkeypatch)
    try:
        yield r
    finally:
        r.close()
        asyncio.set_event_loop_policy(None)  # a snippet may have installed uvloop's


def test_the_readme_tour_and_wire_example_run_on_a_fresh_server(
    reader: Reader, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    tour = fenced(section(readme, "A five-minute tour"))
    assert [lang for lang, _ in tour] == ["sh", "python", "python", "python", "python", "sh"]
    for lang, code in tour:
        reader.run(lang, code)
    printed = capsys.readouterr().out.splitlines()
    assert "105" in printed  # as the tour's comment says
    assert [line for line in printed if line.startswith("working on")] == [
        f"working on load part-{i}.csv" for i in range(3)
    ]
    rows = json.loads(reader.outputs[0])  # stateengine call get_record: 105 + 10 from asyncio
    assert rows["ok"] and rows["result"]["n"] == 115 and "req_id" not in rows
    (lang, code), *_ = [b for b in fenced(section(readme, "Wire protocol")) if b[0] != "text"]
    reader.run(lang, code)
    reply = ast.literal_eval(capsys.readouterr().out)  # the snippet prints the reply dict
    assert reply["ok"] and reply["result"]["name"] == "ada" and reply["req_id"] == 1


def test_the_client_page_runs_on_a_fresh_server(reader: Reader) -> None:
    reader.run("sh", "stateengine serve")
    for lang, code in fenced((ROOT / "docs" / "client.md").read_text()):
        reader.run(lang, code)


def test_the_protocol_page_runs_on_a_fresh_server(reader: Reader) -> None:
    reader.run("sh", "stateengine serve")
    blocks = fenced((ROOT / "docs" / "protocol.md").read_text())
    assert {lang for lang, _ in blocks} == {"python"}
    for lang, code in blocks:
        reader.run(lang, code)


def test_the_manifest_page_runs_its_worked_example(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = reader.cwd / "examples" / "manifests"
    skip_db = shutil.ignore_patterns("*.db")
    shutil.copytree(ROOT / "examples" / "manifests", examples, ignore=skip_db)
    for name in ("APP_USER_ID", "APP_DB_PATH"):  # the snippet sets them: put them back after
        monkeypatch.setenv(name, "")
    page = (ROOT / "docs" / "manifests.md").read_text()
    blocks = fenced(page)
    shown = [code for lang, code in blocks if lang == "yaml" and code.startswith("# cache.yml\n")]
    assert shown == [(ROOT / "examples" / "manifests" / "cache.yml").read_text()]
    for lang, code in blocks:
        if lang != "yaml":  # parsed by tests/manifests/test_manifest_docs.py
            reader.run(lang, code)
    assert "(3 files, 8 keys)" in reader.server_output()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_server_page_remote_client_snippet_runs(reader: Reader) -> None:
    reader.run("sh", "stateengine keygen worker1 --out KEYS")
    server_key = reader.outputs[-1].split("(give to the client):")[1].splitlines()[0].strip()
    shutil.copy(server_key, reader.cwd / "server.key")
    port = free_port()
    reader.run("sh", f"stateengine serve --tcp 127.0.0.1:{port}")
    (block,) = fenced((ROOT / "docs" / "server.md").read_text())
    reader.run(*block, substitute={"host:7000": f"127.0.0.1:{port}", "NAME": "worker1"})
    db = reader.namespace["db"]
    try:
        assert db.list_states() == []  # over TCP, CurveZMQ-authenticated
    finally:
        db.close()


def test_the_wire_example_needs_nothing_but_zeromq_and_json() -> None:
    readme = (ROOT / "README.md").read_text()
    (code,) = [c for lang, c in fenced(section(readme, "Wire protocol")) if lang == "python"]
    imports = set(re.findall(r"^(?:import|from) (\w+)", code, flags=re.M))
    assert imports == {"json", "pathlib", "zmq"}, imports
    assert json.dumps  # the reply is plain JSON: no stateengine import decodes it
