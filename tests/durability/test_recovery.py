"""Every backend restores exactly the state a real engine reached (issue 5).

A real :class:`TableEngine` runs random valid commands; each change set goes to the store
as the server would send it; the store is closed (or abandoned) and reopened into a fresh
engine, and full digests are compared: tables, schemas, versions, id counters, records,
leases and ``seq``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from durable_workload import describe_difference, digest, run_workload

from stateengine.server.engine import ChangeSet, TableEngine
from stateengine.server.persist_base import from_json_value, to_json_value
from stateengine.server.persistence import PersistenceError, open_store


def _replay_into(store: Any, change_sets: list[ChangeSet]) -> None:
    for cs in change_sets:
        store.write(cs)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_commands_round_trip(make_store: Any, seed: int) -> None:
    _, change_sets, digests = run_workload(seed, 250)
    store = make_store()
    store.recover(TableEngine())
    half = len(change_sets) // 2
    _replay_into(store, change_sets[:half])
    store.close()

    # Reopen mid-way and keep writing to the same store: appends after a recovery.
    engine = TableEngine()
    store = make_store()
    report = store.recover(engine)
    assert digest(engine) == digests[half], describe_difference(digest(engine), digests[half])
    assert report.seq == engine.seq
    _replay_into(store, change_sets[half:])
    store.close()

    engine = TableEngine()
    report = make_store().recover(engine)
    assert digest(engine) == digests[-1], describe_difference(digest(engine), digests[-1])
    assert report.records == sum(len(t.records) for t in engine.tables.values())


def test_every_fsync_policy_restores_after_close(make_store: Any) -> None:
    _, change_sets, digests = run_workload(5, 120)
    for policy in ("no", "everysec"):
        store = make_store(fsync=policy)
        store.recover(TableEngine())
        _replay_into(store, change_sets)
        store.close()
        engine = TableEngine()
        make_store(fsync=policy).recover(engine)
        assert digest(engine) == digests[-1]
        for path in make_store.data_dir.iterdir():  # start the next policy empty
            path.unlink()
        if make_store.backend == "postgres":
            return  # one schema per test: the second policy would see the first's rows


def test_progress_is_reported(make_store: Any) -> None:
    engine = TableEngine()
    for i in range(5000):
        engine.execute({"command": "CREATE_RECORD", "state": "t", "record": {"i": i}})
    store = make_store()
    store.recover(TableEngine())
    store.write(engine.full_change_set())
    if make_store.backend == "log":
        store.snapshot(engine, wait=True)  # type: ignore[attr-defined]
    store.close()
    calls: list[tuple[int, int]] = []
    restored = TableEngine()
    make_store().recover(restored, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (5000, 5000)
    assert digest(restored) == digest(engine)


def test_a_data_dir_keeps_its_backend(tmp_path: Path) -> None:
    store = open_store(tmp_path, "sqlite")
    store.close()
    with pytest.raises(PersistenceError, match="holds a 'sqlite' store"):
        open_store(tmp_path, "log")


def test_unknown_backend_and_policy_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        open_store(tmp_path, "redis")
    with pytest.raises(ValueError, match="fsync"):
        open_store(tmp_path, "log", fsync="sometimes")


@pytest.mark.parametrize(
    "value",
    [
        b"\x00\xff",
        {"$b64": "not bytes"},
        {"$map": [1, 2]},
        {1: "int key", "s": b"x"},
        [float("inf"), -0.0, 2**64 - 1, -(2**63)],
        {"$float": "nan"},
        "plain",
    ],
)
def test_json_codec_is_exact(value: Any) -> None:
    back = from_json_value(to_json_value(value))
    assert repr(back) == repr(value)
    nan = from_json_value(to_json_value(float("nan")))
    assert math.isnan(nan)


def test_the_json_file_is_readable(tmp_path: Path) -> None:
    engine = TableEngine()
    engine.execute(
        {"command": "CREATE_RECORD", "state": "flags", "record": {"id": "dark", "on": True}}
    )
    store = open_store(tmp_path, "json")
    store.recover(TableEngine())
    store.write(engine.change_set(engine.changes, engine.table_changes, engine.removed))
    store.close()
    text = (tmp_path / "state.json").read_text()
    assert '"dark"' in text and '"on": true' in text


def test_random_seeds_replay_exactly_through_the_log(tmp_path: Path) -> None:
    """More seeds, log backend only (the cheapest), each a fresh directory."""
    for seed in range(10, 16):
        _, change_sets, digests = run_workload(seed, 150)
        data = tmp_path / str(seed)
        data.mkdir()
        store = open_store(data, "log", "no")
        store.recover(TableEngine())
        _replay_into(store, change_sets)
        store.close()
        engine = TableEngine()
        open_store(data, "log").recover(engine)
        assert digest(engine) == digests[-1], (
            seed,
            describe_difference(digest(engine), digests[-1]),
        )
    assert random  # keep the import for seeds above


def test_indexes_survive_a_restart(make_store: Any) -> None:
    """Index definitions persist in every store; the restarted engine rebuilds the entries
    and answers indexed queries and claims as before (README "Indexes")."""
    engine = TableEngine()
    engine.execute(
        {
            "command": "CREATE_STATE",
            "state": "q",
            "schema": {"status": "string", "p": "integer"},
            "indexes": ["status", ["status", "p"]],
        }
    )
    for i in range(200):
        status = ["done", "pending"][i % 2]
        engine.execute(
            {"command": "CREATE_RECORD", "state": "q", "record": {"status": status, "p": i % 7}}
        )
    query = {"command": "LIST_RECORDS", "state": "q", "where": {"status": "pending"},
             "order_by": ["p"], "limit": 20}  # fmt: skip
    before = engine.execute(query)["result"]
    store = make_store()
    store.recover(TableEngine())
    store.write(engine.full_change_set())
    store.close()
    restored = TableEngine()
    make_store().recover(restored)
    info = restored.execute({"command": "GET_STATE_INFO", "state": "q"})["result"]
    assert info["indexes"] == [["status"], ["status", "p"]]
    assert restored.execute(query)["result"] == before
    assert restored.tables["q"].ix is not None  # the query rebuilt and used the index
