"""A client across fork and spawn: children reconnect and read from the arena on their own."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle

from stateengine.client.client import Client
from stateengine.testing import ServerProcess


def bump(client: Client, n: int) -> int:
    for _ in range(n):
        client.increment("c", "hits", "n")
    return int(client.get_record("c", "hits")["n"])


def test_forked_children_use_the_parents_client(server: ServerProcess) -> None:
    client = server.connect()
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


def test_spawn_pool_gets_the_client_pickled_by_endpoint(server: ServerProcess) -> None:
    with server.connect() as client:
        client.create_record("c", {"id": "hits", "n": 0})
        clone = pickle.loads(pickle.dumps(client))
        assert clone.endpoint == client.endpoint and clone.data_dir == client.data_dir
        clone.close()
        with mp.get_context("spawn").Pool(2) as pool:
            results = pool.starmap_async(bump, [(client, 25)] * 4).get(timeout=120)
        assert max(results) == 100
        assert client.get_record("c", "hits")["n"] == 100
