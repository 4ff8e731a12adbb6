"""The nemesis: reproducible schedules, faults recorded in the history and shown on the
checker's timeline, a server killed and restarted under a recording client (its ``seq``
goes on), and a fault kind added from outside."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stateengine.errors import ServerUnavailable
from stateengine.testing import ServerProcess
from stateengine.testing.checker import check
from stateengine.testing.history import Operation, read_history, simulate
from stateengine.testing.invariants import at_most_once, verify
from stateengine.testing.nemesis import (
    FAULT,
    FAULT_KINDS,
    FaultKind,
    Hit,
    Nemesis,
    Schedule,
    Step,
    Targets,
    faults_of,
    register,
)


def test_a_seed_gives_the_same_schedule() -> None:
    a = Schedule.random(seed=3, faults=8)
    assert a == Schedule.random(seed=3, faults=8)
    assert a.steps != Schedule.random(seed=4, faults=8).steps
    assert {s.kind for s in a.steps} <= set(FAULT_KINDS)
    assert all(n.at >= p.at + p.seconds for p, n in zip(a.steps, a.steps[1:], strict=False))
    with pytest.raises(ValueError, match="unknown fault kinds"):
        Schedule.random(seed=3, kinds=["unplug-the-moon"])


def _fault(invoke: int, complete: int, kind: str = "pause-worker", pid: int = 42) -> Operation:
    result = {"target": "worker 0", "pid": pid}
    args = {"kind": kind, "seconds": (complete - invoke) / 1e9}
    return Operation("nemesis", 0, FAULT, args, invoke, complete, True, result, None)


def test_the_report_shows_faults_on_the_timeline() -> None:
    steps = [
        ("a", {"command": "CREATE_STATE", "state": "t"}),
        ("a", {"command": "CREATE_RECORD", "state": "t", "record": {"id": 1, "n": 0}}),
        ("b", {"command": "PATCH_RECORD", "state": "t", "id": 1, "fields": {"n": 1}}),
        ("c", {"command": "GET_RECORD", "state": "t", "id": 1}),
    ]
    ops = simulate(steps, rng=random.Random(1), gap=10_000_000, spread=1_000_000)  # no overlap
    fault = _fault(ops[2].invoke - 500_000, ops[3].complete or 0)
    assert check([*ops, fault]).ok
    # Corrupt the read: it returns the value from before the patch (a stale read).
    stale = ops[3].result | {"n": 0, "_version": ops[1].result["_version"]}
    bad = [*ops[:3], Operation(**{**ops[3].__dict__, "result": stale}), fault]
    result = check(bad)
    report = result.report()
    assert not result.ok and result.faults == [fault]
    assert result.operations == 4  # the fault is not one of the workload's operations
    assert "faults: 1" in report and "FAULT pause-worker of worker 0 (pid 42)" in report
    timeline = report.split("smallest failing sub-history")[1]
    assert "    nemesis:" in timeline and "FAULT pause-worker" in timeline
    # Without the fault, no fault section and no nemesis block: the control.
    assert "nemesis" not in check(bad[:4]).report()


def test_kill_and_pause_the_server_under_a_recording_client(
    stateengine_server_factory: Callable[..., ServerProcess],
    stateengine_history: Path,
    stateengine_nemesis: Callable[..., Nemesis],
) -> None:
    server = stateengine_server_factory("--fsync", "no")
    first_pid = server.pid
    schedule = [Step(0.3, "kill-server", 0.3), Step(0.9, "pause-server", 0.6)]
    with server.connect(timeout=0.4, history=stateengine_history) as db:
        db.create_record("counters", {"id": "c", "n": 0})
        nemesis = stateengine_nemesis(schedule, server=server, history=stateengine_history)
        deadline = time.monotonic() + 30
        while not nemesis.wait(0) and time.monotonic() < deadline:  # bounded
            try:
                db.increment("counters", "c", "n")
            except ServerUnavailable:
                pass  # the server is down or paused: an unknown outcome, recorded as such
        nemesis.stop()
        assert nemesis.counts() == {"kill-server": 1, "pause-server": 1}
        assert server.pid != first_pid  # it was killed and restarted
        for _ in range(3):  # after the faults, whatever the restart's speed left before
            db.increment("counters", "c", "n")
        final = db.get_record("counters", "c")
    ops = read_history(*stateengine_history.glob("*.msgpack"))
    assert len(faults_of(ops)) == 2
    kill = faults_of(ops)[0]
    seqs_before = [o.seq for o in ops if o.seq and o.complete and o.complete < kill.invoke]
    seqs_after = [o.seq for o in ops if o.seq and o.invoke > (kill.complete or 0)]
    assert seqs_before and seqs_after and min(seqs_after) > max(seqs_before)  # seq goes on
    result = check(ops, time_limit=60)
    assert result.ok, result.report()
    assert final["n"] >= sum(1 for o in ops if o.command == "INCREMENT" and o.ok)


class Flag(FaultKind):
    """A fault kind from outside the kit: raises a flag in ``Targets.extra``."""

    name: ClassVar[str] = "raise-flag"

    def applicable(self, targets: Targets) -> bool:
        return "flag" in targets.extra

    def inject(self, targets: Targets, pick: int) -> Hit:
        targets.extra["flag"].append("up")
        return Hit("flag", None)

    def heal(self, targets: Targets, hit: Hit) -> dict[str, Any]:
        targets.extra["flag"].append("down")
        return {"flag": "down"}


def test_a_fault_kind_plugs_in(tmp_path: Path) -> None:
    kinds = {**FAULT_KINDS}
    register(Flag())
    try:
        flag: list[str] = []
        schedule = Schedule.random(
            seed=1, kinds=["raise-flag"], faults=2, start=0, gap=(0, 0), seconds=(0.01, 0.02)
        )
        with Nemesis(schedule, Targets(extra={"flag": flag}), history=tmp_path) as nemesis:
            assert nemesis.wait(10)
        assert flag == ["up", "down", "up", "down"]
        faults = faults_of(read_history(*tmp_path.glob("*.msgpack")))
        assert [f.args["kind"] for f in faults] == ["raise-flag"] * 2
        assert faults[0].result == {"target": "flag", "pid": None, "flag": "down"}
        # A second nemesis on the same history: its faults are its own (no op id clash).
        with Nemesis(schedule, Targets(extra={"flag": flag}), history=tmp_path) as again:
            assert again.wait(10)
        assert len(faults_of(read_history(*tmp_path.glob("*.msgpack")))) == 4
    finally:
        FAULT_KINDS.clear()
        FAULT_KINDS.update(kinds)


def restart_and_read(server: ServerProcess, folder: Path, hide_last: bool) -> list[Operation]:
    """a reads from the arena; the server is killed and restarted; b writes; a reads."""
    with server.connect(history=folder) as a, server.connect(history=folder) as b:
        b.create_record("t", {"id": 1, "n": 0})
        a.get_record("t", 1)  # a reads from the arena
        assert a._view is not None
        # The read below comes within the view's once-a-second check of server.json, as
        # it does when the restart is quick (the test makes it certain, not likely).
        a._view.deadline = time.monotonic() + 60
        with Nemesis([], Targets(server), history=folder) as nemesis:
            with nemesis.fault("kill-server"):
                if hide_last:  # the control: the new server cannot find the old arena
                    (server.data_dir / "arena.last").unlink()
        b.patch_record("t", 1, {"n": 1})
        a.get_record("t", 1)
    return read_history(*folder.glob("*.msgpack"))


def test_a_read_after_a_restart_sees_the_restarted_servers_writes(
    stateengine_server: ServerProcess, stateengine_history: Path
) -> None:
    """Found by the soak: a client still attached to the dead server's arena read its last
    version after the restarted server had moved on. The restarted server now marks the
    old arena superseded (arena.last); the nemesis restarts before it removes the old
    segments, or there would be nothing left to mark."""
    result = check(restart_and_read(stateengine_server, stateengine_history, False))
    assert result.ok, result.report()


def test_control_without_arena_last_the_read_is_stale(
    stateengine_server: ServerProcess, stateengine_history: Path
) -> None:
    result = check(restart_and_read(stateengine_server, stateengine_history, True))
    assert not result.ok
    assert "FAULT kill-server of server" in result.report().split("partition")[1]


def _op(process: str, op: int, command: str, args: dict[str, Any], t: int, ok: bool | None) -> Any:
    known = ok is not None
    return Operation(
        process, op, command, args, t, t + 10 if known else None, ok, {} if ok else None, None
    )


def test_at_most_once_counts_known_successes_and_shows_related_operations() -> None:
    effect = {"state": "effects", "record": {"task": 7}}
    ops = [
        _op("1-1", 0, "CLAIM_RECORD", {"state": "tasks"}, 0, True),
        _op("1-1", 1, "CREATE_RECORD", effect, 100, True),
        _op("2-1", 0, "CREATE_RECORD", effect, 200, None),  # unknown outcome: not counted
        _op("3-1", 0, "CREATE_RECORD", effect, 300, False),  # failed: not counted
    ]

    def key(op: Operation) -> Any:
        return op.args["record"]["task"] if op.command == "CREATE_RECORD" else None

    def related(op: Operation) -> Any:
        return 7 if op.command == "CLAIM_RECORD" else None

    once = at_most_once("effect once", key, related=related, what="task")
    assert list(once(ops)) == []
    doubled = [*ops, _op("4-1", 0, "CREATE_RECORD", effect, 400, True)]  # the control
    (violation,) = once(doubled)
    assert violation.message == "task 7: 2 times (1-1#1, 4-1#0)"
    assert [o.command for o in violation.operations] == ["CREATE_RECORD"] * 2 + ["CLAIM_RECORD"]
    fault = _fault(150, 350, pid=4)
    verdict = verify([*doubled, fault], [once])
    assert not verdict.ok and verdict.violations == [violation]
    assert verdict.faults_during(violation) == [fault]
    assert "invariant 'effect once': VIOLATED (1 violations)" in verdict.report()
    assert "invariant 'effect once': held" in verify(ops, [once]).report()
