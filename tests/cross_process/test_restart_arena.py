"""A restarted server's arena holds what the arena held before the restart, byte for byte.

A start publishes the recovered state in one ``ArenaWriter.load``, from the store's own
bytes where the engine still holds the records they encode (a snapshot), packing the
rest (a log replayed over it). Either way a worker must read the same records, in the
same order, with the same bytes and table infos as from the server that stopped. The
records are drawn by Hypothesis: ints at the 64-bit edges, floats, bytes, nested maps,
maps with int keys, records with a TTL and records under a lease; ids at the 64-bit
edges and strings.

The control runs the last restart with the ``trust_encoded`` fault (the store's bytes
published without checking the engine still holds those records): the records the log
changed after the snapshot then read stale, and the comparison must see it.

The first server must leave a snapshot that holds the whole fill: its snapshots are
forked and asynchronous, the next one starts only once the last one is reaped and the
log has grown past its size, and a stop takes none. On a loaded machine the last
snapshot started could predate table ``a``'s records; the third start then packed ``a``
(fewer stored records than held), read nothing stale, and the control failed (2 runs in
20 at load ~4). :func:`snapshot_covering` waits for one, bounded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stateengine.limits import ID_MAX, ID_MIN, INT_MAX, INT_MIN
from stateengine.server.persist_log import SNAPSHOT_NAME, load_snapshot
from stateengine.shm import ArenaReader
from stateengine.testing import ServerProcess
from stateengine.testing.strategies import values

EDGE_INTS = [INT_MIN, INT_MIN + 1, -(2**31), -129, -1, 0, 1, 127, 128, 2**32, 2**63, INT_MAX]
ids = st.sampled_from([ID_MIN, ID_MIN + 1, -1, 0, 2**31, ID_MAX - 1, ID_MAX]) | st.text(
    min_size=1, max_size=12
)
rows = st.fixed_dictionaries(
    {
        "n": st.sampled_from(EDGE_INTS) | st.integers(INT_MIN, INT_MAX),
        "f": st.floats(allow_nan=False),
        "b": st.binary(max_size=40),
        "v": values(max_leaves=12),
        "m": st.dictionaries(st.integers(INT_MIN, INT_MAX), values(max_leaves=4), max_size=3),
    }
)
tables = st.dictionaries(ids, rows, min_size=1, max_size=25)
SCHEMA = {"n": "integer", "f": "float", "b": "bytes", "v": "any", "m": "any"}
Arena = dict[str, tuple[list[tuple[Any, bytes]], bytes | None]]


def arena_state(server: ServerProcess) -> tuple[int, Arena]:
    """The arena's version, and per table its ``(id, bytes)`` in order and its info."""
    reader = ArenaReader.attach(str(server.info["arena"]))
    try:
        with reader.snapshot() as snap:
            return snap.version, {t: (snap.items_raw(t), snap.meta(t)) for t in snap.tables()}
    finally:
        reader.close()


def fill(server: ServerProcess, data: dict[str, dict[Any, dict[str, Any]]]) -> None:
    """Tables ``a`` (plain), ``ttl`` (every record with a TTL), ``leased`` (every other
    record under a lease), all far from running out."""
    with server.connect() as c:
        for name, records in data.items():
            c.create_state(name, schema=SCHEMA)
            for rid, row in records.items():
                if name == "ttl":
                    c.create_record(name, {"id": rid, **row}, ttl=3600)
                else:
                    c.create_record(name, {"id": rid, **row})
            if name == "leased":
                for _ in range(0, len(records), 2):
                    claimed = c.claim_record(name, where={}, fields={"n": 7}, lease_seconds=3600)
                    assert claimed is not None


def snapshot_seq(data_dir: Path) -> int:
    """The seq of the newest snapshot on disk (0: none yet). A snapshot is renamed into
    place whole, so the file read is one snapshot or the next."""
    try:
        return load_snapshot(data_dir / SNAPSHOT_NAME, None).seq
    except FileNotFoundError:
        return 0


def snapshot_covering(server: ServerProcess, seq: int, timeout: float = 60.0) -> None:
    """Return once the server's newest snapshot is at *seq* or later.

    Each write to table ``pad`` is a pass, after which the server reaps a finished
    snapshot and starts the next once the log has grown past the last snapshot's size;
    the writes grow it. Bounded by *timeout*."""
    deadline = time.monotonic() + timeout
    with server.connect() as c:
        c.create_record("pad", {"id": 1, "n": 0, "s": ""})
        n = 0
        while snapshot_seq(server.data_dir) < seq:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no snapshot at seq >= {seq} within {timeout} s "
                    f"(newest: {snapshot_seq(server.data_dir)}):\n{server.output()}"
                )
            n += 1
            c.patch_record("pad", 1, {"n": n, "s": "x" * 2048})  # ~2 KB more log a write
            time.sleep(0.01)  # a poll interval, not a wait for luck: the loop checks


def restart_twice(tmp: Path, data: dict[str, Any], faults: str = "") -> tuple[Any, Any]:
    """Fill a server that snapshots after every pass; restart it (the state comes from
    the snapshot) and change table ``a`` (the log, after the snapshot); restart again.
    Returns (before, after) of the last restart."""
    d = tmp / "data"
    with ServerProcess(d, "--snapshot-bytes", "1") as first:
        fill(first, data)
        snapshot_covering(first, arena_state(first)[0])
        filled = arena_state(first)
    with ServerProcess(d) as second:
        assert arena_state(second) == filled
        with second.connect() as c:
            for rid in list(data["a"])[::2]:
                c.patch_record("a", rid, {"f": -0.5, "v": {"after": [1, 2]}})
        before = arena_state(second)
    env = {"STATEENGINE_SHM_FAULTS": faults} if faults else None
    with ServerProcess(d, env=env) as third:
        return before, arena_state(third)


@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example starts 3 servers
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(a=tables, ttl=tables, leased=tables)
def test_restart_keeps_the_arena_bytes(
    tmp_path_factory: Any, a: Any, ttl: Any, leased: Any
) -> None:
    tmp = tmp_path_factory.mktemp("restart")
    before, after = restart_twice(tmp, {"a": a, "ttl": ttl, "leased": leased})
    assert after == before


def test_control_trusting_the_stored_bytes_reads_stale_records(tmp_path: Path) -> None:
    data = {
        name: {i: {"n": i, "f": 0.25, "b": b"x", "v": {"k": [i]}, "m": {i: i}} for i in range(1, 9)}
        for name in ("a", "ttl", "leased")
    }
    before, after = restart_twice(tmp_path, data, faults="trust_encoded")
    if after == before:
        pytest.fail("the stale bytes were not seen: this test could not catch the bug")
    stale = dict(after[1]["a"][0])
    assert stale[1] != dict(before[1]["a"][0])[1]  # patched after the snapshot
    assert after[1]["ttl"] == before[1]["ttl"]  # untouched since the snapshot
