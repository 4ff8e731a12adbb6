"""server.json is the readiness signal: written only once the server can answer.

A server restarted on a data dir with many records must have published its recovered
state to the arena before it announces itself; otherwise a worker that attaches as
soon as server.json appears reads an empty arena, and a client's first request waits
behind the full arena publish (it timed out after 10 s at 10⁶ records).
"""

from __future__ import annotations

import time
from pathlib import Path

from stateengine.server.engine import Table, TableEngine
from stateengine.server.persistence import open_store
from stateengine.shm import ArenaReader
from stateengine.testing import ServerProcess

N = 60_000


def _snapshot(data: Path, n: int) -> None:
    engine = TableEngine()
    fields = ["id", "name", "n"]
    table = Table("t", fields=fields, types=dict.fromkeys(fields, "any"))
    for i in range(1, n + 1):
        table.records[i] = {"id": i, "name": f"r{i}", "n": i * 7, "_version": i}
    table.version = n
    table.next_id = n + 1
    engine.tables["t"] = table
    engine.seq = n
    store = open_store(data, "log", "always", snapshot_mode="inline")
    store.recover(TableEngine())
    store.snapshot(engine)
    store.close()


def test_server_json_only_after_the_arena_holds_the_recovered_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)  # a data directory must be private
    _snapshot(data, N)
    server = ServerProcess(data, "--store", "log", start_timeout=120).start()
    try:
        # Right when server.json names the arena, the arena is at the recovered seq.
        reader = ArenaReader.attach(str(server.info["arena"]))
        try:
            assert reader.version == N
            assert reader.get("t", N) == {"id": N, "name": f"r{N}", "n": N * 7, "_version": N}
        finally:
            reader.close()
        # And the first request is answered at once (well within the default timeout).
        with server.connect() as client:
            t0 = time.monotonic()
            assert client.get_state_info("t")["size"] == N
            assert time.monotonic() - t0 < 5.0
    finally:
        assert server.stop() == 0
        server.cleanup()
