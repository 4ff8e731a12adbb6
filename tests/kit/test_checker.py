"""The checker on hand-made histories: what it must reject (with a clear report) and accept.

Times are in milliseconds; ``op(...)`` builds an :class:`Operation` of a process, and
``setup()`` the usual start: one table with one record, written before anything else.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import msgpack
import pytest

from stateengine.testing.checker import check, main
from stateengine.testing.history import HistoryWriter, Operation, read_history, reads_as_of_sync

T = "t"
_counters: dict[str, itertools.count[int]] = {}


def op(
    process: str,
    command: str,
    args: dict[str, Any],
    start: float,
    end: float | None,
    result: Any = None,
    *,
    error: str | None = None,
    seq: int | None = None,
) -> Operation:
    n = next(_counters.setdefault(process, itertools.count()))
    return Operation(
        process,
        n,
        command,
        {"state": T, **args} if command not in ("SNAPSHOT", "BATCH") else args,
        int(start * 1e6),
        None if end is None else int(end * 1e6),
        None if end is None else error is None,
        result,
        error,
        seq,
    )


def rec(rid: int, version: int, **fields: Any) -> dict[str, Any]:
    return {"id": rid, **fields, "_version": version}


def setup(n: int = 0) -> list[Operation]:
    """CREATE_STATE (seq 1) and record 1 ``{n, status: free}`` (seq 2), before all else."""
    return [
        op("setup", "CREATE_STATE", {}, -10, -9, {"name": T, "version": 0, "size": 0}, seq=1),
        op(
            "setup",
            "CREATE_RECORD",
            {"record": {"id": 1, "n": n, "status": "free"}},
            -8,
            -7,
            rec(1, 2, n=n, status="free"),
            seq=2,
        ),
    ]


def rejected(ops: list[Operation]) -> str:
    result = check(ops)
    report = result.report()
    assert not result.ok, report
    assert "NOT linearizable" in report
    return report


def accepted(ops: list[Operation]) -> None:
    result = check(ops)
    assert result.ok, result.report()


# --- must be rejected ------------------------------------------------------------------------


def test_stale_read_after_an_acknowledged_write() -> None:
    ops = [
        *setup(),
        op(
            "a",
            "PATCH_RECORD",
            {"id": 1, "fields": {"n": 5}},
            0,
            1,
            rec(1, 3, n=5, status="free"),
            seq=3,
        ),
        op("b", "GET_RECORD", {"id": 1}, 2, 3, rec(1, 2, n=0, status="free")),
    ]
    report = rejected(ops)
    # The report names the stale read, what the model allowed instead, and the write.
    assert (
        "b#0 GET_RECORD: observed ok {'id': 1, 'n': 0, 'status': 'free', '_version': 2}" in report
    )
    assert "the model allows only: ok {'id': 1, 'n': 5, 'status': 'free', '_version': 3}" in report
    assert "PATCH_RECORD" in report and "process a:" in report
    # The same read overlapping the write is fine (it may come first).
    ops[-1] = op("b", "GET_RECORD", {"id": 1}, 0.5, 3, rec(1, 2, n=0, status="free"))
    accepted(ops)


def test_stale_version_alone_is_a_stale_read() -> None:
    """Same value, older ``_version`` (an ABA write): still a stale read."""
    ops = [
        *setup(),
        op(
            "a",
            "SET_RECORD",
            {"id": 1, "record": {"n": 0, "status": "free"}},
            0,
            1,
            rec(1, 3, n=0, status="free"),
            seq=3,
        ),
        op("b", "GET_RECORD", {"id": 1}, 2, 3, rec(1, 2, n=0, status="free")),
    ]
    rejected(ops)


def test_lost_update_two_compare_and_sets_from_one_version() -> None:
    ops = [
        *setup(),
        op("a", "GET_RECORD", {"id": 1}, 0, 1, rec(1, 2, n=0, status="free")),
        op("b", "GET_RECORD", {"id": 1}, 0, 1, rec(1, 2, n=0, status="free")),
        op(
            "a",
            "PATCH_RECORD",
            {"id": 1, "fields": {"n": 1}, "if_version": 2},
            2,
            4,
            rec(1, 3, n=1, status="free"),
            seq=3,
        ),
        op(
            "b",
            "PATCH_RECORD",
            {"id": 1, "fields": {"n": 1}, "if_version": 2},
            2,
            4,
            rec(1, 4, n=1, status="free"),
            seq=4,
        ),
    ]
    report = rejected(ops)
    assert "if_version=2" in report
    # One of them conflicting is the linearizable outcome.
    ops[-1] = op(
        "b",
        "PATCH_RECORD",
        {"id": 1, "fields": {"n": 1}, "if_version": 2},
        2,
        4,
        error="VersionConflict",
    )
    accepted(ops)


def test_lost_update_two_increments_return_the_same_value() -> None:
    ops = [
        *setup(),
        op("a", "INCREMENT", {"id": 1, "field": "n"}, 0, 2, 1, seq=3),
        op("b", "INCREMENT", {"id": 1, "field": "n"}, 0.5, 2.5, 1, seq=4),
    ]
    report = rejected(ops)
    assert "the model allows only: ok 2" in report
    ops[-1] = op("b", "INCREMENT", {"id": 1, "field": "n"}, 0.5, 2.5, 2, seq=4)
    accepted(ops)


def _claim(
    process: str, start: float, end: float, result: Any, seq: int | None, **kw: Any
) -> Operation:
    args = {"where": {"status": "free"}, "fields": {"status": "taken"}, **kw}
    return op(process, "CLAIM_RECORD", args, start, end, result, seq=seq)


def test_double_claim_without_a_lease() -> None:
    ops = [
        *setup(),
        _claim("a", 0, 2, rec(1, 3, n=0, status="taken"), 3),
        _claim("b", 1, 3, rec(1, 4, n=0, status="taken"), 4),
    ]
    report = rejected(ops)
    assert "CLAIM_RECORD" in report and "process a:" in report and "process b:" in report
    ops[-1] = _claim("b", 1, 3, None, None)
    accepted(ops)


def _expiry(start: float, end: float, result: Any, seq: int, how: str = "lease") -> Operation:
    """The server's expiry commit of record 1, as the kit records it from the feed."""
    parts = [{"state": T, "id": 1, "how": how}]
    return op("server", "EXPIRY", {"commands": parts}, start, end, [result], seq=seq)


def test_double_claim_under_a_live_lease_and_a_reclaim_after_it_ran_out() -> None:
    first = _claim("a", 0, 1, rec(1, 3, n=0, status="taken"), 3, lease_seconds=1.0)
    expiry = _expiry(900, 1002, rec(1, 4, n=0, status="free"), 4)
    again = _claim("b", 1500, 1501, rec(1, 5, n=0, status="taken"), 5, lease_seconds=1.0)
    accepted([*setup(), first, expiry, again])  # the expiry commit put the record back
    # without an expiry commit the lease holds: a second claim is a double claim
    rejected([*setup(), first, _claim("b", 1500, 1501, rec(1, 4, n=0, status="taken"), 4)])
    # an expiry that restores other values than the claim overwrote is rejected
    rejected([*setup(), first, _expiry(900, 1002, rec(1, 4, n=0, status="gone"), 4)])
    # Completing the claim (a claimed field changed) ends the lease: nothing to expire.
    done = op(
        "a",
        "PATCH_RECORD",
        {"id": 1, "fields": {"status": "done"}},
        2,
        3,
        rec(1, 4, n=0, status="done"),
        seq=4,
    )
    rejected([*setup(), first, done, _expiry(900, 1002, rec(1, 5, n=0, status="free"), 5)])


def test_snapshot_showing_a_mix_of_two_states() -> None:
    ops = [
        *setup(),
        op(
            "setup",
            "CREATE_RECORD",
            {"record": {"id": 2, "n": 0, "status": "free"}},
            -6,
            -5,
            rec(2, 3, n=0, status="free"),
            seq=3,
        ),
        # One batch moves both records to n=1 atomically.
        op(
            "a",
            "BATCH",
            {
                "commands": [
                    {"command": "PATCH_RECORD", "state": T, "id": 1, "fields": {"n": 1}},
                    {"command": "PATCH_RECORD", "state": T, "id": 2, "fields": {"n": 1}},
                ]
            },
            0,
            10,
            [rec(1, 4, n=1, status="free"), rec(2, 4, n=1, status="free")],
            seq=4,
        ),
    ]
    reads = {"reads": [{"command": "GET_RECORD", "state": T, "id": i} for i in (1, 2)]}
    mixed = [
        {"ok": True, "result": rec(1, 4, n=1, status="free")},
        {"ok": True, "result": rec(2, 3, n=0, status="free")},
    ]
    report = rejected([*ops, op("b", "SNAPSHOT", reads, 2, 8, mixed)])
    assert "SNAPSHOT" in report
    # Two separate GETs may see that mix (each at its own point)... no: the batch is
    # atomic, so even two GETs cannot see record 1 new and then record 2 old.
    get1 = op("b", "GET_RECORD", {"id": 1}, 2, 3, rec(1, 4, n=1, status="free"))
    get2 = op("b", "GET_RECORD", {"id": 2}, 4, 5, rec(2, 3, n=0, status="free"))
    rejected([*ops, get1, get2])
    before = [
        {"ok": True, "result": rec(1, 2, n=0, status="free")},
        {"ok": True, "result": rec(2, 3, n=0, status="free")},
    ]
    after = [
        {"ok": True, "result": rec(1, 4, n=1, status="free")},
        {"ok": True, "result": rec(2, 4, n=1, status="free")},
    ]
    accepted(
        [*ops, op("b", "SNAPSHOT", reads, 2, 8, before), op("c", "SNAPSHOT", reads, 2, 8, after)]
    )


def test_an_error_reply_is_a_read_of_the_state() -> None:
    ops = [*setup(), op("a", "GET_RECORD", {"id": 1}, 0, 1, error="RecordNotFound")]
    assert "error RecordNotFound" in rejected(ops)
    conflict = op(
        "a",
        "PATCH_RECORD",
        {"id": 1, "fields": {"n": 1}, "if_version": 2},
        0,
        1,
        error="VersionConflict",
    )
    rejected([*setup(), conflict])


# --- must be accepted ------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["a", "b"])
def test_concurrent_writes_in_either_order(first: str) -> None:
    last = "b" if first == "a" else "a"
    seqs = {first: 3, last: 4}
    value = {"a": 10, "b": 20}
    ops = [*setup()]
    for p in ("a", "b"):
        ops.append(
            op(
                p,
                "PATCH_RECORD",
                {"id": 1, "fields": {"n": value[p]}},
                0,
                5,
                rec(1, seqs[p], n=value[p], status="free"),
                seq=seqs[p],
            )
        )
    ops.append(op("c", "GET_RECORD", {"id": 1}, 6, 7, rec(1, 4, n=value[last], status="free")))
    accepted(ops)
    # ...but a read after both must see the one with the later seq.
    ops[-1] = op("c", "GET_RECORD", {"id": 1}, 6, 7, rec(1, 3, n=value[first], status="free"))
    rejected(ops)


def test_unknown_outcomes_may_or_may_not_have_happened() -> None:
    lost = op("a", "PATCH_RECORD", {"id": 1, "fields": {"n": 7}}, 0, None)
    timeout = op("a", "INCREMENT", {"id": 1, "field": "n"}, 1, 2, error="ServerUnavailable")
    timeout = Operation(
        timeout.process,
        timeout.op,
        timeout.command,
        timeout.args,
        timeout.invoke,
        None,
        None,
        None,
        None,
    )
    # Neither took effect.
    accepted(
        [
            *setup(),
            lost,
            timeout,
            op("b", "GET_RECORD", {"id": 1}, 5, 6, rec(1, 2, n=0, status="free")),
        ]
    )
    # The patch took effect (its seq is unknown: any version not written by another).
    accepted(
        [*setup(), lost, op("b", "GET_RECORD", {"id": 1}, 5, 6, rec(1, 9, n=7, status="free"))]
    )
    # Both, in order.
    accepted(
        [
            *setup(),
            lost,
            timeout,
            op("b", "GET_RECORD", {"id": 1}, 5, 6, rec(1, 11, n=8, status="free")),
        ]
    )
    # But never before it was invoked.
    early = op("b", "GET_RECORD", {"id": 1}, -6, -5.5, rec(1, 9, n=7, status="free"))
    rejected([*setup(), lost, early])


def test_failed_requests_that_do_not_read_the_state_are_not_checked() -> None:
    bad = op("a", "PATCH_RECORD", {"id": 1, "fields": {"nope": 1}}, 0, 1, error="SchemaError")
    result = check([*setup(), bad])
    assert result.ok and result.unchecked == 1


def test_initial_tables() -> None:
    get = op("a", "GET_RECORD", {"id": 1}, 0, 1, rec(1, 7, n=3))
    assert not check([get]).ok  # no table: StateNotFound expected
    assert check([get], initial={T: {1: {"n": 3, "_version": 7}}}).ok
    assert check([get], initial={T: {1: {"n": 3}}}).ok  # version unknown: any


def test_shrinking_keeps_the_writes_a_failure_needs() -> None:
    noise = [
        op(
            p,
            "PATCH_RECORD",
            {"id": 1, "fields": {"status": s}},
            10 * i,
            10 * i + 4,
            rec(1, 3 + i, n=0, status=s),
            seq=3 + i,
        )
        for i, (p, s) in enumerate(itertools.islice(itertools.cycle([("a", "x"), ("b", "y")]), 20))
    ]
    last = noise[-1]
    stale = op("c", "GET_RECORD", {"id": 1}, 300, 301, noise[-3].result)
    result = check([*setup(), *noise, stale])
    assert not result.ok
    (failure,) = result.failures
    assert len(failure.sub_history) <= 4, result.report()
    assert stale in failure.sub_history and last in failure.sub_history


def test_time_limit_gives_no_verdict() -> None:
    ops = [*setup()]
    for i in range(300):
        ops.append(
            op(f"p{i % 4}", "INCREMENT", {"id": 1, "field": "n"}, i, i + 50, i + 1, seq=3 + i)
        )
    result = check(ops, time_limit=0.0)
    assert not result.ok and result.timed_out
    assert "out of time" in result.report()


# --- the history files and the command line --------------------------------------------------


def test_history_files_round_trip_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.msgpack"
    with HistoryWriter(path, "w1") as w:
        i = w.invoke("CREATE_STATE", {"state": T})
        w.complete(i, ok=True, result={"name": T, "version": 0}, seq=1)
        i = w.invoke("CREATE_RECORD", {"state": T, "record": {"id": 1, "n": 0}})
        w.complete(i, ok=True, result={"id": 1, "n": 0, "_version": 2}, seq=2)
        i = w.invoke("GET_RECORD", {"state": T, "id": 1})
        w.complete(i, ok=True, result={"id": 1, "n": 0, "_version": 2})
        i = w.invoke("INCREMENT", {"state": T, "id": 1, "field": "n"})
        w.complete(i, ok=False, error="ServerUnavailable")
        i = w.invoke("PATCH_RECORD", {"state": T, "id": 1, "fields": {"n": 3}})
        w.complete(i, ok=False, error="KeyboardInterrupt")  # raised in the client: unknown
        w.invoke("DELETE_RECORD", {"state": T, "id": 1})  # killed before the reply
    with open(path, "ab") as f:
        f.write(msgpack.packb({"type": "complete", "process": "w1"})[:5])  # a torn tail
    ops = read_history(path)
    assert [o.command for o in ops] == [
        "CREATE_STATE",
        "CREATE_RECORD",
        "GET_RECORD",
        "INCREMENT",
        "PATCH_RECORD",
        "DELETE_RECORD",
    ]
    assert [o.known for o in ops] == [True, True, True, False, False, False]
    assert ops[1].seq == 2 and ops[2].result == {"id": 1, "n": 0, "_version": 2}
    assert main([str(path)]) == 0
    assert "history: linearizable" in capsys.readouterr().out

    other = tmp_path / "h2.msgpack"  # one file per process; read together
    with HistoryWriter(other, "w2") as w:
        i = w.invoke("GET_RECORD", {"state": T, "id": 1})
        w.complete(i, ok=True, result={"id": 1, "n": 5, "_version": 2})
    assert main([str(path), str(other)]) == 1
    out = capsys.readouterr().out
    assert "NOT linearizable" in out and "w2#0 GET_RECORD" in out


def test_commands_the_model_does_not_know_are_not_checked() -> None:
    states = op("a", "LIST_STATES", {}, 0, 1, ["t"])
    batch = op(
        "a",
        "BATCH",
        {
            "commands": [
                {"command": "GET_SCHEMA", "state": T},
                {"command": "GET_RECORD", "state": T, "id": 1},
            ]
        },
        2,
        3,
        [["id", "n", "status"], rec(1, 2, n=0, status="free")],
    )
    result = check([*setup(), states, batch])
    assert result.ok and result.unchecked == 1, result.report()


def test_a_renewed_lease_holds_until_its_new_deadline() -> None:
    """An expiry commit that completes before the lease could have run out (here: before
    the renewed deadline) is rejected; one after it is accepted."""
    claim = _claim("a", 0, 1, rec(1, 3, n=0, status="taken"), 3, lease_seconds=1.0)
    renew = op(
        "a",
        "PATCH_RECORD",
        {"id": 1, "fields": {"n": 1}, "lease_seconds": 1.0},
        800,
        801,
        rec(1, 4, n=1, status="taken"),
        seq=4,
    )

    def expiry(at: float) -> Operation:
        return _expiry(at - 5, at, rec(1, 5, n=1, status="free"), 5)

    rejected([*setup(), claim, renew, expiry(1500)])  # past the first deadline only
    accepted([*setup(), claim, renew, expiry(2000)])
    # and the claim after the expiry takes the record as put back
    again = _claim("b", 2100, 2101, rec(1, 6, n=1, status="taken"), 6, lease_seconds=1.0)
    accepted([*setup(), claim, renew, expiry(2000), again])


def test_expected_version_is_the_table_version() -> None:
    def create(process: str, rid: int, seq: int) -> Operation:
        args = {"record": {"id": rid, "n": 0, "status": "free"}, "expected_version": 1}
        return op(process, "CREATE_RECORD", args, 0, 2, rec(rid, seq, n=0, status="free"), seq=seq)

    # After CREATE_STATE and one record the table is at version 1: only one can succeed.
    rejected([*setup(), create("a", 2, 3), create("b", 3, 4)])
    loser = op(
        "b",
        "CREATE_RECORD",
        {"record": {"id": 3, "n": 0, "status": "free"}, "expected_version": 1},
        0,
        2,
        error="VersionConflict",
    )
    accepted([*setup(), create("a", 2, 3), loser])


def test_ttl_expiry_commits_and_reads() -> None:
    """A TTL set by EXPIRE_RECORD shows as ``_expires`` (its value is the server's clock:
    only its presence is modelled); the expiry commit deletes the record; an expiry of a
    record without a TTL, or a read of the record after its delete, is rejected."""
    expire = op("a", "EXPIRE_RECORD", {"id": 1, "ttl": 1.0}, 0, 1,
                {**rec(1, 3, n=0, status="free"), "_expires": 1e9 + 1.0}, seq=3)  # fmt: skip
    gone = _expiry(1000, 1001, None, 4, how="ttl")
    read_after = op("b", "GET_RECORD", {"id": 1}, 1100, 1101, error="RecordNotFound")
    accepted([*setup(), expire, gone, read_after])
    rejected([*setup(), gone])  # no TTL to run out
    shown = {**rec(1, 3, n=0, status="free"), "_expires": 1e9 + 1.0}
    stale = op("b", "GET_RECORD", {"id": 1}, 1100, 1101, shown)
    rejected([*setup(), expire, gone, stale])
    # a read that shows no _expires after the TTL was set is rejected too
    plain = op("b", "GET_RECORD", {"id": 1}, 2, 3, rec(1, 3, n=0, status="free"))
    rejected([*setup(), expire, plain])


# --- a cluster node's reads after sync() -------------------------------------------------------


def test_a_read_after_sync_is_checked_from_the_syncs_invocation() -> None:
    """A write acknowledged (by another node) while b's sync ran may be missing from b's
    next read: strictly a stale read, as the node promises it a read from the sync's
    invocation on (``reads_as_of_sync``). Not so once b's own write was acknowledged in
    between (applied after everything acknowledged before it), nor without a sync."""
    write = op("a", "PATCH_RECORD", {"id": 1, "fields": {"n": 5}}, 1, 2, rec(1, 3, n=5), seq=3)
    write = dataclasses.replace(write, result=rec(1, 3, n=5, status="free"))
    sync = op("b", "SYNC", {}, 0, 3, {"applied": "1-0"})
    stale = op("b", "GET_RECORD", {"id": 1}, 4, 5, rec(1, 2, n=0, status="free"))
    ops = [*setup(), write, sync, stale]
    rejected(ops)
    accepted(reads_as_of_sync(ops))
    # the control: b's own write between the sync and the read ends the window
    own = op("b", "CREATE_RECORD", {"record": {"id": 2}}, 3.5, 3.8, rec(2, 4), seq=4)
    stale_after = dataclasses.replace(stale, op=own.op + 1)
    report = rejected(reads_as_of_sync([*setup(), write, sync, own, stale_after]))
    assert "GET_RECORD: observed" in report
    # and a read with no sync before it stays as recorded
    alone = dataclasses.replace(stale, process="c", op=0)
    rejected(reads_as_of_sync([*setup(), write, alone]))
