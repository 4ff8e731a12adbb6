"""The checker against the real engine, with generated histories.

- The checker's sequential model agrees with ``TableEngine`` on random command sequences
  (so "the product's commands as the sequential model" stays true).
- A concurrent history generated from a sequential run of the real engine (intervals
  stretched to overlap, some outcomes unknown or lost) is always accepted.
- The same history with one reply mutated is accepted exactly when a brute-force search
  over every real-time-respecting order, replayed on the real engine, explains it.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.server.engine import TableEngine
from stateengine.testing.checker import (
    CHECKED_ERRORS,
    WRITE_COMMANDS,
    Ctx,
    State,
    check,
    step,
)
from stateengine.testing.checker.model import Entry, Records, TableState
from stateengine.testing.history import Operation, simulate

T = "t"
IDS = [1, 2, 3]
Step = tuple[str, dict[str, Any]]

SETUP: list[Step] = [
    ("setup", {"command": "CREATE_STATE", "state": T, "schema": {"n": "integer", "s": "string"}}),
    ("setup", {"command": "CREATE_RECORD", "state": T, "record": {"id": 1, "n": 0, "s": "a"}}),
    ("setup", {"command": "CREATE_RECORD", "state": T, "record": {"id": 2, "n": 0, "s": "a"}}),
]


@st.composite
def requests(draw: st.DrawFn, *, max_version: int = 12, leases: bool = True) -> dict[str, Any]:
    """One request on table T (records ids 1..3, fields n: integer, s: string)."""
    rid = draw(st.sampled_from(IDS))
    s = st.sampled_from(["a", "b"])
    kind = draw(
        st.sampled_from(
            [
                "get",
                "get",
                "set",
                "patch",
                "patch",
                "increment",
                "delete",
                "create",
                "create_auto",
                "claim",
                "list",
                "snapshot",
                "batch",
                "info",
                "alter",
            ]
        )
    )
    req: dict[str, Any]
    if kind == "get":
        return {"command": "GET_RECORD", "state": T, "id": rid}
    if kind == "info":
        return {"command": "GET_STATE_INFO", "state": T}
    if kind == "alter":  # a second one is a SchemaError (not modelled, changes nothing)
        return {
            "command": "ALTER_STATE",
            "state": T,
            "add": {"x": {"type": "integer", "default": 0}},
        }
    if kind == "set":
        req = {
            "command": "SET_RECORD",
            "state": T,
            "id": rid,
            "record": {"n": draw(st.integers(0, 3)), "s": draw(s)},
        }
    elif kind == "patch":
        fields = draw(st.sampled_from([{"n": draw(st.integers(0, 3))}, {"s": draw(s)}]))
        req = {"command": "PATCH_RECORD", "state": T, "id": rid, "fields": fields}
    elif kind == "increment":
        req = {
            "command": "INCREMENT",
            "state": T,
            "id": rid,
            "field": "n",
            "by": draw(st.sampled_from([1, 2])),
        }
    elif kind == "delete":
        req = {"command": "DELETE_RECORD", "state": T, "id": rid}
    elif kind == "create":
        return {"command": "CREATE_RECORD", "state": T, "record": {"id": rid, "n": 0, "s": draw(s)}}
    elif kind == "create_auto":
        return {"command": "CREATE_RECORD", "state": T, "record": {"n": 9, "s": "a"}}
    elif kind == "claim":
        req = {"command": "CLAIM_RECORD", "state": T, "where": {"s": "a"}, "fields": {"s": "b"}}
        if draw(st.booleans()):
            req["order_by"] = "-n"
        if leases and draw(st.booleans()):
            req["lease_seconds"] = draw(st.sampled_from([1000, 0.002]))
        return req
    elif kind == "list":
        req = {"command": "LIST_RECORDS", "state": T}
        if draw(st.booleans()):
            req["where"] = {"s": draw(s)}
        if draw(st.booleans()):
            req["order_by"] = draw(st.sampled_from(["n", "-n", ["s", "-id"]]))
        if draw(st.booleans()):
            req["limit"] = draw(st.integers(0, 2))
        return req
    elif kind == "snapshot":
        return {
            "command": "SNAPSHOT",
            "reads": [{"command": "GET_RECORD", "state": T, "id": i} for i in (1, 2)]
            + [{"command": "LIST_RECORDS", "state": T}],
        }
    else:
        return {
            "command": "BATCH",
            "commands": [
                {
                    "command": "PATCH_RECORD",
                    "state": T,
                    "id": 1,
                    "fields": {"n": draw(st.integers(0, 3))},
                },
                {"command": "INCREMENT", "state": T, "id": rid, "field": "n"},
            ],
        }
    pre = draw(st.sampled_from(["none", "none", "if_version", "if_match", "expected_version"]))
    if pre == "if_version":
        req["if_version"] = draw(st.integers(1, max_version))
    elif pre == "if_match":
        req["if_match"] = {"s": draw(s)}
    elif pre == "expected_version":
        req["expected_version"] = draw(st.integers(0, max_version))
    return req


def steps_strategy(
    n_ops: int, processes: int, *, leases: bool = True
) -> st.SearchStrategy[list[Step]]:
    step_st = st.tuples(
        st.sampled_from([f"p{i}" for i in range(processes)]),
        requests(max_version=n_ops + len(SETUP), leases=leases),
    )
    return st.lists(step_st, min_size=1, max_size=n_ops).map(lambda ops: [*SETUP, *ops])


# --- the model agrees with the engine -------------------------------------------------------


def _engine_view(engine: TableEngine) -> Any:
    table = engine.tables.get(T)
    if table is None:
        return None
    return (table.version, table.next_id, [dict(r) for r in table.records.values()])


def _model_view(state: State) -> Any:
    table = state.table(T)
    if not table.exists:
        return None
    return (table.version, table.next_id, [{**e.data, "_version": e.vers} for e in table.records])


@settings(max_examples=300, deadline=None)
@given(st.lists(requests(max_version=20), max_size=25), st.booleans())
def test_the_model_agrees_with_the_engine(reqs: list[dict[str, Any]], drop: bool) -> None:
    """Replay each request on both; the model must explain each reply and end alike."""
    engine = TableEngine(clock=lambda: 0.0)
    state = State({})
    prefix = [req for _, req in SETUP]
    if drop:
        prefix.append({"command": "DELETE_STATE", "state": T})
        prefix.append(
            {
                "command": "SET_STATE",
                "state": T,
                "records": [{"n": 5, "s": "a"}, {"id": 7, "n": 1, "s": "b"}, {"n": 2, "s": "a"}],
            }
        )
    for i, req in enumerate([*prefix, *reqs]):
        if req["command"] == "SNAPSHOT":
            results = []
            for read in req["reads"]:
                r = engine.execute(read)
                results.append(
                    {"ok": True, "result": r["result"]}
                    if r["ok"]
                    else {"ok": False, "error": r["error"]["type"]}
                )
            reply: dict[str, Any] = {"ok": True, "result": results, "seq": engine.seq}
        else:
            reply = engine.execute(req)
        error = None if reply["ok"] else reply["error"]["type"]
        if error is not None and error not in CHECKED_ERRORS:
            continue  # not modelled (state-independent validation): changed nothing
        args = {k: v for k, v in req.items() if k != "command"}
        write = (
            reply["ok"]
            and req["command"] in WRITE_COMMANDS
            and not (req["command"] == "CLAIM_RECORD" and reply["result"] is None)
        )
        seq = reply.get("seq") if write else None
        op = Operation(
            "p", i, req["command"], args, i, i, reply["ok"], reply.get("result"), error, seq
        )
        ctx = Ctx(seq if seq is not None else -1, i, float(i), frozenset())
        nxt = step(state, op, ctx)
        assert len(nxt) == 1, f"model cannot explain {req} -> {reply}"
        state = nxt[0]
        assert _model_view(state) == _engine_view(engine), req


# --- generated histories are accepted --------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy(40, 4), st.randoms(use_true_random=False), st.data())
def test_histories_of_a_sequential_run_are_accepted(
    steps: list[Step], rng: random.Random, data: st.DataObject
) -> None:
    body = range(len(SETUP), len(steps))
    unknown = data.draw(st.sets(st.sampled_from(body), max_size=3))
    lost = data.draw(st.sets(st.sampled_from(body), max_size=2)) - unknown
    ops = simulate(steps, rng=rng, unknown=unknown, lost=lost)
    result = check(ops)
    assert result.ok, result.report()


# --- mutated histories: the checker agrees with a brute-force search on the engine -----------


def _writes(op: Operation) -> bool:
    return (
        bool(op.ok)
        and op.command in WRITE_COMMANDS
        and not (op.command == "CLAIM_RECORD" and op.result is None)
    )


def _replay(engine: TableEngine, op: Operation) -> bool:
    """Apply *op* to *engine* (its seq forced to the recorded one); does the reply match?"""
    if _writes(op):
        if op.seq is None or op.seq - 1 < engine.seq:
            return False  # commits come in seq order
        engine.seq = op.seq - 1
    request = op.request()
    if op.command == "SNAPSHOT":
        results = []
        for read in request["reads"]:
            r = engine.execute(read)
            results.append(
                {"ok": True, "result": r["result"]}
                if r["ok"]
                else {"ok": False, "error": r["error"]["type"]}
            )
        return bool(op.ok) and results == op.result
    reply = engine.execute(request)
    if reply["ok"]:
        return (
            bool(op.ok)
            and reply["result"] == op.result
            and type(reply["result"]) is type(op.result)
        )
    return not op.ok and reply["error"]["type"] == op.error


def brute_force(ops: list[Operation]) -> bool:
    """Whether some order respecting real time explains every reply on the real engine."""
    ops = [o for o in ops if o.ok or o.error in CHECKED_ERRORS]

    def search(engine: TableEngine, remaining: list[Operation]) -> bool:
        if not remaining:
            return True
        first_return = min(o.complete for o in remaining)  # type: ignore[type-var]
        for op in remaining:
            if op.invoke > first_return:  # type: ignore[operator]
                continue  # some remaining op completed before this one began
            e = copy.deepcopy(engine)
            if _replay(e, op) and search(e, [o for o in remaining if o is not op]):
                return True
        return False

    return search(TableEngine(clock=lambda: 0.0), ops)


def mutate(op: Operation, other: Operation, how: int, seqs: list[int]) -> Operation | None:
    r = op.result
    if how == 0 and op.ok:  # flip to an error
        return dataclasses.replace(
            op,
            ok=False,
            result=None,
            seq=None,
            error="VersionConflict" if op.command != "GET_RECORD" else "RecordNotFound",
        )
    if how == 1 and isinstance(r, dict):  # change a value (a record's n, a table's size)
        key = "n" if "n" in r else "size"
        return dataclasses.replace(op, result={**r, key: r.get(key, 0) + 1})
    if how == 2 and isinstance(r, dict) and "id" in r and seqs:  # an older or other version
        return dataclasses.replace(op, result={**r, "_version": seqs[0]})
    if how == 3 and type(r) is int:
        return dataclasses.replace(op, result=r + 1)
    if how == 4 and isinstance(r, list) and r:
        return dataclasses.replace(op, result=r[::-1] if len(r) > 1 else [])
    if how == 5 and other.command == op.command and other is not op:  # another op's reply
        return dataclasses.replace(
            op, ok=other.ok, result=other.result, error=other.error, seq=op.seq
        )
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy(5, 3, leases=False), st.randoms(use_true_random=False), st.data())
def test_mutated_histories_match_a_brute_force_search(
    steps: list[Step], rng: random.Random, data: st.DataObject
) -> None:
    ops = simulate(steps, rng=rng, gap=1000, spread=2500)
    assert brute_force(ops)
    i = data.draw(st.integers(len(SETUP) - 1, len(ops) - 1))
    j = data.draw(st.integers(0, len(ops) - 1))
    seqs = sorted({o.seq for o in ops if _writes(o) and o.seq is not None and o is not ops[i]})
    bad = mutate(ops[i], ops[j], data.draw(st.integers(0, 5)), seqs)
    if bad is None or bad == ops[i]:
        return
    mutated = [*ops[:i], bad, *ops[i + 1 :]]
    expected = brute_force(mutated)
    result = check(mutated)
    assert result.ok == expected, result.report()


# --- a long history: fast enough, and a corrupted read in it is found -----------------------


def _long_steps(n: int, rng: random.Random) -> list[Step]:
    steps = list(SETUP)
    steps.append(
        ("setup", {"command": "CREATE_RECORD", "state": T, "record": {"id": 3, "n": 0, "s": "a"}})
    )
    while len(steps) < n:
        p = f"p{rng.randrange(4)}"
        rid = rng.choice(IDS)
        k = rng.random()
        if k < 0.3:
            steps.append((p, {"command": "GET_RECORD", "state": T, "id": rid}))
        elif k < 0.5:
            steps.append((p, {"command": "INCREMENT", "state": T, "id": rid, "field": "n"}))
        elif k < 0.65:
            claim = {
                "command": "CLAIM_RECORD",
                "state": T,
                "where": {"s": "a"},
                "fields": {"s": "b"},
            }
            steps.append((p, {**claim, "lease_seconds": 1000}))
        elif k < 0.8:
            steps.append(
                (p, {"command": "PATCH_RECORD", "state": T, "id": rid, "fields": {"s": "a"}})
            )
        elif k < 0.9:
            reads = [{"command": "GET_RECORD", "state": T, "id": i} for i in IDS]
            steps.append((p, {"command": "SNAPSHOT", "reads": reads}))
        else:
            steps.append((p, {"command": "LIST_RECORDS", "state": T, "where": {"s": "a"}}))
    return steps


def test_ten_thousand_operations_with_unknown_outcomes() -> None:
    rng = random.Random(9)
    steps = _long_steps(10_000, rng)
    writes = [i for i, (p, r) in enumerate(steps) if p != "setup" and r["command"] == "INCREMENT"]
    picked = rng.sample(writes, 12)
    ops = simulate(
        steps, rng=rng, gap=1000, spread=3000, unknown=set(picked[:6]), lost=set(picked[6:])
    )
    result = check(ops, time_limit=30)
    assert result.ok, result.report()
    assert result.seconds < 10, result.report()

    index = next(i for i in range(5000, len(ops)) if ops[i].command == "GET_RECORD" and ops[i].ok)
    bad = dataclasses.replace(ops[index], result={**ops[index].result, "n": -1})
    result = check([*ops[:index], bad, *ops[index + 1 :]], time_limit=30)
    assert not result.ok
    (failure,) = result.failures
    assert failure.sub_history == [bad], result.report()
    assert "the model allows only" in result.report()


# --- the records of a table: a persistent chunked sequence ---------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 300), st.integers(0, 3))))
def test_records_built_by_writes_equal_the_same_entries_built_at_once(
    writes: list[tuple[int, int, int]],
) -> None:
    """Appends, in-place writes and removals (across chunk boundaries) give the records a
    flat list of the same writes gives: equal, same hash, same order and positions."""
    flat: list[Entry] = []
    table = TableState(True)
    for how, rid, n in writes:
        entry = Entry(rid, {"id": rid, "n": n}, n + 1, None)
        at = next((i for i, e in enumerate(flat) if e.id == rid), -1)
        if how == 2 and at >= 0:
            del flat[at]
            table = table.remove(rid)
        elif how < 2:
            if at >= 0:
                flat[at] = entry
            else:
                flat.append(entry)
            table = table.put(entry)
    records = table.records
    once = Records.of(flat)
    assert list(records) == flat and len(records) == len(flat)
    assert records == once and hash(records) == hash(once)
    assert all(records[i] is e and table.find(e.id) == i for i, e in enumerate(flat))
    assert [i for i, _ in records.from_(3)] == list(range(3, len(flat)))
    if flat:  # one value more is another table
        changed = Entry(flat[0].id, {"id": flat[0].id, "n": -1}, 99, None)
        assert Records.of([changed, *flat[1:]]) != records
