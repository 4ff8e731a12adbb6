"""The README's two commands are the product's front door: keep them true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n#", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_readme_has_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "stateengine" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    assert readme_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_wire_demo_prints_replies() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stateengine", "demo", "--wire"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert '"ok": true' in out and '"type": "SchemaError"' in out
    assert '"type": "VersionConflict"' in out


def test_pool_demo_finishes_every_task_after_a_worker_is_killed(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stateengine", "demo", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kill -9 worker" in out.stdout
    assert "claimed 2 times" in out.stdout
    assert "all tasks done exactly once" in out.stdout
