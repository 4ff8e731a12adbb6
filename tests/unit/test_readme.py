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


#: The package tools a test must never run; spelled in parts so that this file, which
#: only looks for them, holds no such call itself.
_TOOLS = ("apt" + "-get", "apt", "pip", "pip3")
_VERB = "in" + "stall"


def _installer_calls() -> re.Pattern[str]:
    """An argv list that runs a package installer: ``["<tool>", "<verb>", ...]`` or
    ``[..., "-m", "pip", ...]``."""
    tools = "|".join(re.escape(t) for t in _TOOLS)
    return re.compile(rf"""["']({tools})["'],\s*["']{_VERB}["']|["']-m["'],\s*["']pip["']""")


def test_tests_never_install_anything() -> None:
    """The browser test skips (printing the apt-get line) instead of installing chromium;
    only .ci/run installs, under CI=true. No test runs a package installer."""
    installs = _installer_calls()
    found = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path != Path(__file__).resolve() and installs.search(path.read_text())
    ]
    assert found == []
    control = f'subprocess.run(["{_TOOLS[0]}", "{_VERB}", "-y", "chromium"])'
    assert installs.search(control)  # the pattern catches a real call
    assert f"{_TOOLS[0]} {_VERB}" in (ROOT / ".ci" / "run").read_text()
