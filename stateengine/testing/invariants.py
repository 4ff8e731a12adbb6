"""The workload's own guarantees, checked over the same history as linearizability.

Linearizability says the server did what its commands promise. It cannot say whether
the *worker code* kept its promise: "each task's side effect happens once" holds or not
whatever the server does right. An invariant is a function of the recorded operations
that yields a :class:`Violation` for each breach, naming the operations that show it;
:func:`verify` runs the checker and the invariants over one history, and its report puts
each violation on a timeline with the nemesis's faults around it (so a double effect
comes with the pause that let it happen).

    def effect_once(ops):
        ...
        yield Violation("each task's effect once", f"task {t}: 2 effects", [op1, op2])

    result = verify(read_history(*folder.glob("*.msgpack")), [effect_once])
    assert result.ok, result.report()

:func:`at_most_once` builds the common one: successful operations that share a key.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from stateengine.testing.checker import CheckResult, check
from stateengine.testing.checker.report import format_timeline
from stateengine.testing.history import Operation
from stateengine.testing.nemesis import describe_fault, faults_of

__all__ = ["Invariant", "Verdict", "Violation", "at_most_once", "verify"]

#: Violations shown per invariant in a report.
REPORTED_VIOLATIONS = 5


@dataclass
class Violation:
    """One breach of an invariant: what went wrong and the operations that show it."""

    invariant: str
    message: str
    operations: list[Operation] = field(default_factory=list)


#: An invariant: the history in, its violations out (none: it holds).
Invariant = Callable[[Sequence[Operation]], Iterable[Violation]]


def at_most_once(
    name: str,
    key: Callable[[Operation], Hashable | None],
    *,
    related: Callable[[Operation], Hashable | None] | None = None,
    what: str = "",
) -> Invariant:
    """An invariant: no two *successful* operations share a ``key(op)`` (None: not one of
    them). Operations of unknown outcome are not counted (they may not have happened);
    ``related(op)`` names operations shown beside a violation with the same key (the
    claims and completions of a task whose effect happened twice); *what* names a key in
    the report (``"task"``: "task 19: 2 times")."""

    def invariant(operations: Sequence[Operation]) -> Iterator[Violation]:
        done: dict[Hashable, list[Operation]] = {}
        for op in operations:
            if op.ok:
                k = key(op)
                if k is not None:
                    done.setdefault(k, []).append(op)
        for k, ops in done.items():
            if len(ops) < 2:
                continue
            shown = list(ops)
            if related is not None:
                mine = {id(o) for o in ops}
                shown += [o for o in operations if id(o) not in mine and related(o) == k]
            whos = ", ".join(f"{o.process}#{o.op}" for o in ops)
            label = f"{what} {k!r}" if what else repr(k)
            yield Violation(name, f"{label}: {len(ops)} times ({whos})", shown)

    invariant.__name__ = name
    return invariant


@dataclass
class Verdict:
    """Linearizability and the workload's invariants over one history; ``report()``."""

    linearizability: CheckResult
    #: Each invariant's name and its violations (empty: it held).
    invariants: list[tuple[str, list[Violation]]]
    start_time: int
    faults: list[Operation]

    @property
    def violations(self) -> list[Violation]:
        return [v for _, found in self.invariants for v in found]

    @property
    def ok(self) -> bool:
        return self.linearizability.ok and not self.violations

    def report(self) -> str:
        """The checker's report, then each invariant: held, or its violations on the
        timeline (with the faults that overlap them, and which process each hit)."""
        lines = [self.linearizability.report(), ""]
        for name, found in self.invariants:
            if not found:
                lines.append(f"invariant {name!r}: held")
                continue
            lines.append(f"invariant {name!r}: VIOLATED ({len(found)} violations)")
            for v in found[:REPORTED_VIOLATIONS]:
                lines.append(f"  {v.message}")
                lines.extend(format_timeline(v.operations, self.start_time, self.faults))
                hits = self.faults_during(v)
                if hits:
                    lines.append(
                        "    faults on these processes meanwhile: "
                        + "; ".join(describe_fault(f) for f in hits)
                    )
            if len(found) > REPORTED_VIOLATIONS:
                lines.append(f"  ... and {len(found) - REPORTED_VIOLATIONS} more")
        return "\n".join(lines)

    def faults_during(self, v: Violation) -> list[Operation]:
        """The faults during the violation's span that hit one of its processes (or the
        server, which every process talks to)."""
        if not v.operations:
            return []
        lo = min(o.invoke for o in v.operations)
        hi = max(o.complete if o.complete is not None else o.invoke for o in v.operations)
        pids = {o.process.split("-", 1)[0] for o in v.operations}
        out = []
        for f in self.faults:
            end = f.complete if f.complete is not None else hi
            result: dict[str, Any] = f.result if isinstance(f.result, dict) else {}
            if (
                f.invoke <= hi
                and end >= lo
                and (str(result.get("pid")) in pids or result.get("target") == "server")
            ):
                out.append(f)
        return out


def verify(
    operations: Iterable[Operation],
    invariants: Sequence[Invariant] = (),
    **check_options: Any,
) -> Verdict:
    """Check *operations* for linearizability (:func:`~stateengine.testing.checker.check`,
    with *check_options*) and run each invariant over them.

    :raises UnmodelledCommand: as :func:`~stateengine.testing.checker.check`.
    """
    ops = sorted(operations, key=lambda o: (o.invoke, o.process, o.op))
    result = check(ops, **check_options)
    found = [(getattr(inv, "__name__", repr(inv)), list(inv(ops))) for inv in invariants]
    return Verdict(result, found, ops[0].invoke if ops else 0, faults_of(ops))
