"""A nemesis for stress tests: faults on a schedule beside a workload, recorded in its history.

Jepsen-style, on one machine. A :class:`Nemesis` runs a :class:`Schedule` of faults in a
background thread while the test's workload runs: ``kill -9`` of the server and its
restart from its log, ``SIGSTOP``/``SIGCONT`` of the server, ``SIGSTOP``/``SIGCONT`` of a
worker process (longer than its lease: another worker may then re-claim its task), and
``kill -9`` of a worker (restarted when the test says how). A schedule is an explicit
list of :class:`Step`, or :meth:`Schedule.random` from a seed (the same seed, the same
faults at the same offsets on the same targets).

Each fault is written to the history directory as one operation of the process
``nemesis-<pid>-<n>``, command :data:`FAULT` (invoked when it starts, completed when it is
healed), so a recorded run keeps what happened to it. The checker does not model ``FAULT`` (it is
no command of the server): it skips it for linearizability and prints it on the
timelines of its report, and :func:`stateengine.testing.invariants.verify` shows the
faults around each violation of the workload's own invariants.

What the faults do to a history, and why it stays checkable:

- a call in flight when the server dies, or paused past the client's timeout, ends in
  ``ServerUnavailable``: an unknown outcome, which the checker tries both ways;
- a worker killed mid-call leaves an invocation without a completion: unknown too;
- a restarted server recovers its log, so ``seq`` continues where the last durable
  write left it (with ``--fsync no`` a ``kill -9`` loses nothing the server wrote: the
  log is written before the reply, only a power cut loses the page cache).

Fault kinds are pluggable: a :class:`FaultKind` says whether it has a target
(:meth:`FaultKind.applicable`), starts (:meth:`FaultKind.inject`) and ends
(:meth:`FaultKind.heal`); :func:`register` adds one to :data:`FAULT_KINDS`. Targets are
given in :class:`Targets` (the server, the workers, and ``extra`` for kinds to come: a
cluster's nodes, its Redis).

Not modelled here: the lease clock. Whether lease expiry is implicit (README lease rule 2)
or a commit of the writer, the nemesis only stops and kills processes; the checker and
the recorder decide what an expiry looks like in the history.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from stateengine.client.history import HistoryWriter
from stateengine.shm import locks

if TYPE_CHECKING:
    from stateengine.testing.history import Operation
    from stateengine.testing.server import ServerProcess

__all__ = [
    "FAULT",
    "FAULT_KINDS",
    "NEMESIS_PROCESS",
    "FaultKind",
    "Hit",
    "KillServer",
    "KillWorker",
    "Nemesis",
    "NemesisError",
    "PauseServer",
    "PauseWorker",
    "Schedule",
    "Step",
    "Targets",
    "Worker",
    "describe_fault",
    "faults_of",
    "is_fault",
    "register",
]

#: The command name of a fault in a history (no server command has it).
FAULT: Final = "FAULT"
#: The start of the process name of a nemesis's operations in a history
#: (``nemesis-<pid>-<n>``: two nemeses never share ``(process, op)`` pairs).
NEMESIS_PROCESS: Final = "nemesis"


class NemesisError(RuntimeError):
    """A fault could not be injected or healed (e.g. the server did not come back)."""


def is_fault(op: Operation) -> bool:
    """Whether *op* is a fault the nemesis recorded (not an operation of the workload)."""
    return op.command == FAULT


def faults_of(operations: Iterable[Operation]) -> list[Operation]:
    """The faults among *operations*, in start order."""
    return sorted((op for op in operations if is_fault(op)), key=lambda o: o.invoke)


# --- targets -----------------------------------------------------------------------------------


@dataclass
class Worker:
    """A worker process the nemesis may pause or kill.

    :param name: how reports name it (``"worker 2"``).
    :param pid: its process id (updated when it is restarted).
    :param restart: starts a replacement after a kill and returns its pid; None: a killed
        worker stays dead (and is no longer a target).
    """

    name: str
    pid: int
    restart: Callable[[], int] | None = None
    alive: bool = True


@dataclass
class Targets:
    """What the faults act on. ``extra`` holds targets of kinds added later (by name)."""

    server: ServerProcess | None = None
    workers: list[Worker] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.alive and _pid_alive(w.pid)]


def _pid_alive(pid: int) -> bool:
    """Whether *pid* runs: an exited child not yet reaped (a zombie) does not (Linux:
    ``/proc``; elsewhere a zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"


# --- fault kinds -------------------------------------------------------------------------------


@dataclass
class Hit:
    """One injected fault: what it hit (recorded as the fault's arguments)."""

    target: str
    pid: int | None
    #: What :meth:`FaultKind.heal` needs (a worker object, ...); not recorded.
    handle: Any = None


class FaultKind:
    """A kind of fault: subclass, set ``name``, implement the three methods, :func:`register`.

    ``inject`` starts the fault on one target, chosen by *pick* (an index modulo the
    available targets: a seed picks the same target again); ``heal`` ends it after the
    step's seconds (or at once when the nemesis stops). Both run in the nemesis thread.
    """

    name: ClassVar[str] = ""

    def applicable(self, targets: Targets) -> bool:
        """Whether there is something to inject this fault into now."""
        raise NotImplementedError

    def inject(self, targets: Targets, pick: int) -> Hit:
        """Start the fault. :raises NemesisError: it could not."""
        raise NotImplementedError

    def heal(self, targets: Targets, hit: Hit) -> dict[str, Any]:
        """End the fault; return what to record as its result.

        :raises NemesisError: it could not (e.g. the server did not restart).
        """
        raise NotImplementedError


def _server(targets: Targets) -> ServerProcess:
    if targets.server is None or targets.server.proc is None:
        raise NemesisError("no server to fault")
    return targets.server


def _wait_unlocked(data_dir: Path, timeout: float) -> None:
    """Wait until no process holds the data directory's lock (the killed server's forked
    snapshot writer may, until it is done), bounded by *timeout*."""
    deadline = time.monotonic() + timeout
    path = data_dir / "lock"
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            if locks.try_lock(fd):  # the server's own lock (shm/locks.py): a probe
                locks.unlock(fd)
                return
        finally:
            os.close(fd)
        if time.monotonic() > deadline:
            raise NemesisError(f"{data_dir} still locked after {timeout} s")
        time.sleep(0.01)


class KillServer(FaultKind):
    """``kill -9`` of the server; healed by restarting it on the same data directory (the
    same endpoint: clients reconnect by themselves) once the old one let go of it."""

    name = "kill-server"
    restart_timeout = 30.0

    def applicable(self, targets: Targets) -> bool:
        return targets.server is not None and targets.server.proc is not None

    def inject(self, targets: Targets, pick: int) -> Hit:
        server = _server(targets)
        pid = server.pid
        server.kill()
        return Hit("server", pid)

    def heal(self, targets: Targets, hit: Hit) -> dict[str, Any]:
        server = _server(targets)
        # The dead server's arena stays until the new one started: the new server marks
        # it superseded (its readers then re-attach instead of reading a version the new
        # server moved past), which it cannot do to a segment already removed. Then it
        # goes, as ServerProcess.cleanup() removes a killed server's segments.
        dead = copy.copy(server)  # keeps the dead process and its server.json info
        _wait_unlocked(server.data_dir, self.restart_timeout)
        try:
            server.start()
        except RuntimeError as exc:
            raise NemesisError(f"the server did not restart: {exc}") from exc
        dead.cleanup()
        return {"restarted_pid": server.pid}


class PauseServer(FaultKind):
    """``SIGSTOP`` of the server, ``SIGCONT`` when healed: it answers nothing meanwhile
    (callers past their timeout see ``ServerUnavailable``) and leases run on (its clock
    is the wall clock)."""

    name = "pause-server"

    def applicable(self, targets: Targets) -> bool:
        return targets.server is not None and targets.server.proc is not None

    def inject(self, targets: Targets, pick: int) -> Hit:
        pid = _server(targets).pid
        os.kill(pid, signal.SIGSTOP)
        return Hit("server", pid)

    def heal(self, targets: Targets, hit: Hit) -> dict[str, Any]:
        assert hit.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(hit.pid, signal.SIGCONT)
        return {}


class PauseWorker(FaultKind):
    """``SIGSTOP`` of a worker, ``SIGCONT`` when healed: a pause longer than its lease lets
    another worker re-claim its task while it still believes it holds it."""

    name = "pause-worker"

    def applicable(self, targets: Targets) -> bool:
        return bool(targets.live_workers())

    def inject(self, targets: Targets, pick: int) -> Hit:
        live = targets.live_workers()
        if not live:
            raise NemesisError("no live worker to pause")
        worker = live[pick % len(live)]
        os.kill(worker.pid, signal.SIGSTOP)
        return Hit(worker.name, worker.pid, worker)

    def heal(self, targets: Targets, hit: Hit) -> dict[str, Any]:
        assert hit.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(hit.pid, signal.SIGCONT)
        return {}


class KillWorker(FaultKind):
    """``kill -9`` of a worker (its claims stay leased until they run out); healed by its
    ``restart``, when it has one."""

    name = "kill-worker"

    def applicable(self, targets: Targets) -> bool:
        return bool(targets.live_workers())

    def inject(self, targets: Targets, pick: int) -> Hit:
        live = targets.live_workers()
        if not live:
            raise NemesisError("no live worker to kill")
        worker = live[pick % len(live)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        worker.alive = False
        return Hit(worker.name, worker.pid, worker)

    def heal(self, targets: Targets, hit: Hit) -> dict[str, Any]:
        worker: Worker = hit.handle
        if worker.restart is None:
            return {"restarted_pid": None}
        worker.pid = worker.restart()
        worker.alive = True
        return {"restarted_pid": worker.pid}


#: Fault kinds by name; :meth:`Schedule.random` draws from these.
FAULT_KINDS: dict[str, FaultKind] = {}


def register(kind: FaultKind) -> FaultKind:
    """Add *kind* to :data:`FAULT_KINDS` (by its ``name``) and return it.

    :raises ValueError: no name, or the name is taken by another kind.
    """
    if not kind.name:
        raise ValueError("a fault kind needs a name")
    old = FAULT_KINDS.get(kind.name)
    if old is not None and type(old) is not type(kind):
        raise ValueError(f"fault kind {kind.name!r} is registered already")
    FAULT_KINDS[kind.name] = kind
    return kind


for _kind in (KillServer(), PauseServer(), PauseWorker(), KillWorker()):
    register(_kind)


# --- schedules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One fault of a schedule: *kind* at *at* seconds after the nemesis started (or once
    the previous fault is healed, if later), lasting *seconds*, on target *pick*."""

    at: float
    kind: str
    seconds: float
    pick: int = 0


@dataclass(frozen=True)
class Schedule:
    """Faults in order: an explicit list (``Schedule([Step(...), ...])``) or
    :meth:`random` from a seed. Faults run one at a time."""

    steps: Sequence[Step]
    seed: int | str | None = None

    @classmethod
    def random(
        cls,
        seed: int | str,
        kinds: Sequence[str] = ("kill-server", "pause-server", "pause-worker", "kill-worker"),
        *,
        faults: int = 10,
        start: float = 0.2,
        gap: tuple[float, float] = (0.1, 0.5),
        seconds: tuple[float, float] = (0.3, 1.0),
        durations: dict[str, tuple[float, float]] | None = None,
    ) -> Schedule:
        """*faults* faults drawn from *kinds* with ``random.Random(seed)``: the same seed
        gives the same schedule. Between two faults a pause drawn from *gap*; each
        lasts a time drawn from *seconds* (or ``durations[kind]``).

        :raises ValueError: an unknown kind (not in :data:`FAULT_KINDS`).
        """
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}")
        rng = random.Random(seed)
        steps = []
        at = start
        for _ in range(faults):
            kind = rng.choice(list(kinds))
            lo, hi = (durations or {}).get(kind, seconds)
            length = round(rng.uniform(lo, hi), 3)
            steps.append(Step(round(at, 3), kind, length, rng.randrange(1 << 30)))
            at += length + rng.uniform(*gap)
        return cls(tuple(steps), seed)

    def describe(self) -> str:
        """One line per step, for a test's output."""
        head = f"schedule (seed {self.seed!r}):" if self.seed is not None else "schedule:"
        return "\n".join(
            [head, *(f"  {s.at:7.3f} s  {s.kind} for {s.seconds:.3f} s" for s in self.steps)]
        )


# --- the nemesis -------------------------------------------------------------------------------


@dataclass
class Applied:
    """A fault as it happened (``skipped``: no target when its turn came)."""

    step: Step
    target: str | None = None
    pid: int | None = None
    started: float = 0.0
    healed: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


class Nemesis:
    """Runs a :class:`Schedule` against :class:`Targets` in a thread, recording each fault.

    Use as a context manager (or :meth:`start` / :meth:`stop`): leaving it heals the fault
    in progress (a paused process is continued, a killed server restarted) and stops. Every
    wait is bounded.

    :param history: a directory: each fault is written there (process ``nemesis-...``,
        command :data:`FAULT`), beside the clients' history files.
    :param kinds: fault kinds by name (default :data:`FAULT_KINDS`).
    :param on_fault: called in the nemesis thread after each fault is healed (tests use it
        to count, or to check the system between faults).
    """

    _files = itertools.count(1)

    def __init__(
        self,
        schedule: Schedule | Sequence[Step],
        targets: Targets,
        *,
        history: str | os.PathLike[str] | None = None,
        kinds: dict[str, FaultKind] | None = None,
        on_fault: Callable[[Applied], None] | None = None,
    ) -> None:
        self.schedule = schedule if isinstance(schedule, Schedule) else Schedule(list(schedule))
        self.targets = targets
        self.kinds = kinds if kinds is not None else FAULT_KINDS
        missing = {s.kind for s in self.schedule.steps} - set(self.kinds)
        if missing:
            raise ValueError(f"unknown fault kinds in the schedule: {sorted(missing)}")
        self.history = Path(history) if history is not None else None
        self.on_fault = on_fault
        self.applied: list[Applied] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: HistoryWriter | None = None
        if self.history is not None:
            self.history.mkdir(parents=True, exist_ok=True)
            process = f"{NEMESIS_PROCESS}-{os.getpid()}-{next(Nemesis._files)}"
            self._writer = HistoryWriter(self.history / f"{process}.msgpack", process)

    # --- running -------------------------------------------------------------------------

    def start(self) -> Nemesis:
        """Start the schedule now (its ``at`` offsets count from here)."""
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Wait until the whole schedule ran (True) or *timeout* seconds passed (False)."""
        return self._done.wait(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Heal the fault in progress, end the schedule, wait for the thread (bounded);
        close the history file.

        :raises NemesisError: a fault could not be injected or healed, or the thread did
            not end within *timeout*.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise NemesisError(f"the nemesis did not stop within {timeout} s")
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.error is not None:
            error, self.error = self.error, None
            raise NemesisError(f"nemesis failed: {error}") from error

    def __enter__(self) -> Nemesis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counts(self) -> dict[str, int]:
        """Faults injected so far, by kind (skipped ones not counted)."""
        out: dict[str, int] = {}
        for a in self.applied:
            if not a.skipped:
                out[a.step.kind] = out.get(a.step.kind, 0) + 1
        return out

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            for step in self.schedule.steps:
                if self._stop.wait(max(0.0, t0 + step.at - time.monotonic())):
                    return
                self.apply(step)
        except BaseException as exc:  # reported by stop(): the test must see it
            self.error = exc
        finally:
            self._done.set()

    def apply(self, step: Step) -> Applied:
        """Inject one fault, keep it for ``step.seconds`` (less if stopped), heal it.

        :raises NemesisError: as the kind's ``inject`` or ``heal``.
        """
        with self.fault(step.kind, step.pick, step.seconds) as applied:
            if not applied.skipped:
                self._stop.wait(step.seconds)
        if self.on_fault is not None and not applied.skipped:
            self.on_fault(applied)
        return applied

    @contextlib.contextmanager
    def fault(self, kind: str, pick: int = 0, seconds: float = 0.0) -> Iterator[Applied]:
        """One fault of *kind* for the duration of the block, recorded like a scheduled
        one: for a test that acts while it lasts (``with nemesis.fault("kill-server"):``
        wait until the writers gave up, then leave the block to restart the server).
        ``skipped`` in what it yields: no target (nothing was done).

        :raises NemesisError: as the kind's ``inject`` or ``heal``.
        :raises KeyError: an unknown kind.
        """
        faults = self.kinds[kind]
        applied = Applied(Step(0.0, kind, seconds, pick))
        self.applied.append(applied)
        if not faults.applicable(self.targets):
            applied.skipped = True
            yield applied
            return
        writer = self._writer
        op = None
        if writer is not None:
            # Invoked before the fault starts, completed after it is healed: the entry's
            # interval covers the whole fault.
            op = writer.invoke(FAULT, {"kind": kind, "seconds": seconds})
        applied.started = time.monotonic()
        try:
            hit = faults.inject(self.targets, pick)
            applied.target, applied.pid = hit.target, hit.pid
            try:
                yield applied
            finally:
                applied.result = faults.heal(self.targets, hit)
                applied.healed = time.monotonic()
        except BaseException as exc:
            if writer is not None and op is not None:
                writer.complete(op, ok=False, error=f"NemesisError: {exc}")
            raise
        if writer is not None and op is not None:
            result = {"target": hit.target, "pid": hit.pid, **applied.result}
            writer.complete(op, ok=True, result=result)


def describe_fault(op: Operation) -> str:
    """``pause-worker of worker 1 (pid 123) for 0.800 s`` from a recorded fault."""
    kind = op.args.get("kind", "?")
    result = op.result if isinstance(op.result, dict) else {}
    target = result.get("target", "?")
    pid = result.get("pid")
    who = f"{target} (pid {pid})" if pid is not None else str(target)
    seconds = float(op.args.get("seconds", 0))
    if op.complete is not None:
        seconds = (op.complete - op.invoke) / 1e9  # as it lasted, restart included
    text = f"{kind} of {who} for {seconds:.3f} s"
    restarted = result.get("restarted_pid")
    if restarted:
        text += f", restarted as pid {restarted}"
    if op.complete is None:
        text += " (not healed: " + (op.error or "the nemesis stopped") + ")"
    return text
