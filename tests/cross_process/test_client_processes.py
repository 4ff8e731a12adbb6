"""A client across fork and spawn: children reconnect and read from the arena on their own.

Each client records its operations (the kit's history option: a forked or unpickled client
writes its own file) and the checker must find the counter's history linearizable.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from pathlib import Path

from stateengine.client.client import Client
from stateengine.testing import ServerProcess
from stateengine.testing.checker import check
from stateengine.testing.history import read_history


def assert_linearizable(history: Path) -> None:
    result = check(read_history(*history.glob("*.msgpack")), time_limit=60)
    assert result.ok, result.report()


def bump(client: Client, n: int) -> int:
    for _ in range(n):
        client.increment("c", "hits", "n")
    return int(client.get_record("c", "hits")["n"])


def test_forked_children_use_the_parents_client(server: ServerProcess, tmp_path: Path) -> None:
    client = server.connect(history=tmp_path / "history")
    try:
        client.create_record("c", {"id": "hits", "n": 0})
        assert client.get_record("c", "hits")["n"] == 0  # the parent's socket and arena are live
        pids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:  # the child: the same object, its own socket and reader
                code = 1
                try:
                    code = 0 if bump(client, 50) >= 50 else 2
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        assert client.get_record("c", "hits")["n"] == 150  # the parent still works
    finally:
        client.close()
    assert len(list((tmp_path / "history").glob("*.msgpack"))) == 4
    assert_linearizable(tmp_path / "history")


def test_forked_child_attaches_its_own_arena_reader(server: ServerProcess) -> None:
    """The fork hook (no os.getpid() per read) makes the child's next read re-attach."""
    with server.connect() as client:
        client.create_record("c", {"id": "x", "n": 1})
        assert client.get_record("c", "x")["n"] == 1
        view = client._view
        assert view is not None and view.reader is not None
        parent_reader = view.reader
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                assert view.deadline == 0.0  # set by the fork hook: the slow path is next
                assert client.get_record("c", "x")["n"] == 1
                reader = view.reader
                ok = reader is not None and reader is not parent_reader
                ok = ok and parent_reader._closed and reader._slot is not None
                code = 0 if ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert view.reader is parent_reader and not parent_reader._closed  # the parent's own
        assert client.get_record("c", "x")["n"] == 1


def test_spawn_pool_gets_the_client_pickled_by_endpoint(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.connect(history=tmp_path / "history") as client:
        client.create_record("c", {"id": "hits", "n": 0})
        clone = pickle.loads(pickle.dumps(client))
        assert clone.endpoint == client.endpoint and clone.data_dir == client.data_dir
        clone.close()
        with mp.get_context("spawn").Pool(2) as pool:
            results = pool.starmap_async(bump, [(client, 25)] * 4).get(timeout=120)
        assert max(results) == 100
        assert client.get_record("c", "hits")["n"] == 100
    assert_linearizable(tmp_path / "history")
