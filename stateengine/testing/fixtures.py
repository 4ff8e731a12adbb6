"""The kit's pytest plugin: private servers for tests, torn down after them.

Installed stateengine registers this module as a pytest plugin (entry point ``pytest11``,
name ``stateengine``), so its fixtures are there in every test without an import. It
imports only pytest at load time: the server, ZeroMQ and hypothesis come in when a test
asks for a fixture. To opt out: ``pytest -p no:stateengine``.

Fixtures (function scope):

``stateengine_server``
    a started :class:`~stateengine.testing.server.ServerProcess` on a temporary data
    directory (``--fsync no``: a test server needs no durability), stopped after the
    test, its arena segments removed.
``stateengine_server_factory``
    ``factory(*serve_args, env=None) -> ServerProcess`` for servers with other
    arguments (``"--fsync", "always"``, ``"--no-arena"``, ...); every server it started
    is stopped after the test.
``stateengine_client``
    a :class:`~stateengine.client.client.Client` of ``stateengine_server``, closed after.
``stateengine_history``
    a fresh directory for recorded histories: pass it as ``Client(..., history=dir)``,
    then ``check(read_history(*dir.glob("*.msgpack")))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stateengine.client.client import Client
    from stateengine.testing.server import ServerProcess

DEFAULT_ARGS = ("--fsync", "no")


@pytest.fixture
def stateengine_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServerProcess]]:
    """Start private servers with custom ``serve`` arguments; all stopped after the test.

    :raises RuntimeError: (the factory) a server that exits or does not start in time.
    """
    from stateengine.testing.server import ServerProcess

    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        base = tmp_path_factory.mktemp("stateengine")
        server = ServerProcess(base / "data", *args, env=env)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()
            server.cleanup()


@pytest.fixture
def stateengine_server(
    stateengine_server_factory: Callable[..., ServerProcess],
) -> ServerProcess:
    """A private ``stateengine serve`` (``--fsync no``) for this test.

    :raises RuntimeError: the server exits or does not start in time.
    """
    return stateengine_server_factory(*DEFAULT_ARGS)


@pytest.fixture
def stateengine_client(stateengine_server: ServerProcess) -> Iterator[Client]:
    """A client of :func:`stateengine_server` (arena reads on), closed after the test.

    :raises RuntimeError: the server exits or does not start in time.
    """
    with stateengine_server.connect() as client:
        yield client


@pytest.fixture
def stateengine_history(tmp_path: Path) -> Path:
    """An empty directory for the history files of this test's clients. Raises nothing."""
    folder = tmp_path / "history"
    folder.mkdir()
    return folder
