"""Every public module of ``client/``, ``shm/``, ``manifests/`` and the root package says
what it exports (``__all__``, issue 15), and every name it lists exists."""

from __future__ import annotations

import importlib

import pytest
from test_layers import package_modules

PUBLIC = sorted(
    name
    for name in package_modules()
    if (
        name.split(".")[1:2] in (["client"], ["shm"], ["manifests"])
        or name.count(".") == 1  # stateengine.errors, .protocol, ...
    )
    and not any(part.startswith("_") for part in name.split(".")[1:])
)


def test_the_public_modules_are_found() -> None:
    assert "stateengine.client.client" in PUBLIC and "stateengine.protocol" in PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_public_module_has_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None and module.__file__ and module.__file__.endswith("__init__.py"):
        pytest.skip("a package marker")
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
