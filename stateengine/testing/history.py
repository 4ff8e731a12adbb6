"""Recorded histories of client operations: the input of the linearizability checker.

Histories are written by the client's ``history=`` option through
:class:`~stateengine.client.history.HistoryWriter` (re-exported here), the client's
implementation of its :class:`~stateengine.client.history.OperationObserver` protocol.
A history file is a stream of concatenated msgpack maps, two per operation, so that an
operation whose process died mid-call still shows up (as an invocation without a
completion, i.e. an outcome the checker must treat as unknown):

- ``{"type": "invoke", "process", "op", "time", "command", "args"}``
- ``{"type": "complete", "process", "op", "time", "ok", "result", "error", "seq"}``

``op`` is a per-process counter, ``time`` is ``time.monotonic_ns()`` (CLOCK_MONOTONIC,
comparable across processes of one Linux machine). ``command`` is a wire command name or
``SNAPSHOT`` (several reads in one consistent snapshot: ``args = {"reads": [request, ...]}``,
``result = [{"ok": True, "result": ...} | {"ok": False, "error": type}, ...]``).
A completion whose ``error`` is ``ServerUnavailable`` (a timeout), or not a wire error type
at all (an exception in the client), is an unknown outcome too.
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from stateengine.client.history import HistoryWriter
from stateengine.errors import StateEngineError

__all__ = [
    "UNKNOWN_ERRORS",
    "WIRE_ERRORS",
    "HistoryWriter",
    "Operation",
    "ServerCommitRecorder",
    "iter_entries",
    "pair_entries",
    "read_history",
    "reads_as_of_sync",
    "record_server_commits",
    "unknown_outcome",
]

#: Error types that say nothing about whether the operation took effect. So does any
#: error that is not a wire error type (an exception raised in the client, e.g. by the
#: transport or an interrupt, recorded by its class name).
UNKNOWN_ERRORS: Final = frozenset({"ServerUnavailable"})


def _wire_errors() -> frozenset[str]:
    names: set[str] = set()
    todo: list[type[StateEngineError]] = [StateEngineError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names - UNKNOWN_ERRORS)


#: The error types a server reply can carry (the classes of ``stateengine.errors``).
WIRE_ERRORS: Final = _wire_errors()


def unknown_outcome(ok: bool, error: Any) -> bool:
    """Whether a completion with *ok* and *error* leaves the outcome unknown. Raises
    nothing."""
    return not ok and error not in WIRE_ERRORS


@dataclass(frozen=True)
class Operation:
    """One operation: its invocation and (when known) its completion.

    ``complete`` is None when the outcome is unknown (no completion, or a timeout): the
    operation may have taken effect at any point after ``invoke``, or never.
    """

    process: str
    op: int
    command: str
    args: dict[str, Any]
    invoke: int
    complete: int | None
    ok: bool | None
    result: Any
    error: str | None
    seq: int | None = None

    @property
    def known(self) -> bool:
        """Whether the outcome was observed (a completion that is not a timeout)."""
        return self.complete is not None

    def request(self) -> dict[str, Any]:
        """The wire request (``command`` plus ``args``)."""
        return {"command": self.command, **self.args}


def iter_entries(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The raw entries of one history file; a torn last entry (a killed writer) is dropped.

    :raises OSError: the file cannot be read (``FileNotFoundError``, ...).
    """
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        try:
            yield from unpacker
        except (msgpack.OutOfData, ValueError):
            return


def pair_entries(entries: Iterable[dict[str, Any]]) -> list[Operation]:
    """Pair invocations with completions by ``(process, op)``, in invocation-time order.

    :raises KeyError: an entry without ``process`` or ``op`` (not a history entry).
    :raises ValueError: an entry of an unknown ``type``.
    """
    invokes: dict[tuple[str, int], dict[str, Any]] = {}
    completes: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in entries:
        key = (str(entry["process"]), int(entry["op"]))
        if entry.get("type") == "invoke":
            invokes[key] = entry
        elif entry.get("type") == "complete":
            completes[key] = entry
        else:
            raise ValueError(f"history entry of unknown type {entry.get('type')!r}")
    ops: list[Operation] = []
    for key, inv in invokes.items():
        comp = completes.get(key)
        if comp is not None and unknown_outcome(bool(comp.get("ok")), comp.get("error")):
            comp = None
        ops.append(
            Operation(
                process=key[0],
                op=key[1],
                command=str(inv["command"]),
                args=dict(inv.get("args") or {}),
                invoke=int(inv["time"]),
                complete=None if comp is None else int(comp["time"]),
                ok=None if comp is None else bool(comp["ok"]),
                result=None if comp is None else comp.get("result"),
                error=None if comp is None else comp.get("error"),
                seq=None if comp is None else comp.get("seq"),
            )
        )
    ops.sort(key=lambda o: (o.invoke, o.process, o.op))
    return ops


def read_history(*paths: str | os.PathLike[str]) -> list[Operation]:
    """Read and pair the entries of one or more history files (one per process, or shared).

    :raises OSError: a file cannot be read. :raises KeyError: :raises ValueError: a file
        is not a history.
    """
    entries: list[dict[str, Any]] = []
    for path in paths:
        entries.extend(iter_entries(Path(path)))
    return pair_entries(entries)


def reads_as_of_sync(operations: Iterable[Operation]) -> list[Operation]:
    """*operations* with each read that follows a ``SYNC`` of its process (nothing but
    reads in between) taken as invoked when that ``SYNC`` was.

    That is what a cluster node promises (docs/cluster.md): ``client.sync()`` makes the
    reads after it see every write acknowledged *before the sync*; one acknowledged by
    another node while the sync ran may not be applied here yet, so such a read is
    linearizable from the sync's invocation on, not from its own. An acknowledged write
    of the process ends the window (the reads after it are checked as recorded: the node
    applied everything acknowledged before that write); reads with no ``SYNC`` before
    them are left as they are. For the checker, on a cluster's histories.
    """
    from stateengine import command_table

    ops = list(operations)
    by_process: dict[str, list[int]] = {}
    for i, o in enumerate(ops):
        by_process.setdefault(o.process, []).append(i)
    for indices in by_process.values():
        synced: int | None = None
        for i in sorted(indices, key=lambda i: ops[i].op):
            o = ops[i]
            spec = command_table.COMMANDS.get(o.command)
            if o.command == "SYNC":
                synced = o.invoke if o.ok else None
            elif o.command != "SNAPSHOT" and (spec is None or spec.writes):
                if o.ok:  # acknowledged: applied here after all acknowledged before it
                    synced = None
            elif synced is not None:
                ops[i] = dataclasses.replace(o, invoke=synced)
    return ops


def simulate(
    steps: Sequence[tuple[str, dict[str, Any]]],
    *,
    rng: random.Random,
    gap: int = 1_000_000,
    spread: int = 3_000_000,
    unknown: Collection[int] = (),
    lost: Collection[int] = (),
) -> list[Operation]:
    """A concurrent history whose linearization is *steps*, run on the real engine.

    Each step ``(process, request)`` is applied, in order, to a fresh
    ``stateengine.server.engine.TableEngine`` at its linearization point ``(i + 1) * gap``
    ns (also the engine's lease clock); the invocation and completion are stretched
    randomly up to *spread* ns around it while each process stays sequential, so that
    operations of different processes overlap. Steps in *unknown* get no completion; steps
    in *lost* are not applied at all and get no completion (a request lost on the way).
    A ``SNAPSHOT`` request (``{"command": "SNAPSHOT", "reads": [...]}``) reads at its point.
    Used by the checker's tests and benchmark: such a history must be accepted.
    """
    from stateengine.server.engine import TableEngine

    now = [0.0]
    engine = TableEngine(clock=lambda: now[0])
    points = [(i + 1) * gap for i in range(len(steps))]
    outcomes: list[tuple[bool, Any, str | None, int | None]] = []
    for i, (_, request) in enumerate(steps):
        now[0] = points[i] / 1e9
        if i in lost:
            outcomes.append((False, None, None, None))
            continue
        if request.get("command") == "SNAPSHOT":
            results = []
            for read in request.get("reads", []):
                reply = engine.execute(read)
                if reply["ok"]:
                    results.append({"ok": True, "result": reply["result"]})
                else:
                    results.append({"ok": False, "error": reply["error"]["type"]})
            outcomes.append((True, results, None, engine.seq))
            continue
        reply = engine.execute(request)
        if reply["ok"]:
            outcomes.append((True, reply["result"], None, reply["seq"]))
        else:
            outcomes.append((False, None, reply["error"]["type"], None))
    by_process: dict[str, list[int]] = {}
    for i, (process, _) in enumerate(steps):
        by_process.setdefault(process, []).append(i)
    times: dict[int, tuple[int, int]] = {}
    for indices in by_process.values():
        prev_complete = -(10**15)
        for n, i in enumerate(indices):
            point = points[i]
            invoke = rng.randint(max(prev_complete + 1, point - spread), point)
            limit = points[indices[n + 1]] - 2 if n + 1 < len(indices) else point + spread
            complete = rng.randint(point, max(point, min(point + spread, limit)))
            times[i] = (invoke, complete)
            prev_complete = complete
    ops = []
    counters: dict[str, int] = {}
    for i, (process, request) in enumerate(steps):
        op = counters.get(process, 0)
        counters[process] = op + 1
        ok, result, error, seq = outcomes[i]
        invoke, complete = times[i]
        args = {k: v for k, v in request.items() if k != "command"}
        if i in unknown or i in lost:
            ops.append(
                Operation(process, op, request["command"], args, invoke, None, None, None, None)
            )
        else:
            ops.append(
                Operation(
                    process, op, request["command"], args, invoke, complete, ok, result, error, seq
                )
            )
    return ops


# --- the server's own commits ------------------------------------------------------------------


class ServerCommitRecorder:
    """Records the server's expiry commits (leases and TTLs that ran out) from the change
    feed into a history, as operations of the process ``server``, so that the checker
    explains them and every ``seq`` of the run is accounted for.

    Start it before the run's first lease or TTL is granted, stop it after the run (it
    drains what the feed holds for 0.2 s). One expiry commit is one operation
    ``{"command": "EXPIRY", "commands": [{"state", "id", "how"}, ...]}`` whose result is
    what each part wrote (the record put back, or None for a TTL delete) and whose
    invocation is its deadline (the writer's wall clock, converted to CLOCK_MONOTONIC,
    less :data:`~stateengine.testing.checker.LEASE_SLACK_NS`). :attr:`gaps` counts feed
    messages lost (then the history misses commits and the checker says so).
    """

    def __init__(self, endpoint: str, path: str | os.PathLike[str]) -> None:
        from stateengine.client.watch import Watcher
        from stateengine.runtime.feed import feed_endpoint

        self._watcher = Watcher(feed_endpoint(endpoint), None, hwm=1_000_000)
        self._writer = HistoryWriter(path, "server")
        #: Feed messages lost, expiry commits and records expired, recorded so far.
        self.gaps = 0
        self.commits = 0
        self.expiries = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="server-commits", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from stateengine.testing.checker.model import EXPIRY, LEASE_SLACK_NS

        pending: list[Any] = []  # the messages of one expiry commit (one per table)

        def flush() -> None:
            if not pending:
                return
            now_ns, wall = time.monotonic_ns(), time.time()
            at = pending[0].at
            start = now_ns - int(max(0.0, wall - at) * 1e9) - LEASE_SLACK_NS
            parts, results = [], []
            for change in pending:
                puts = {put.get("id"): put for put in change.puts}
                for rid, how in change.expired:
                    parts.append({"state": change.table, "id": rid, "how": how})
                    results.append(None if how == "ttl" else puts.get(rid))
            op = self._writer.invoke(EXPIRY, {"commands": parts}, time=start)
            self._writer.complete(op, ok=True, result=results, seq=pending[0].seq, time=now_ns)
            self.commits += 1
            self.expiries += len(parts)
            pending.clear()

        while True:
            change = self._watcher.next(timeout=0.02)  # quiet for 20 ms: write what came
            if change is None:
                flush()
                if self._stop:
                    return
                continue
            if change.gap:
                self.gaps += 1
            if pending and change.seq != pending[0].seq:
                flush()
            if change.expired:
                pending.append(change)

    def stop(self) -> None:
        """Drain the feed, write what is left and close. Raises nothing."""
        self._stop = True
        self._thread.join(10)
        self._watcher.close()
        self._writer.close()

    def __enter__(self) -> ServerCommitRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def record_server_commits(endpoint: str, path: str | os.PathLike[str]) -> ServerCommitRecorder:
    """Start recording the server's expiry commits into the history file *path* (see
    :class:`ServerCommitRecorder`; use it as a context manager).

    :raises zmq.ZMQError: the feed endpoint cannot be reached.
    """
    return ServerCommitRecorder(endpoint, path)
