"""Bytecode caches for an editable checkout: one home for the test suite and the bench."""

from __future__ import annotations

import compileall
import importlib.util

#: The package's source directories (setup.py maps them into ``stateengine.*``).
PACKAGES = (
    "stateengine",
    "stateengine.server",
    "stateengine.client",
    "stateengine.shm",
    "stateengine.manifests",
)


def byte_compile() -> None:
    """Write the bytecode caches of stateengine's modules, as ``pip install`` does for an
    installed package.

    With ``PYTHONDONTWRITEBYTECODE=1`` (set on some machines and CI images) an editable
    checkout keeps none, so every process that imports the package compiles it again:
    CPU of ``import stateengine.app.cli`` in a fresh interpreter 0.212 s without them,
    0.134 s with them (medians of 9); of ``import stateengine.server.server,
    stateengine.client.client`` 0.23 s against 0.14 s (``/usr/bin/time``, 3 runs each).
    ``compileall`` writes the caches whatever that variable says; Python still checks
    each against its source.
    """
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for path in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(path, quiet=2)
