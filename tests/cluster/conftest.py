"""A private ``redis-server`` per test (AOF ``appendfsync always``, a free loopback port,
never 6379) and cluster nodes on it (``stateengine serve --cluster``).

Skipped when the ``redis-server`` binary is missing, except under ``CI=true``, where
the cluster tests must run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import NodeFactory, RedisServer

from stateengine.client.client import Client
from stateengine.testing import ServerProcess


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires the redis-server binary (the cluster tests)")
        pytest.skip("the redis-server binary is not installed: cluster tests need one")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster_node(tmp_path: Path, redis_server: RedisServer) -> Iterator[NodeFactory]:
    """``cluster_node(name, *args)``: a started node of cluster ``test`` on its own
    data dir (``tmp_path/name``) and arena; every node is stopped at the end."""
    started: list[ServerProcess] = []

    def make(name: str, *args: str, **kwargs: Any) -> ServerProcess:
        node = ServerProcess(
            tmp_path / name, "--cluster", f"{redis_server.url}/test", *args, **kwargs
        )
        node.start()
        started.append(node)
        return node

    try:
        yield make
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[ServerProcess], Client]]:
    """``connect(node)``: a client of *node*, closed at the end of the test."""
    clients: list[Client] = []

    def make(node: ServerProcess) -> Client:
        client = node.connect()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()
