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
from stateengine.testing.nemesis import describe_fault, is_fault

#: Faults listed in a report's fault section, and operations shown around each.
REPORTED_FAULTS = 20
AROUND_FAULT = 3

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
    #: The nemesis's faults in the history (not checked; shown on the timelines).
    faults: list[Operation] = field(default_factory=list)

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
        if self.faults:
            lines.extend(format_faults(self.faults, self.operations_around, self.start_time))
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

    #: Every operation of the history (set by :func:`check` when it holds faults): what
    #: the fault section shows around each fault.
    operations_around: list[Operation] = field(default_factory=list)

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
        lines.extend(format_timeline(f.sub_history, self.start_time, self.faults, preceding=True))
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
    if is_fault(op):
        return f"{_span(op, start)} {op.command} {describe_fault(op)}"
    args = " ".join(f"{k}={_short(v, 80)}" for k, v in op.args.items())
    begin = (op.invoke - start) / 1e6
    if op.complete is None:
        span, out = f"[{begin:10.3f} ..          ?]", "-> ? (unknown outcome)"
    else:
        end = (op.complete - start) / 1e6
        span = f"[{begin:10.3f} .. {end:10.3f}]"
        out = f"-> ok {_short(op.result)}" if op.ok else f"-> error {op.error}"
    return f"{span} #{op.op} {op.command} {args} {out}"


def _span(op: Operation, start: int) -> str:
    begin = (op.invoke - start) / 1e6
    if op.complete is None:
        return f"[{begin:10.3f} ..          ?]"
    return f"[{begin:10.3f} .. {(op.complete - start) / 1e6:10.3f}]"


def _overlaps(op: Operation, lo: int, hi: int) -> bool:
    end = op.complete if op.complete is not None else hi
    return op.invoke <= hi and end >= lo


def _hit_pid(fault: Operation) -> int | None:
    result = fault.result if isinstance(fault.result, dict) else {}
    pid = result.get("pid")
    return pid if type(pid) is int and result.get("target") != "server" else None


def _process_pid(process: str) -> int | None:
    head = process.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def format_timeline(
    ops: Iterable[Operation],
    start: int,
    faults: Sequence[Operation] = (),
    *,
    preceding: bool = False,
) -> list[str]:
    """One block per process, its operations in invocation order; then the *faults* that
    overlap the operations' time span as the block of the nemesis (a process a fault hit
    says so in its heading). *preceding*: also the last fault healed before the span
    (what the system was recovering from: a failing read just after a restart)."""
    ops = sorted((o for o in ops if not is_fault(o)), key=lambda o: o.invoke)
    by_process: dict[str, list[Operation]] = {}
    for op in ops:
        by_process.setdefault(op.process, []).append(op)
    during: list[Operation] = []
    before: list[Operation] = []
    if ops and faults:
        lo = ops[0].invoke
        hi = max(o.complete if o.complete is not None else o.invoke for o in ops)
        during = [f for f in faults if _overlaps(f, lo, hi)]
        healed = [f for f in faults if f.complete is not None and f.complete < lo]
        if preceding and healed:
            before = [max(healed, key=lambda f: f.complete or 0)]
    lines = []
    for process, pops in by_process.items():
        pid = _process_pid(process)
        hits = [f for f in during if pid is not None and _hit_pid(f) == pid]
        note = "".join(f" (hit by {f.args.get('kind')} {_span(f, start).strip()})" for f in hits)
        lines.append(f"    process {process}{note}:")
        lines.extend(f"      {format_op(op, start)}" for op in pops)
    if before or during:
        lines.append("    nemesis:")
        lines.extend(f"      {format_op(f, start)}" for f in before + during)
    return lines


def format_faults(faults: Sequence[Operation], ops: Sequence[Operation], start: int) -> list[str]:
    """The report's fault section: each fault on the timeline, with the operations in
    flight while it lasted (unknown outcomes first, up to :data:`AROUND_FAULT`)."""
    lines = ["", f"faults: {len(faults)} (not checked; times in ms from the history's start)"]
    work = [o for o in ops if not is_fault(o)]
    for fault in faults[:REPORTED_FAULTS]:
        lines.append(f"  {format_op(fault, start)}")
        hi = (
            fault.complete
            if fault.complete is not None
            else max((o.invoke for o in work), default=fault.invoke)
        )
        during = [o for o in work if _overlaps(o, fault.invoke, hi)]
        if not during:
            lines.append("    no operation in flight")
            continue
        unknown = sum(1 for o in during if not o.known)
        lines.append(f"    {len(during)} operations in flight, {unknown} of unknown outcome:")
        during.sort(key=lambda o: (o.known, o.invoke))
        lines.extend(f"      {o.process} {format_op(o, start)}" for o in during[:AROUND_FAULT])
        if len(during) > AROUND_FAULT:
            lines.append(f"      ... {len(during) - AROUND_FAULT} more")
    if len(faults) > REPORTED_FAULTS:
        lines.append(f"  ... and {len(faults) - REPORTED_FAULTS} more faults")
    return lines
