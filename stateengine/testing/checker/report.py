"""Check results and their human-readable reports (timelines, states, what the model allowed).

Part of :mod:`stateengine.testing.checker` (its docstring describes the method).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stateengine.testing.checker.model import REPORTED_FAILURES, State, apply, describe_outcome
from stateengine.testing.checker.partitioning import _touches
from stateengine.testing.checker.search import SearchResult, _ctx, _seq_of
from stateengine.testing.history import Operation

# --- results and reports ---------------------------------------------------------------------


@dataclass
class PartitionFailure:
    """A partition that could not be linearized (or ran out of time)."""

    label: str
    ops: int
    timed_out: bool
    #: The smallest failing sub-history found, its search result and the shrink time.
    sub_history: list[Operation]
    search: SearchResult | None
    shrink_seconds: float
    known_seqs: frozenset[int]
    #: When the sub-history starts from the state the search reached (large partitions):
    #: that state, how many operations led to it, and the operations of the partition.
    start_state: State | None = None
    start_depth: int = 0
    context: list[Operation] = field(default_factory=list)
    #: The start state is where an operation no state explained was last tried.
    start_unexplained: bool = False


@dataclass
class CheckResult:
    """The verdict on a history; ``report()`` explains it."""

    ok: bool
    operations: int
    checked: int
    unchecked: int
    unknown_outcome: int
    partitions: int
    explored: int
    seconds: float
    failures: list[PartitionFailure]
    start_time: int
    timed_out: bool = False

    def report(self) -> str:
        """A readable verdict: counts, then each failing partition's smallest sub-history."""
        verdict = "linearizable" if self.ok else "NOT linearizable"
        if self.timed_out and not any(not f.timed_out for f in self.failures):
            verdict = "UNKNOWN (time limit reached)"
        lines = [
            f"history: {verdict}",
            f"  {self.operations} operations ({self.checked} checked, {self.unchecked} not "
            f"checkable, {self.unknown_outcome} of unknown outcome), {self.partitions} "
            f"partitions, {self.explored} states explored, {self.seconds:.3f} s",
        ]
        for failure in self.failures[:REPORTED_FAILURES]:
            lines.extend(self._failure_lines(failure))
        more = self.failures[REPORTED_FAILURES:]
        if more:
            lines.append("")
            lines.append(
                f"... and {len(more)} more failing partitions: "
                + ", ".join(f.label for f in more[:20])
            )
        return "\n".join(lines)

    def _failure_lines(self, f: PartitionFailure) -> list[str]:
        if f.timed_out:
            return [f"partition {f.label}: {f.ops} operations, out of time (no verdict)"]
        lines = [
            "",
            f"partition {f.label}: NOT linearizable ({f.ops} operations)",
            f"  smallest failing sub-history found: {len(f.sub_history)} operations "
            f"(shrunk in {f.shrink_seconds:.2f} s); times in ms from the history's start, "
            "'?' = unknown outcome:",
        ]
        if f.start_state is not None:
            lines.append(
                f"  starting from the state reached by linearizing the first {f.start_depth} "
                + (
                    "operations (where an operation that no state explained was last tried):"
                    if f.start_unexplained
                    else "operations (no explanation got further):"
                )
            )
            lines.extend(_format_state(f.start_state, f.sub_history, f.context, self.start_time))
        lines.extend(format_timeline(f.sub_history, self.start_time))
        s = f.search
        if s is not None and s.stuck_state is not None:
            if s.stuck_linearized:
                done = ", ".join(f"{o.process}#{o.op}" for o in s.stuck_linearized)
                lines.append(f"  the longest explanation found linearizes: {done}")
                lines.append("  and then none of these can come next:")
            else:
                lines.append("  none of these can come first:")
            for op in s.stuck_ops:
                outs = apply(s.stuck_state, op.request(), _ctx(op, 0, f.known_seqs))
                said = "; ".join(describe_outcome(o) for o, _ in outs) or "(nothing)"
                got = f"ok {op.result!r}" if op.ok else f"error {op.error}"
                lines.append(f"    {op.process}#{op.op} {op.command}: observed {got}")
                lines.append(f"      the model allows only: {said}")
        return lines


def _format_state(
    state: State, sub: Sequence[Operation], context: Sequence[Operation], start: int
) -> list[str]:
    """The records *sub* touches (all of a table it reads whole), and who wrote them."""
    writers = {s: op for op in context if (s := _seq_of(op)) is not None}
    wanted: dict[str, set[Any] | None] = {}
    for op in sub:
        for t, rid, whole in _touches(op.request()):
            if whole:
                wanted[t] = None
            elif wanted.get(t, set()) is not None:
                wanted.setdefault(t, set()).add(rid)  # type: ignore[union-attr]
    lines = []
    for name, ids in wanted.items():
        table = state.table(name)
        if not table.exists:
            lines.append(f"    table {name!r} does not exist")
            continue
        lines.append(f"    table {name!r} (version {table.version}):")
        shown = [e for e in table.records if ids is None or e.id in ids]
        for e in shown[:12]:
            w = writers.get(e.vers)
            by = "" if w is None else f"  <- written by {w.process} {format_op(w, start)}"
            lease = "" if e.lease is None else " (leased)"
            lines.append(f"      {_short(e.record())}{lease}{by}")
        if len(shown) > 12:
            lines.append(f"      ... {len(shown) - 12} more")
    return lines


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_op(op: Operation, start: int) -> str:
    args = " ".join(f"{k}={_short(v, 80)}" for k, v in op.args.items())
    begin = (op.invoke - start) / 1e6
    if op.complete is None:
        span, out = f"[{begin:10.3f} ..          ?]", "-> ? (unknown outcome)"
    else:
        end = (op.complete - start) / 1e6
        span = f"[{begin:10.3f} .. {end:10.3f}]"
        out = f"-> ok {_short(op.result)}" if op.ok else f"-> error {op.error}"
    return f"{span} #{op.op} {op.command} {args} {out}"


def format_timeline(ops: Iterable[Operation], start: int) -> list[str]:
    """One block per process, its operations in invocation order."""
    by_process: dict[str, list[Operation]] = {}
    for op in sorted(ops, key=lambda o: o.invoke):
        by_process.setdefault(op.process, []).append(op)
    lines = []
    for process, pops in by_process.items():
        lines.append(f"    process {process}:")
        lines.extend(f"      {format_op(op, start)}" for op in pops)
    return lines
