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
    then ``check(read_history(*dir.glob("*.msgpack")))``. With ``stateengine_server``
    in the same test, the server's expiry commits are recorded there as well.
``stateengine_nemesis``
    ``factory(schedule, server=None, workers=(), history=None, **options) -> Nemesis``:
    a started :class:`~stateengine.testing.nemesis.Nemesis`; every one it started is
    stopped after the test (the fault in progress healed), before the servers are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from stateengine.client.client import Client
    from stateengine.testing.nemesis import Nemesis, Schedule, Step, Worker
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
def stateengine_history(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """An empty directory for the history files of this test's clients. When the test
    also uses ``stateengine_server``, the server's own commits (leases and TTLs that ran
    out) are recorded there too (``server.msgpack``, from the change feed), so that the
    checker can explain every ``seq``. Raises nothing."""
    folder = tmp_path / "history"
    folder.mkdir()
    if "stateengine_server" not in request.fixturenames:
        yield folder
        return
    from stateengine.testing.history import record_server_commits

    server: ServerProcess = request.getfixturevalue("stateengine_server")
    with record_server_commits(server.endpoint, folder / "server.msgpack"):
        yield folder


@pytest.fixture
def stateengine_nemesis(
    stateengine_server_factory: Callable[..., ServerProcess],
) -> Iterator[Callable[..., Nemesis]]:
    """Start nemeses beside the test's workload; all stopped (faults healed) after the test.

    The factory: ``factory(schedule, server=None, workers=(), history=None, **options)``.
    *workers* are :class:`~stateengine.testing.nemesis.Worker` objects, processes
    (``multiprocessing``) or pids; *history* the directory the clients record to, so the
    faults land in the same history; *options* go to
    :class:`~stateengine.testing.nemesis.Nemesis`. (This fixture depends on the server
    factory so that it is torn down first: a server is never stopped while paused.)

    :raises NemesisError: (at teardown) a fault could not be injected or healed.
    """
    from stateengine.testing.nemesis import Nemesis, Targets, Worker

    started: list[Nemesis] = []

    def start(
        schedule: Schedule | list[Step],
        server: ServerProcess | None = None,
        workers: Iterable[Worker | BaseProcess | int] = (),
        history: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> Nemesis:
        targets = Targets(server, [_worker(w, i) for i, w in enumerate(workers)])
        nemesis = Nemesis(schedule, targets, history=history, **options)
        started.append(nemesis)
        return nemesis.start()

    def _worker(w: Worker | BaseProcess | int, i: int) -> Worker:
        if isinstance(w, Worker):
            return w
        pid = w if isinstance(w, int) else w.pid
        if pid is None:
            raise ValueError(f"worker {i} is not started")
        return Worker(f"worker {i}", pid)

    try:
        yield start
    finally:
        errors = []
        for nemesis in reversed(started):
            try:
                nemesis.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
