"""Session setup shared by every test directory."""

from __future__ import annotations

import pytest

from stateengine.testing.bytecode import byte_compile


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile the package once, before any test spawns a process: the suite starts
    hundreds of servers, spawn children and CLI runs (``byte_compile``'s figures)."""
    byte_compile()
