"""Shrinking a failing partition to a small failing sub-history (delta debugging).

Part of :mod:`stateengine.testing.checker` (its docstring describes the method).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from stateengine.testing.checker.model import apply
from stateengine.testing.checker.partitioning import Partition
from stateengine.testing.checker.search import (
    SearchResult,
    _ctx,
    _Deadline,
    _prepare,
    _search,
    _seq_of,
)
from stateengine.testing.history import Operation

# --- shrinking -------------------------------------------------------------------------------


def _dependents(ops: Sequence[Operation]) -> dict[int, list[int]]:
    """op index → indices of ops that observed its write (a ``_version``/``if_version``).

    Dropping a write drops those too, so that a shrunk history never blames a read for
    a value whose write was cut away.
    """
    writer: dict[int, int] = {}
    for i, op in enumerate(ops):
        s = _seq_of(op)
        if s is not None:
            writer[s] = i
    deps: dict[int, list[int]] = {}

    def observed(value: Any, out: set[int]) -> None:
        if isinstance(value, dict):
            v = value.get("_version")
            if type(v) is int:
                out.add(v)
            for x in value.values():
                if isinstance(x, (dict, list)):
                    observed(x, out)
        elif isinstance(value, list):
            for x in value:
                observed(x, out)

    for i, op in enumerate(ops):
        seen: set[int] = set()
        observed(op.result, seen)
        observed(op.args, seen)
        for req in [op.args, *(op.args.get("commands") or []), *(op.args.get("reads") or [])]:
            if isinstance(req, dict) and type(req.get("if_version")) is int:
                seen.add(req["if_version"])
        for s in seen:
            w = writer.get(s)
            if w is not None and w != i:
                deps.setdefault(w, []).append(i)
    return deps


def _signature(res: SearchResult, known_seqs: frozenset[int]) -> set[tuple[int, frozenset[str]]]:
    """Where a failed search got stuck: (operation, what the model allowed it: ok/errors).

    Only the first operation that no state explained, where the search found one: the
    others may be stuck only because of it.
    """
    if res.stuck_state is None:
        return set()
    first = res.unexplained[:1]
    stuck = first if first and any(op is first[0] for op in res.stuck_ops) else res.stuck_ops
    sig = set()
    for op in stuck:
        outs = apply(res.stuck_state, op.request(), _ctx(op, 0, known_seqs))
        sig.add((id(op), frozenset(o[0] if o[0] == "ok" else f"err:{o[1]}" for o, _ in outs)))
    return sig


def _shrink(
    part: Partition,
    known_seqs: frozenset[int],
    ids: dict[int, int],
    budget: float,
    culprits: set[tuple[int, frozenset[str]]],
) -> tuple[list[Operation], SearchResult | None]:
    """Delta debugging: the shortest failing prefix, then drop chunks while it still fails.

    "Fails" means: still not linearizable, and still stuck at one of the *culprits* (see
    :func:`_signature`) for the same kind of reason, so that a removal that makes some
    operation unexplainable in a new way (a read whose write was dropped, a write whose
    table was never created) is not taken for progress.
    """
    t_end = time.monotonic() + budget
    ops = sorted(part.ops, key=lambda o: o.invoke)
    last: dict[str, SearchResult] = {}

    def fails(sub: list[Operation]) -> bool:
        now = time.monotonic()
        if now > t_end:
            return False
        try:
            res = _search(_prepare(sub, known_seqs, ids), part.initial, min(t_end, now + 2.0))
        except _Deadline:
            return False
        if res.ok is False and _signature(res, known_seqs) & culprits:
            last["r"] = res
            return True
        return False

    # 1. the shortest failing prefix (linearizability is prefix-closed)
    lo, hi = 1, len(ops)
    while lo < hi and time.monotonic() < t_end:
        mid = (lo + hi) // 2
        if fails(ops[:mid]):
            hi = mid
        else:
            lo = mid + 1
    ops = ops[:hi]
    # 2. drop chunks (with whatever observed them), large chunks first
    chunk = max(1, len(ops) // 2)
    while time.monotonic() < t_end:
        deps = _dependents(ops)
        i, removed_any = 0, False
        while i < len(ops) and time.monotonic() < t_end:
            drop = set(range(i, min(i + chunk, len(ops))))
            todo = list(drop)
            while todo:
                for d in deps.get(todo.pop(), []):
                    if d not in drop:
                        drop.add(d)
                        todo.append(d)
            if len(drop) < len(ops):
                candidate = [o for j, o in enumerate(ops) if j not in drop]
                if fails(candidate):
                    ops, removed_any = candidate, True
                    deps = _dependents(ops)
                    continue
            i += chunk
        if chunk == 1 and not removed_any:
            break
        chunk = max(1, chunk // 2)
    try:
        final = _search(_prepare(ops, known_seqs, ids), part.initial, time.monotonic() + 5.0)
    except _Deadline:
        return ops, last.get("r")
    return ops, final if final.ok is False and final.stuck_ops else last.get("r")
