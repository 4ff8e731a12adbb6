"""The README's two commands are the product's front door: keep them true."""

from __future__ import annotations

import re
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


# The demo's own tests (twice on a fresh clone, --wire): tests/cross_process/test_demo.py


def test_tests_never_install_anything() -> None:
    """The browser test skips (printing the apt-get line) instead of installing chromium;
    only .ci/run installs, under CI=true. No test runs apt-get or pip install."""
    installs = re.compile(
        r"""["'](apt-get|apt|pip3?)["'],\s*["']install["']|["']-m["'],\s*["']pip["']"""
    )
    found = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path != Path(__file__).resolve() and installs.search(path.read_text())
    ]
    assert found == []
    assert installs.search('subprocess.run(["apt-get", "install", "-y", "chromium"])')  # control
    assert "apt-get install" in (ROOT / ".ci" / "run").read_text()
