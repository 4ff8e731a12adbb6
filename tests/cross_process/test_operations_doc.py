"""docs/operations.md runs as written: every ```sh and ```python block, in order.

A block that is one ``stateengine serve ...`` line starts that server (stopping the one
before); the others run in a shell (or Python) in a scratch directory with
``STATEENGINE_DATA_DIR`` set, each port of the doc swapped for a free one.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from stateengine.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
#: the ports the doc names; each gets a free one (a run of free ports for --tcp + 1)
PORTS = ("5555", "5556", "8080")


def blocks() -> list[tuple[str, str]]:
    """Every fenced block, in order: ``sh``, ``python``, or ``""`` (the output shown for
    the block before it)."""
    return re.findall(r"^```(sh|python|)\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


def output_pattern(shown: str) -> re.Pattern[str]:
    """The doc's example output as a pattern: its numbers and /home/me paths vary."""
    lines = []
    for line in shown.strip().splitlines():
        pattern = re.escape(line.strip())
        pattern = re.sub(r"/home/me/[^ ]*", r"/\\S+", pattern)
        lines.append(re.sub(r"\d+(\\\.\d+)?", r"\\d+(\\.\\d+)?", pattern))
    return re.compile(r"\s*\n\s*".join(lines))


def free_ports(n: int) -> list[int]:
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n > 65535:
            continue
        try:
            for port in range(base + 1, base + n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return list(range(base, base + n))
    raise RuntimeError("no run of free ports")


def test_every_block_of_operations_md_runs(tmp_path: Path) -> None:
    found = blocks()
    assert len(found) >= 4
    ports = dict(zip(PORTS, map(str, free_ports(len(PORTS))), strict=True))
    data = tmp_path / "data"
    # `stateengine` as the installed script would be: this interpreter's, first on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "stateengine"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m stateengine "$@"\n')
    script.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "STATEENGINE_DATA_DIR": str(data), "PATH": path}
    server: ServerProcess | None = None
    last_output = ""
    try:
        for kind, text in found:
            if not kind:
                assert output_pattern(text).search(last_output), f"{text!r} not in {last_output!r}"
                continue
            for doc_port, port in ports.items():
                text = text.replace(doc_port, port)
            words = shlex.split(text.strip()) if kind == "sh" else []
            if words[:2] == ["stateengine", "serve"] and len(text.strip().splitlines()) == 1:
                if server is not None:
                    server.stop()
                server = ServerProcess(data, *words[2:]).start()
                continue
            cmd = ["bash", "-euo", "pipefail", "-c", text] if kind == "sh" else None
            run = subprocess.run(
                cmd or [sys.executable, "-c", text],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert run.returncode == 0, f"{text}\n{run.stdout}\n{run.stderr}"
            last_output = run.stdout
    finally:
        if server is not None:
            server.stop()


@pytest.mark.parametrize("kind", ["sh", "python"])
def test_the_doc_has_blocks_of_each_kind(kind: str) -> None:
    assert any(k == kind for k, _ in blocks())
