"""Expiry as a commit on a real server (README "Leases and CLAIM_RECORD" rule 2, "Record
TTL"): the feed's ``expired`` events, deadlines across a restart, and arena readers that
never return a record past its TTL, even before the writer's expiry commit."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stateengine.client.view import ClientSnapshot, arena_get, arena_list
from stateengine.testing import ServerProcess


def until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_the_feed_carries_expired_events(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", "--fsync", "no") as server, server.connect() as db:
        db.create_state("jobs", schema={"status": "string", "tries": "integer"})
        with db.watch("jobs") as feed:
            probe = db.create_record("jobs", {"status": "probe", "tries": 0})
            # a SUB socket's subscription reaches the writer after a moment: write until
            # the feed shows a write
            for _ in range(100):
                if feed.next(timeout=0.1) is not None:
                    break
                db.patch_record("jobs", probe["id"], {"tries": 1})
            else:
                raise AssertionError("the feed showed nothing")
            db.create_record("jobs", {"status": "pending", "tries": 0})
            task = db.claim_record(
                "jobs",
                where={"status": "pending"},
                fields={"status": "running", "tries": {"$inc": 1}},
                lease_seconds=0.3,
            )
            gone = db.create_record("jobs", {"status": "temp", "tries": 0}, ttl=0.3)
            events = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and sum(len(e.expired) for e in events) < 2:
                change = feed.next(timeout=1)
                if change is not None and change.expired:
                    events.append(change)
        expired = {rid: how for e in events for rid, how in e.expired}
        assert expired == {task["id"]: "lease", gone["id"]: "ttl"}
        puts = {r["id"]: r for e in events for r in e.puts}
        back = puts[task["id"]]
        assert back["status"] == "pending" and back["tries"] == 1  # the counter stays
        assert back["_version"] == events[0].seq and events[0].at > 0
        assert any(gone["id"] in e.deletes for e in events)
        assert db.get_record("jobs", task["id"]) == back


def test_ttl_and_lease_deadlines_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, "--fsync", "always") as server, server.connect() as db:
        db.create_state("jobs", schema={"status": "string"})
        keep = db.create_record("jobs", {"status": "keep"}, ttl=3600)
        short = db.create_record("jobs", {"status": "short"}, ttl=1.0)
        db.create_record("jobs", {"status": "pending"})
        task = db.claim_record(
            "jobs", where={"status": "pending"}, fields={"status": "running"}, lease_seconds=1.0
        )
        lease_ends = time.time() + 1.0  # no later than this
        seq = db.execute({"command": "LIST_STATES"})["seq"]
    # both deadlines pass while no server runs
    until(lambda: time.time() > max(short["_expires"], lease_ends) + 0.1)
    with ServerProcess(data, "--fsync", "always") as server, server.connect() as db:
        records = {r["id"]: r for r in db.list_records("jobs")}
        assert short["id"] not in records  # deleted by the expiry commit at start
        assert records[task["id"]]["status"] == "pending"  # put back
        assert records[keep["id"]]["_expires"] == keep["_expires"]  # the deadline kept
        assert db.execute({"command": "LIST_STATES"})["seq"] == seq + 1  # one commit


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_arena_reads_leave_out_records_past_their_ttl_before_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer is stopped (SIGSTOP) so no expiry commit can happen: the arena still
    holds the record, and every arena read path leaves it out once its deadline passed.
    Control: with the TTL check switched off the same reads return it."""
    import stateengine.client.view as view

    with ServerProcess(tmp_path / "data", "--fsync", "no") as server, server.connect() as db:
        db.create_state("s", schema={"u": "string"})
        rec = db.create_record("s", {"u": "ada"}, ttl=0.5)
        other = db.create_record("s", {"u": "bob"})
        reader = db._reader()
        assert reader is not None and arena_get(reader, "s", rec["id"]) == rec
        os.kill(server.pid, signal.SIGSTOP)
        try:
            until(lambda: time.time() > rec["_expires"])
            assert arena_get(reader, "s", rec["id"]) is None  # goes to the server
            assert arena_list(reader, "s", None, None, None, None) == [other]
            with reader.snapshot() as snap:
                cs = ClientSnapshot(snap)
                assert cs.list_records("s") == [other]
                with pytest.raises(Exception, match="no record"):
                    cs.get_record("s", rec["id"])
            monkeypatch.setattr(view, "_gone", lambda record, now: False)  # the control
            assert arena_get(reader, "s", rec["id"]) == rec
            assert arena_list(reader, "s", None, None, None, None) == [rec, other]
        finally:
            os.kill(server.pid, signal.SIGCONT)
        monkeypatch.undo()
        with pytest.raises(Exception, match="no record"):
            db.get_record("s", rec["id"])  # the server committed the expiry first
