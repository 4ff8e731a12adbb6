"""``stateengine serve`` says which code builds the arena's blocks (shm/blocks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stateengine.shm import blocks
from stateengine.testing.server import ServerProcess


@pytest.mark.parametrize("pure", ["1", "0"])
def test_serve_prints_the_write_path(tmp_path: Path, pure: str) -> None:
    with ServerProcess(tmp_path / "data", env={"STATEENGINE_PURE_PYTHON": pure}) as server:
        server.connect(timeout=30).close()
        out = server.output()
    if pure == "1":
        expect = "  blocks:   pure Python (asked by STATEENGINE_PURE_PYTHON=1)"
    elif blocks._speedups_built():
        expect = "  blocks:   compiled C"
    else:
        expect = "  blocks:   pure Python (C extension not built)"
    assert expect in out, out
