"""The entry point: :func:`check` over recorded operations.

Part of :mod:`stateengine.testing.checker` (its docstring describes the method).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Sequence
from typing import Any

from stateengine.testing.checker.model import (
    INF,
    REPORTED_FAILURES,
    SHRINK_FROM_START_MAX,
    Entry,
    State,
    TableState,
    refuse_unmodelled,
    step,
)
from stateengine.testing.checker.partitioning import Partition, _checked, _partition, _touches
from stateengine.testing.checker.report import CheckResult, PartitionFailure
from stateengine.testing.checker.search import _ctx, _Deadline, _prepare, _search, _seq_of
from stateengine.testing.checker.shrinking import _shrink, _signature
from stateengine.testing.history import Operation
from stateengine.testing.nemesis import faults_of, is_fault

# --- the entry point ---------------------------------------------------------------------------


def _initial_state(initial: dict[str, dict[Any, dict[str, Any]]] | None) -> State:
    tables: dict[str, TableState] = {}
    for name, records in (initial or {}).items():
        entries = []
        for rid, rec in records.items():
            vers = rec.get("_version")
            data = {k: v for k, v in rec.items() if k != "_version"}
            data["id"] = rid
            entries.append(Entry(rid, data, vers if type(vers) is int else 0, None))
        ints = [e.id for e in entries if type(e.id) is int]
        tables[name] = TableState(True, None, max(ints, default=0) + 1, None, tuple(entries))
    return State(tables)


def _with_prefix(part: Partition, prefix: Sequence[Operation], state0: State) -> Partition:
    """*part* with the setup operations on its tables put back, from the initial state.

    So that a failure is reported with the writes that explain the state it starts from.
    """
    tables = {t for op in part.ops for t, _, _ in _touches(op.request())}
    pre = [o for o in prefix if any(t in tables for t, _, _ in _touches(o.request()))]
    start = State({t: state0.tables[t] for t in tables if t in state0.tables}, state0.seq)
    return Partition([*pre, *part.ops], start, part.label)


def check(
    operations: Iterable[Operation],
    *,
    initial: dict[str, dict[Any, dict[str, Any]]] | None = None,
    time_limit: float | None = None,
    shrink_time: float = 10.0,
) -> CheckResult:
    """Check a history for linearizability (and snapshot consistency of ``SNAPSHOT`` reads).

    :param initial: tables that exist before the history, ``{table: {id: record}}``;
        anything else starts nonexistent (or comes from the history's setup operations).
    :param time_limit: seconds for the whole search; past it the verdict is unknown
        (``ok`` False, ``timed_out`` True).
    :param shrink_time: seconds spent shrinking each failing partition.
    :raises UnmodelledCommand: the history holds a write command without a model.
    """
    operations = list(operations)
    refuse_unmodelled(operations)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the memo holds many small objects and no cycles: collections only cost
    try:
        return _check(operations, initial, time_limit, shrink_time)
    finally:
        if gc_was_enabled:
            gc.enable()


def _check(
    operations: Iterable[Operation],
    initial: dict[str, dict[Any, dict[str, Any]]] | None,
    time_limit: float | None,
    shrink_time: float,
) -> CheckResult:
    t0 = time.monotonic()
    deadline = INF if time_limit is None else t0 + time_limit
    all_ops = sorted(operations, key=lambda o: (o.invoke, o.process, o.op))
    start_time = all_ops[0].invoke if all_ops else 0
    ids = {id(o): i for i, o in enumerate(all_ops)}
    ops = [o for o in all_ops if _checked(o)]
    known_seqs = frozenset(s for s in map(_seq_of, ops) if s is not None)
    state = state0 = _initial_state(initial)
    failures: list[PartitionFailure] = []
    # The sequential prefix: operations that overlap nothing after them.
    n_prefix = 0
    first_invoke_after = [INF] * (len(ops) + 1)
    for i in range(len(ops) - 1, -1, -1):
        first_invoke_after[i] = min(first_invoke_after[i + 1], ops[i].invoke)
    for i, op in enumerate(ops):
        if not op.known or op.complete is None or op.complete >= first_invoke_after[i + 1]:
            break
        ctx = _ctx(op, ids[id(op)], known_seqs)
        fits = list(dict.fromkeys(step(state, op, ctx)))
        if len(fits) != 1:
            break  # ambiguous or unexplained: the search takes it from here
        state = fits[0]
        n_prefix = i + 1
    explored = 0
    parts: list[Partition] = []
    timed_out = False
    if not failures:
        parts = _partition(ops[n_prefix:], state)
        parts.sort(key=lambda p: len(p.ops))
        for part in parts:
            try:
                if time.monotonic() > deadline:
                    raise _Deadline
                res = _search(_prepare(part.ops, known_seqs, ids), part.initial, deadline)
            except _Deadline:
                timed_out = True
                failures.append(
                    PartitionFailure(part.label, len(part.ops), True, [], None, 0.0, known_seqs)
                )
                break
            explored += res.explored
            if res.ok is False and len(failures) >= REPORTED_FAILURES:
                failures.append(
                    PartitionFailure(part.label, len(part.ops), False, [], res, 0.0, known_seqs)
                )
            elif res.ok is False:
                t_shrink = time.monotonic()
                whole = _with_prefix(part, ops[:n_prefix], state0)
                context = whole.ops  # the partition with its setup operations
                culprits = _signature(res, known_seqs)
                start: State | None = None
                if len(whole.ops) > SHRINK_FROM_START_MAX and res.stuck_state is not None:
                    # Too long to shrink from the start: shrink what is left at the
                    # deepest point the search reached, from the state it reached there.
                    whole = Partition(res.rest, res.stuck_state, part.label)
                    start = res.stuck_state
                sub, sub_res = _shrink(whole, known_seqs, ids, shrink_time, culprits)
                failures.append(
                    PartitionFailure(
                        part.label,
                        len(context),
                        False,
                        sub,
                        sub_res or res,
                        time.monotonic() - t_shrink,
                        known_seqs,
                        start,
                        res.depth,
                        context,
                        bool(res.unexplained),
                    )
                )
    faults = faults_of(all_ops)  # the nemesis's: not operations of the workload
    return CheckResult(
        ok=not failures,
        operations=len(all_ops) - len(faults),
        checked=len(ops),
        unchecked=len(all_ops) - len(faults) - len(ops),
        unknown_outcome=sum(1 for o in all_ops if not o.known and not is_fault(o)),
        partitions=len(parts) + (1 if n_prefix else 0),
        explored=explored + n_prefix,
        seconds=time.monotonic() - t0,
        failures=failures,
        start_time=start_time,
        timed_out=timed_out,
        faults=faults,
        operations_around=all_ops if faults else [],
    )
