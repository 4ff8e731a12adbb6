"""The linearizability search over one partition (P-compositional, WGL-style).

Part of :mod:`stateengine.testing.checker` (its docstring describes the method).
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from stateengine.testing.checker.model import INF, Ctx, State, _writes, apply, step
from stateengine.testing.history import Operation

# --- the search ------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """One partition's operations, ready for the search."""

    known: list[Operation]  # sorted by invocation
    unknown: list[Operation]
    inv: list[int]
    ret: list[float]
    ctx: list[Ctx]
    uctx: list[Ctx]
    req: list[dict[str, Any]]
    ureq: list[dict[str, Any]]
    known_seqs: frozenset[int]


def _seq_of(op: Operation) -> int | None:
    if not op.known or not op.ok or not _writes(op.command):
        return None
    if op.command == "CLAIM_RECORD" and op.result is None:
        return None  # a claim that found nothing wrote nothing
    if op.command == "BATCH":
        commands = op.args.get("commands") or []
        results = op.result if isinstance(op.result, list) else []
        found = [True] * len(commands)  # without a result per command: assume it found one
        found[: len(results)] = [r is not None for r in results[: len(commands)]]
        if all(
            isinstance(c, dict)
            and (not _writes(c.get("command")) or (c.get("command") == "CLAIM_RECORD" and not f))
            for c, f in zip(commands, found, strict=True)
        ):
            # A batch of reads, and of claims that found nothing, wrote nothing: its reply
            # carries the seq of an earlier commit (found by the nemesis machine test).
            return None
    if isinstance(op.seq, int) and op.seq > 0:
        return op.seq
    if isinstance(op.result, dict) and type(op.result.get("_version")) is int:
        return int(op.result["_version"])
    return None


def _ctx(op: Operation, index: int, known_seqs: frozenset[int]) -> Ctx:
    seq = _seq_of(op)
    return Ctx(
        seq if seq is not None else -index - 1,
        op.invoke,
        INF if op.complete is None else op.complete,
        known_seqs,
    )


def _prepare(
    ops: Sequence[Operation], known_seqs: frozenset[int], ids: dict[int, int]
) -> _Prepared:
    known = sorted((o for o in ops if o.known), key=lambda o: o.invoke)
    unknown = sorted((o for o in ops if not o.known), key=lambda o: o.invoke)
    return _Prepared(
        known,
        unknown,
        [o.invoke for o in known],
        [float(o.complete) for o in known],  # type: ignore[arg-type]
        [_ctx(o, ids[id(o)], known_seqs) for o in known],
        [_ctx(o, ids[id(o)], known_seqs) for o in unknown],
        [o.request() for o in known],
        [o.request() for o in unknown],
        known_seqs,
    )


@dataclass
class SearchResult:
    ok: bool | None  # None: out of time
    explored: int
    #: The deepest point reached: the state and the operations that could come next.
    stuck_state: State | None = None
    stuck_ops: list[Operation] = field(default_factory=list)
    stuck_linearized: list[Operation] = field(default_factory=list)
    #: Every operation not linearized at the deepest point (they fail from stuck_state).
    rest: list[Operation] = field(default_factory=list)
    depth: int = 0
    #: Operations that no state the search tried explained (a read of a value never
    #: written), reads first; the point above is where the first was last tried.
    unexplained: list[Operation] = field(default_factory=list)


_FREE: dict[frozenset[int], Callable[[int, float], list[int] | None]] = {}

#: Beyond this many candidate seqs, an unknown write takes a placeholder version instead.
MAX_SEQ_CHOICES: Final = 8


def _free_seqs(known_seqs: frozenset[int]) -> Callable[[int, float], list[int] | None]:
    """``free(a, b)``: the seqs in ``(a, b)`` that no recorded write has (None: too many).

    ``seq`` is dense (one per committed write), so a write of unknown outcome that took
    effect has one of those free numbers: it can only be linearized where the recorded
    writes leave one, and it gets that number as its ``_version``, so that a read shows
    which of several such writes it saw. Past the last recorded seq any number is free.
    """
    cached = _FREE.get(known_seqs)
    if cached is not None:
        return cached
    ordered = sorted(known_seqs)
    lo = ordered[0] if ordered else 1
    hi = ordered[-1] if ordered else 0
    free = [g for g in range(lo, hi + 1) if g not in known_seqs]

    def between(a: int, b: float) -> list[int] | None:
        if a + 1 < lo or b > hi + 1:
            return None  # before the first or past the last recorded write: unbounded
        i = bisect.bisect_right(free, a)
        j = bisect.bisect_left(free, b)
        return free[i:j] if j - i <= MAX_SEQ_CHOICES else None

    _FREE.clear()  # one history at a time
    _FREE[known_seqs] = between
    return between


class _Deadline(Exception):
    pass


def _search(prep: _Prepared, initial: State, deadline: float) -> SearchResult:
    """Wing & Gong / Lowe: DFS over minimal operations, memoized on (linearized set, state).

    A node is ``(k, window, unk, state)``: known operations ``< k`` are linearized, bit
    ``i`` of ``window`` says whether known operation ``k + i`` is, bit ``u`` of ``unk``
    whether unknown-outcome operation ``u`` is (those may also never be).
    """
    m = len(prep.known)
    inv, ret, ctxs, reqs = prep.inv, prep.ret, prep.ctx, prep.req
    free_seqs = _free_seqs(prep.known_seqs)
    part_seqs = sorted(c.seq for c in ctxs if c.seq > 0)
    uinv = [o.invoke for o in prep.unknown]
    known_ops, unknown_ops = prep.known, prep.unknown
    memo: set[tuple[int, int, int, State]] = set()
    explored = 0
    best_depth = -1
    best: tuple[int, int, int, State] = (0, 0, 0, initial)
    # Operations that were tried and that no state explained, each with the deepest node
    # it was tried at: a read of a value never written is one of those, and the deepest
    # point of some other path (stuck on an operation a wrong earlier choice made
    # unexplainable) would hide it from the report.
    explained: set[int] = set()
    unexplained: dict[int, tuple[int, tuple[int, int, int, State]]] = {}
    # Trail of linearized op ids down the current path, for the report.
    path: list[Operation] = []
    best_path: list[Operation] = []
    track = m <= 2000  # copying the path is quadratic: only for small partitions

    def children(k: int, window: int, unk: int, state: State) -> Iterator[tuple[Any, ...]]:
        cands: list[int] = []
        bound = INF
        z = ~window
        # The dense-seq rule: recorded writes commit in seq order, so the only one that
        # may come next is the partition's lowest not yet linearized (one with a higher
        # seq would strand it: step refuses a seq below the state's).
        i = bisect.bisect_right(part_seqs, state.seq)
        nxt_seq = part_seqs[i] if i < len(part_seqs) else INF
        while True:
            low = z & -z
            j = k + low.bit_length() - 1
            if j >= m or inv[j] > bound:
                break
            if ctxs[j].seq <= nxt_seq:
                cands.append(j)
            if ret[j] < bound:
                bound = ret[j]
            z ^= low
        cands.sort(key=ret.__getitem__)
        steps: dict[int, list[State]] = {}
        for j in cands:
            nxts = steps[j] = step(state, known_ops[j], ctxs[j], reqs[j])
            if nxts:
                explained.add(j)
            elif j not in explained:
                here = k + window.bit_count()
                if unexplained.get(j, (-1,))[0] < here:
                    unexplained[j] = (here, (k, window, unk, state))
            if len(nxts) == 1 and nxts[0] is state:
                # A read explained by this state: any explanation from here can be
                # rearranged to take it first (nothing must precede it and it changes
                # nothing), so it is the only child worth trying.
                yield from known_children(k, window, unk, state, [j], steps)
                return
        if unknown_ops:
            # An unknown write that took effect has a free seq: between the last recorded
            # write linearized here and the next one (commits come in seq order).
            seqs = free_seqs(state.seq, nxt_seq)
            if seqs is None or seqs:
                # A free seq among the recorded ones says some write of unknown outcome
                # took effect right there: try those first.
                if seqs is None:
                    yield from known_children(k, window, unk, state, cands, steps)
                # Most recent first: a request lost on the way is usually an old one.
                for u in range(len(unknown_ops) - 1, -1, -1):
                    if unk >> u & 1 or uinv[u] > bound:
                        continue
                    base = prep.uctx[u]
                    for g in seqs if seqs is not None else [0]:
                        ctx = base if g == 0 else dataclasses.replace(base, seq=g)
                        for outcome, nxt in apply(state, prep.ureq[u], ctx):
                            if outcome[0] == "ok" and nxt is not state:
                                g2 = g or state.seq + 1
                                yield k, window, unk | 1 << u, nxt.with_seq(g2), unknown_ops[u]
                if seqs is None:
                    return
        yield from known_children(k, window, unk, state, cands, steps)

    def known_children(
        k: int,
        window: int,
        unk: int,
        state: State,
        cands: list[int],
        steps: dict[int, list[State]],
    ) -> Iterator[tuple[Any, ...]]:
        for j in cands:
            op = known_ops[j]
            for nxt in steps[j]:
                bit = 1 << (j - k)
                w = window | bit
                nk = k
                if bit == 1:
                    t = (~w & (w + 1)).bit_length() - 1  # trailing ones
                    nk, w = k + t, w >> t
                yield nk, w, unk, nxt, op

    stack: list[Iterator[tuple[Any, ...]]] = [children(0, 0, 0, initial)]
    if m == 0:
        return SearchResult(True, 0)
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            if path:
                path.pop()
            continue
        key = item[:4]
        if key in memo:
            continue
        memo.add(key)
        explored += 1
        if explored & 1023 == 0 and time.monotonic() > deadline:
            raise _Deadline
        path.append(item[4])
        k = item[0]
        if k >= m:
            return SearchResult(True, explored)
        depth = k + item[1].bit_count()
        if depth > best_depth:
            best_depth, best = depth, key
            if track:
                best_path = list(path)
        stack.append(children(*key))
    # Reads first: a write also goes unexplained when it observed a write that an
    # impossible read kept out. The report starts where the first was last tried.
    never = sorted(
        (j for j in unexplained if j not in explained),
        key=lambda j: (_writes(known_ops[j].command), j),
    )
    if never:
        best_depth, best = unexplained[never[0]]
        best_path = []
    k, window, unk, state = best if best_depth >= 0 else (0, 0, 0, initial)
    rest = [known_ops[j] for j in range(k, m) if not window >> (j - k) & 1]
    rest += [op for u, op in enumerate(unknown_ops) if not unk >> u & 1]
    stuck = []
    bound = INF
    for j in range(k, m):
        if window >> (j - k) & 1:
            continue
        if inv[j] > bound:
            break
        stuck.append(known_ops[j])
        bound = min(bound, ret[j])
    return SearchResult(
        False,
        explored,
        state,
        stuck,
        best_path,
        rest,
        max(best_depth, 0),
        [known_ops[j] for j in never],
    )
