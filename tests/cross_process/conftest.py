from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stateengine.testing import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real ``stateengine serve`` subprocess on a private data directory."""
    proc = ServerProcess(tmp_path / "data")
    with proc:
        yield proc
