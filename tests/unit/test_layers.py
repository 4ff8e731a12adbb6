"""The layer contract (SPEC §2), read from the imports of every module of the package.

Each module's ``stateengine.*`` imports, wherever they are written (module level, inside
functions, under ``TYPE_CHECKING``), must stay inside the edges of :data:`ALLOWED`. And the
two imports every user pays for stay light: ``import stateengine.shm`` (workers reading
the arena) and the pytest plugin (loaded into every pytest run once stateengine is
installed) import neither ZeroMQ nor YAML.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import stateengine

#: layer → the layers its modules may import (besides their own). One table, the contract.
ALLOWED: dict[str, frozenset[str]] = {
    "leaf": frozenset(),  # LEAVES below: each other only, nothing else of ours
    "shm": frozenset({"leaf"}),
    "runtime": frozenset({"leaf", "shm"}),
    "manifests": frozenset({"leaf", "runtime"}),
    "server": frozenset({"leaf", "shm", "runtime", "manifests"}),
    "client": frozenset({"leaf", "shm", "runtime", "manifests", "server"}),
    "testing": frozenset({"leaf", "shm", "runtime", "manifests", "server", "client"}),
    "root": frozenset({"leaf", "client"}),  # stateengine/__init__.py: the public API
    "app": frozenset({"leaf", "shm", "runtime", "manifests", "server", "client", "testing"}),
}

LEAVES = {
    "stateengine.command_table",
    "stateengine.defaults",
    "stateengine.errors",
    "stateengine.jsoncodec",
    "stateengine.limits",
    "stateengine.protocol",
    "stateengine.query",
}


def layer(module: str) -> str:
    """The layer of a ``stateengine.*`` module name."""
    if module in LEAVES:
        return "leaf"
    if module in ("stateengine", "stateengine.__init__"):
        return "root"
    if module == "stateengine.__main__":
        return "app"  # ``python -m stateengine`` is the command line
    part = module.split(".")[1]
    if part not in ALLOWED:
        raise AssertionError(f"{module}: no layer in ALLOWED; add its package to the table")
    return part


def package_modules() -> dict[str, Path]:
    """Every module of the installed package (the package-dir mapping included)."""
    found: dict[str, Path] = {}
    roots = {"stateengine": Path(stateengine.__file__).parent}
    for sub in ("server", "client", "shm", "manifests"):
        module = importlib.import_module(f"stateengine.{sub}")
        assert module.__file__ is not None
        roots[f"stateengine.{sub}"] = Path(module.__file__).parent
    for name, root in roots.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([name, *parts])] = path
    return found


def imported(module: str, path: Path) -> set[str]:
    """The ``stateengine`` modules *module* imports, anywhere in its source."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                up = package.split(".")
                base = ".".join([*up[: len(up) - node.level + 1], base])
            if base != "stateengine":  # ``from stateengine import x``: judged by x alone
                out.add(base.rstrip("."))
            # ``from stateengine import errors`` / ``from stateengine.runtime import feed``
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m == "stateengine" or m.startswith("stateengine.")}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """*name* as one of our modules (``from X import name`` may name a function)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_every_import_respects_the_layer_table() -> None:
    modules = package_modules()
    assert {"stateengine.app.cli", "stateengine.runtime", "stateengine.shm"} <= set(modules)
    broken = []
    for module, path in sorted(modules.items()):
        mine = layer(module)
        for name in sorted(imported(module, path)):
            target = resolve(name, modules)
            if target is None or target == "stateengine":
                if target == "stateengine" and mine not in ("root", "app"):
                    broken.append(f"{module} imports the root package ({name})")
                continue
            theirs = layer(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                broken.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not broken, "layer contract broken:\n" + "\n".join(broken)


def test_the_table_keeps_the_spec_rules() -> None:
    """The rules of SPEC §2 and issue 15, so that the table is not loosened by accident."""
    assert ALLOWED["leaf"] == frozenset()
    assert ALLOWED["shm"] == {"leaf"}
    assert ALLOWED["runtime"] <= {"leaf", "shm"}
    for low in ("manifests", "server"):
        assert not ALLOWED[low] & {"client", "app", "testing"}
    assert not ALLOWED["client"] & {"app", "testing"}
    assert [name for name, allowed in ALLOWED.items() if "app" in allowed] == []


def _fresh_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "code",
    ["import stateengine.shm", "import stateengine.testing.fixtures"],
    ids=["shm", "pytest-plugin"],
)
def test_light_imports_load_neither_zmq_nor_yaml(code: str) -> None:
    loaded = _fresh_modules(code)
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("zmq", "yaml"))
    assert heavy == [], f"{code!r} imported {heavy}"
