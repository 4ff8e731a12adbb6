"""`stateengine backup` under load, then `restore`: the restored server holds exactly
the state at the backup's `seq`.

What the state at that `seq` was is taken from the running server, not from the backup:
an arena snapshot read during the run (at version v, before the backup) plus every
change the feed published after v up to the backup's `seq` (the documented
snapshot + `start_after` pattern of client/watch.py). Writers never stop meanwhile.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stateengine.client.client import Client
from stateengine.errors import RecordNotFound
from stateengine.testing import ServerProcess

TABLES = ("a", "b")
SEED_IDS = 40


def writer(endpoint: str, data_dir: str, n: int, inflight: int, stop: Any) -> None:
    """Pipelines of *inflight* writes (creates, patches, increments, deletes) until
    *stop* is set (at most 120 s)."""
    rng = random.Random(n)
    give_up = time.monotonic() + 120
    with Client(endpoint, data_dir, timeout=30) as db:
        while not stop.is_set() and time.monotonic() < give_up:
            requests: list[dict[str, Any]] = []
            for _ in range(inflight):
                table, rid = rng.choice(TABLES), rng.randint(1, SEED_IDS)
                kind = rng.random()
                if kind < 0.35:
                    requests.append(
                        {"command": "CREATE_RECORD", "state": table, "record": {"n": n, "w": 0}}
                    )
                elif kind < 0.7:
                    requests.append(
                        {"command": "PATCH_RECORD", "state": table, "id": rid, "fields": {"w": n}}
                    )
                elif kind < 0.9:
                    requests.append(
                        {"command": "INCREMENT", "state": table, "id": rid, "field": "n"}
                    )
                else:
                    requests.append({"command": "DELETE_RECORD", "state": table, "id": rid})
            for result in db.send_many(requests):
                if isinstance(result, Exception) and not isinstance(result, RecordNotFound):
                    raise result


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateengine", *args], capture_output=True, text=True, timeout=300
    )


def wait_for_writes(db: Client, seq: int) -> None:
    """Until the server's seq reaches *seq* (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while db.stats()["seq"] < seq:
        assert time.monotonic() < deadline, f"the writers did not reach seq {seq}"
        time.sleep(0.05)


def backup_under_load(tmp: Path, writers: int, inflight: int, writes_before: int) -> None:
    data, dest, restored = tmp / "data", tmp / "backup", tmp / "restored"
    with ServerProcess(data, "--fsync", "no", "--feed-hwm", "1000000") as server:
        with server.connect(timeout=30) as db:
            for table in TABLES:
                db.create_state(table, schema={"n": "integer", "w": "integer"})
                for _ in range(SEED_IDS):
                    db.create_record(table, {"n": 0, "w": 0})
            with db.watch(*TABLES, hwm=1_000_000) as feed:
                # Subscribed once a write of ours comes through (the slow joiner).
                deadline = time.monotonic() + 20
                while feed.next(timeout=0.1) is None:
                    assert time.monotonic() < deadline, "the feed never delivered"
                    db.patch_record("a", 1, {"w": -1})
                ctx = mp.get_context("spawn")
                stop = ctx.Event()
                procs = [
                    ctx.Process(target=writer, args=(server.endpoint, str(data), n, inflight, stop))
                    for n in range(writers)
                ]
                for p in procs:
                    p.start()
                try:
                    wait_for_writes(db, db.stats()["seq"] + writes_before)  # going
                    with db.snapshot() as snap:
                        version = snap.version
                        state = {t: {r["id"]: r for r in snap.list_records(t)} for t in TABLES}
                    feed.start_after(version, list(TABLES))
                    at_version = {t: dict(records) for t, records in state.items()}
                    run = cli("backup", str(dest), "--data-dir", str(data))
                    assert run.returncode == 0, run.stderr
                    print(run.stdout, f"(snapshot read at seq {version})")  # pytest -s
                    seq = int(run.stdout.split("backup at seq ")[1].split(":")[0])
                    assert seq > version, "the writers wrote nothing between snapshot and backup"
                    wait_for_writes(db, seq + writes_before)  # and went on after it
                finally:
                    stop.set()
                    for p in procs:
                        p.join(60)
                        assert p.exitcode == 0, f"writer exit code {p.exitcode}"
                # Every change after the snapshot, up to the backup's seq, from the feed.
                while (change := feed.next(timeout=1.0)) is not None:
                    assert not change.gap and not change.dropped
                    if change.seq <= seq:
                        records = state[change.table]
                        for rid in change.deletes:
                            records.pop(rid, None)
                        for record in change.puts:
                            records[record["id"]] = record
    assert (dest / "snapshot.sesnap").exists()
    run = cli("restore", str(dest), "--data-dir", str(restored))
    assert run.returncode == 0, run.stderr
    assert f"restored seq {seq}:" in run.stdout
    with ServerProcess(restored, "--fsync", "no") as again, again.connect() as db:
        assert db.stats()["seq"] == seq
        restored_state = {t: {r["id"]: r for r in db.list_records(t)} for t in TABLES}
    for table in TABLES:
        assert restored_state[table] == state[table], f"{table} differs from seq {seq}'s"
    # The control: the comparison tells states apart; the snapshot's own (an earlier
    # seq, without the feed's changes) is not what the backup holds.
    assert restored_state != at_version


def test_backup_under_load_small(tmp_path: Path) -> None:
    """The default run's variant: 2 writer processes x 4 in flight."""
    backup_under_load(tmp_path, writers=2, inflight=4, writes_before=200)


@pytest.mark.slow
def test_backup_under_load_8_writers_16_in_flight(tmp_path: Path) -> None:
    backup_under_load(tmp_path, writers=8, inflight=16, writes_before=20_000)


def test_restore_refuses_a_data_dir_with_state_and_a_damaged_backup(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    with ServerProcess(data, "--fsync", "no") as server, server.connect() as db:
        db.create_record("t", {"x": 1})
        run = cli("backup", str(dest), "--data-dir", str(data))
        assert run.returncode == 0 and "backup at seq 1:" in run.stdout, run.stderr
        taken = cli("backup", str(dest), "--data-dir", str(data))
        assert taken.returncode == 1 and "not empty" in taken.stderr
    run = cli("restore", str(dest), "--data-dir", str(data))
    assert run.returncode == 1 and "holds a 'log' store already" in run.stderr
    # A backup restored into another store has the same records and seq.
    other = tmp_path / "sqlite"
    run = cli("restore", str(dest), "--data-dir", str(other), "--store", "sqlite")
    assert run.returncode == 0, run.stderr
    with ServerProcess(other, "--store", "sqlite") as again, again.connect() as db:
        assert db.list_records("t") == [{"id": 1, "x": 1, "_version": 1}]
        assert db.stats()["seq"] == 1
    damaged = dest / "snapshot.sesnap"
    data_bytes = bytearray(damaged.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data_bytes))
    run = cli("restore", str(dest), "--data-dir", str(tmp_path / "fresh"))
    assert run.returncode == 1 and "damaged" in run.stderr
    assert not (tmp_path / "fresh" / "snapshot.sesnap").exists()
