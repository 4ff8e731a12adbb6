"""CLAIM_RECORD and its leases (README "Leases and CLAIM_RECORD"), on a clock the test
moves by hand: no sleeping."""

from __future__ import annotations

from typing import Any

import pytest

import stateengine
from stateengine import errors


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Eng = tuple[stateengine.Engine, Clock]


def ok(eng: stateengine.Engine, **req: Any) -> dict[str, Any]:
    reply = eng.execute(req)
    assert reply["ok"] is True, (req, reply)
    return reply


def err(eng: stateengine.Engine, etype: str, **req: Any) -> dict[str, Any]:
    before = state(eng)
    reply = eng.execute(req)
    assert reply["ok"] is False, (req, reply)
    assert reply["error"]["type"] == etype, (req, reply)
    assert state(eng) == before, "a failed command changed the state"
    return reply


def state(eng: stateengine.Engine) -> Any:
    seq = ok(eng, command="LIST_STATES")["seq"]
    info = ok(eng, command="GET_STATE_INFO", state="jobs")["result"]
    recs = ok(eng, command="LIST_RECORDS", state="jobs")["result"]
    return seq, info, recs


def claim(eng: stateengine.Engine, where: dict[str, Any], fields: dict[str, Any], **kw: Any) -> Any:
    return ok(eng, command="CLAIM_RECORD", state="jobs", where=where, fields=fields, **kw)["result"]


@pytest.fixture
def jobs() -> Eng:
    clock = Clock()
    eng = stateengine.Engine(clock=clock)
    ok(
        eng,
        command="CREATE_STATE",
        state="jobs",
        schema={"status": "string", "worker": "string?", "tries": "integer"},
    )
    for _ in range(3):
        ok(
            eng,
            command="CREATE_RECORD",
            state="jobs",
            record={"status": "pending", "worker": None, "tries": 0},
        )
    return eng, clock


PENDING = {"status": "pending"}
RUN_A = {"status": "running", "worker": "A"}
RUN_B = {"status": "running", "worker": "B"}


def test_claim_with_lease_returns_the_patched_record(jobs: Eng) -> None:
    eng, _ = jobs
    before = ok(eng, command="GET_STATE_INFO", state="jobs")
    reply = ok(
        eng, command="CLAIM_RECORD", state="jobs", where=PENDING, fields=RUN_A, lease_seconds=30
    )
    rec = reply["result"]
    assert rec == {
        "id": 1,
        "status": "running",
        "worker": "A",
        "tries": 0,
        "_version": rec["_version"],
    }
    assert reply["seq"] == before["seq"] + 1 == rec["_version"]
    assert reply["version"] == before["version"] + 1
    got = ok(eng, command="GET_RECORD", state="jobs", id=1)["result"]
    assert got == rec


def test_claims_take_records_in_order(jobs: Eng) -> None:
    eng, _ = jobs
    assert claim(eng, PENDING, RUN_A, lease_seconds=30)["id"] == 1
    assert claim(eng, PENDING, RUN_A, lease_seconds=30)["id"] == 2
    assert claim(eng, PENDING, RUN_B, order_by="-id")["id"] == 3
    # nothing left: null, and nothing changes
    before = state(eng)
    reply = ok(eng, command="CLAIM_RECORD", state="jobs", where=PENDING, fields=RUN_B)
    assert reply["result"] is None
    assert reply["seq"] == before[0] and reply["version"] == before[1]["version"]
    assert state(eng) == before


def test_live_lease_is_not_claimable_whatever_its_fields(jobs: Eng) -> None:
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    claim(eng, PENDING, RUN_A, lease_seconds=10)
    clock.now += 9.5
    assert claim(eng, PENDING, RUN_B, lease_seconds=10) is None
    # a `where` that matches the record as it stands does not take it either
    assert claim(eng, {"status": "running"}, RUN_B, lease_seconds=10) is None
    assert claim(eng, {}, RUN_B) is None


def test_an_expired_lease_is_a_commit_that_puts_the_pre_claim_values_back(jobs: Eng) -> None:
    """README rule 2: at the deadline the writer commits the expiry (its own seq, the
    table's version + 1, the record's new _version), so reads show the record as it was
    before the claim and a claim finds it by its where as it stands."""
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    first = claim(eng, PENDING, RUN_A, lease_seconds=10)
    seq, version = eng.seq, eng.get_state_info("jobs")["version"]
    clock.now += 9.9
    assert eng.get_record("jobs", first["id"]) == first  # live: reads show the claim
    clock.now += 0.1  # the deadline: the next command sees the expiry committed first
    back = eng.get_record("jobs", first["id"])
    assert back == {"id": first["id"], "status": "pending", "worker": None, "tries": 0,
                    "_version": seq + 1}  # fmt: skip
    assert eng.seq == seq + 1 and eng.get_state_info("jobs")["version"] == version + 1
    assert ok(eng, command="LIST_RECORDS", state="jobs", where=PENDING)["result"] == [back]
    second = claim(eng, {"status": "pending", "worker": None}, RUN_B, lease_seconds=10)
    assert second is not None and second["id"] == first["id"]
    assert second["worker"] == "B" and second["_version"] == seq + 2


def test_leases_running_out_together_are_one_commit(jobs: Eng) -> None:
    eng, clock = jobs
    rows = [{"status": "pending", "worker": None, "tries": 0}] * 3
    ok(eng, command="SET_STATE", state="jobs", records=rows)
    for _ in range(3):
        claim(eng, PENDING, RUN_A, lease_seconds=5)
    seq = eng.seq
    clock.now += 60
    assert [r["_version"] for r in eng.list_records("jobs")] == [seq + 1] * 3
    assert eng.seq == seq + 1


def test_patch_with_lease_seconds_renews(jobs: Eng) -> None:
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    rec = claim(eng, PENDING, RUN_A, lease_seconds=10)
    clock.now += 8
    renewed = ok(
        eng,
        command="PATCH_RECORD",
        state="jobs",
        id=rec["id"],
        fields={"tries": 1},
        lease_seconds=10,
        if_version=rec["_version"],
    )["result"]
    assert renewed["tries"] == 1 and renewed["status"] == "running"
    clock.now += 8  # 16 s after the claim, 8 s after the renewal: still live
    assert claim(eng, PENDING, RUN_B, lease_seconds=10) is None
    clock.now += 2.5  # 10.5 s after the renewal: expired
    again = claim(eng, PENDING, RUN_B, lease_seconds=10)
    assert again is not None and again["worker"] == "B" and again["tries"] == 1


def test_patch_with_lease_seconds_without_a_lease_is_bad_request(jobs: Eng) -> None:
    eng, _ = jobs
    err(
        eng,
        "BadRequest",
        command="PATCH_RECORD",
        state="jobs",
        id=1,
        fields={"tries": 1},
        lease_seconds=10,
    )
    # nor after a claim without a lease (final), nor after a completed lease
    claim(eng, PENDING, RUN_A)
    err(
        eng,
        "BadRequest",
        command="PATCH_RECORD",
        state="jobs",
        id=1,
        fields={"tries": 1},
        lease_seconds=10,
    )
    claim(eng, PENDING, RUN_A, lease_seconds=10)
    ok(eng, command="PATCH_RECORD", state="jobs", id=2, fields={"status": "done"})
    err(
        eng,
        "BadRequest",
        command="PATCH_RECORD",
        state="jobs",
        id=2,
        fields={"tries": 1},
        lease_seconds=10,
    )


@pytest.mark.parametrize("lease", [0, -1, -0.5, True, "10", None, [10], float("nan")])
def test_bad_lease_seconds(jobs: Eng, lease: Any) -> None:
    eng, _ = jobs
    if lease is None:
        pytest.skip("an explicit null may mean 'no lease'; the README does not say")
    err(
        eng,
        "BadRequest",
        command="CLAIM_RECORD",
        state="jobs",
        where=PENDING,
        fields=RUN_A,
        lease_seconds=lease,
    )


WRITES: dict[str, dict[str, Any]] = {
    "SET_RECORD": {"record": {"status": "running", "worker": "A", "tries": 5}},
    "PATCH_RECORD": {"fields": {"status": "running", "tries": 5}},
    "INCREMENT": {"field": "worker", "by": 5},
    "DELETE_RECORD": {},
}


@pytest.mark.parametrize("write", ["DELETE_RECORD", "SET_RECORD", "PATCH_RECORD"])
def test_a_write_to_a_claimed_field_completes_the_lease(jobs: Eng, write: str) -> None:
    """Rule 4: SET_RECORD, DELETE_RECORD, or a PATCH naming a field the claim set."""
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    rec = claim(eng, PENDING, RUN_A, lease_seconds=10)
    ok(eng, command=write, state="jobs", id=rec["id"], if_version=rec["_version"], **WRITES[write])
    clock.now += 100
    # an ordinary record again: the pre-claim values are forgotten ...
    assert claim(eng, PENDING, RUN_B, lease_seconds=10) is None
    # ... and it is claimable only if it matches a `where` as it stands
    if write != "DELETE_RECORD":
        got = claim(eng, {"status": "running", "tries": 5}, RUN_B, lease_seconds=10)
        assert got is not None and got["worker"] == "B"
        # and a renewal of the old lease is no longer possible after a further completion
        ok(eng, command="PATCH_RECORD", state="jobs", id=got["id"], fields={"status": "done"})
        err(
            eng,
            "BadRequest",
            command="PATCH_RECORD",
            state="jobs",
            id=got["id"],
            fields={"tries": 1},
            lease_seconds=5,
        )


@pytest.mark.parametrize("write", ["PATCH_RECORD", "INCREMENT"])
def test_progress_updates_of_other_fields_keep_the_lease(jobs: Eng, write: str) -> None:
    """Rule 4: a PATCH or INCREMENT of fields the claim did not set leaves it running."""
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    rec = claim(eng, PENDING, RUN_A, lease_seconds=10)
    progress = {"fields": {"tries": 5}} if write == "PATCH_RECORD" else {"field": "tries", "by": 5}
    ok(eng, command=write, state="jobs", id=rec["id"], **progress)
    clock.now += 5
    assert claim(eng, PENDING, RUN_B, lease_seconds=10) is None  # still leased
    clock.now += 100
    got = claim(eng, PENDING, RUN_B, lease_seconds=10)  # expired: as before the claim
    assert got is not None and got["worker"] == "B" and got["tries"] == 5


def test_if_version_fences_a_worker_that_lost_its_lease(jobs: Eng) -> None:
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    a = claim(eng, PENDING, RUN_A, lease_seconds=10)
    clock.now += 11
    b = claim(eng, PENDING, RUN_B, lease_seconds=10)
    assert b["id"] == a["id"]
    # worker A comes back late: every write fenced on its _version is refused
    for cmd, args in [
        ("PATCH_RECORD", {"fields": {"status": "done"}}),
        ("PATCH_RECORD", {"fields": {"tries": 1}, "lease_seconds": 10}),
        ("SET_RECORD", {"record": {"status": "done", "worker": "A", "tries": 1}}),
        ("INCREMENT", {"field": "tries"}),
        ("DELETE_RECORD", {}),
    ]:
        err(
            eng,
            "VersionConflict",
            command=cmd,
            state="jobs",
            id=a["id"],
            if_version=a["_version"],
            **args,
        )
    # worker B completes with its own _version
    done = ok(
        eng,
        command="PATCH_RECORD",
        state="jobs",
        id=b["id"],
        fields={"status": "done"},
        if_version=b["_version"],
    )["result"]
    assert done["worker"] == "B" and done["status"] == "done"


def test_claim_without_lease_is_final(jobs: Eng) -> None:
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    claim(eng, PENDING, RUN_A)
    clock.now += 10_000
    assert claim(eng, PENDING, RUN_B) is None
    # a claim whose fields keep it matching takes it again
    assert claim(eng, {"status": "running"}, {"tries": 1})["tries"] == 1
    assert claim(eng, {"status": "running"}, {"tries": 2})["tries"] == 2


def test_lease_in_a_batch_and_a_failed_batch_keeps_the_lease(jobs: Eng) -> None:
    eng, clock = jobs
    ok(
        eng,
        command="SET_STATE",
        state="jobs",
        records=[{"status": "pending", "worker": None, "tries": 0}],
    )
    rec = claim(eng, PENDING, RUN_A, lease_seconds=10)
    # a batch that would complete the lease, then fails: nothing happened
    reply = eng.execute(
        {
            "command": "BATCH",
            "commands": [
                {
                    "command": "PATCH_RECORD",
                    "state": "jobs",
                    "id": rec["id"],
                    "fields": {"tries": 3},
                },
                {"command": "GET_RECORD", "state": "jobs", "id": 999},
            ],
        }
    )
    assert reply["ok"] is False and reply["error"]["type"] == "RecordNotFound", reply
    assert reply["error"]["message"].startswith("commands[1]"), reply
    clock.now += 11
    # the lease is still there (it expired): claimable by the pre-claim values
    again = claim(eng, PENDING, RUN_B, lease_seconds=10)
    assert again is not None and again["tries"] == 0


def test_methods_raise_the_error_classes(jobs: Eng) -> None:
    eng, clock = jobs
    a = eng.claim_record("jobs", where=PENDING, fields=RUN_A, lease_seconds=10)
    assert a["worker"] == "A"
    clock.now += 11
    b = eng.claim_record(
        "jobs", where={"status": "pending", "worker": None}, fields=RUN_B, lease_seconds=10
    )
    assert b["id"] == a["id"]
    with pytest.raises(errors.VersionConflict):
        eng.patch_record("jobs", a["id"], {"status": "done"}, if_version=a["_version"])
    with pytest.raises(errors.BadRequest):
        eng.patch_record("jobs", 3, {"tries": 1}, lease_seconds=5)
    assert (
        eng.patch_record("jobs", b["id"], {"status": "done"}, if_version=b["_version"])["status"]
        == "done"
    )


def test_an_attempt_counter_survives_expired_leases_and_bounds_retries(jobs: Eng) -> None:
    """README: ``{"$inc": n}`` in a claim's fields counts attempts; the count is not put
    back when a lease runs out, so ``where`` on it stops offering a poison task."""
    eng, clock = jobs
    ok(eng, command="SET_STATE", state="jobs", records=[{"status": "pending", "worker": None,
                                                         "tries": 0}])  # fmt: skip
    where = {"status": "pending", "tries": {"$lt": 3}}
    fields = {"status": "running", "tries": {"$inc": 1}}
    for attempt in (1, 2, 3):
        task = claim(eng, where, fields, lease_seconds=10)
        assert task is not None and task["tries"] == attempt
        clock.now += 11  # the worker died: the lease runs out
    assert claim(eng, where, fields, lease_seconds=10) is None  # 3 attempts: not offered
    left = ok(eng, command="LIST_RECORDS", state="jobs", where={"tries": 3})["result"]
    assert [r["status"] for r in left] == ["pending"]  # put back, but past the where
    err(eng, "SchemaError", command="CLAIM_RECORD", state="jobs", where={},
        fields={"worker": {"$inc": 1}})  # fmt: skip
    err(eng, "BadRequest", command="CLAIM_RECORD", state="jobs", where={},
        fields={"tries": {"$inc": "1"}})  # fmt: skip


def test_a_poison_task_is_dead_lettered_by_exactly_its_max_attempts_expiry(jobs: Eng) -> None:
    """README "Dead letters": the expiry of the lease taken at the max_attempts-th claim
    sets the dead-letter fields instead of the pre-claim values; earlier expiries put
    the task back."""
    eng, clock = jobs
    ok(eng, command="SET_STATE", state="jobs", records=[{"status": "pending", "worker": None,
                                                         "tries": 0}])  # fmt: skip
    kw = {"lease_seconds": 10, "max_attempts": 3, "dead_letter": {"status": "dead"}}
    fields = {"status": "running", "tries": {"$inc": 1}}
    for attempt in (1, 2, 3):
        task = claim(eng, PENDING, fields, **kw)
        assert task is not None and task["tries"] == attempt
        clock.now += 11
        expected = "dead" if attempt == 3 else "pending"
        assert eng.get_record("jobs", task["id"])["status"] == expected
    assert claim(eng, PENDING, fields, **kw) is None
    # completed in time: the dead letter is never written
    ok(eng, command="SET_STATE", state="jobs", records=[{"status": "pending", "worker": None,
                                                         "tries": 2}])  # fmt: skip
    task = claim(eng, PENDING, fields, **kw)
    eng.patch_record("jobs", task["id"], {"status": "done"}, if_version=task["_version"])
    clock.now += 11
    assert eng.get_record("jobs", task["id"])["status"] == "done"


@pytest.mark.parametrize(
    "extra",
    [
        {"max_attempts": 3},  # no dead_letter
        {"dead_letter": {"status": "dead"}},  # no max_attempts
        {"max_attempts": 0, "dead_letter": {"status": "dead"}},
        {"max_attempts": 3, "dead_letter": {"status": "dead"}, "lease_seconds": None},
        {"max_attempts": 3, "dead_letter": "dead"},
    ],
)
def test_bad_dead_letter_arguments(jobs: Eng, extra: dict[str, Any]) -> None:
    eng, _ = jobs
    req = {"command": "CLAIM_RECORD", "state": "jobs", "where": {},
           "fields": {"tries": {"$inc": 1}}, "lease_seconds": 5, **extra}  # fmt: skip
    err(eng, "BadRequest", **{k: v for k, v in req.items() if v is not None})
    no_counter = {**req, "fields": {"status": "x"}, "max_attempts": 2,
                  "dead_letter": {"status": "dead"}, "lease_seconds": 5}  # fmt: skip
    err(eng, "BadRequest", **no_counter)
