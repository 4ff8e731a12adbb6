"""A hypothesis state machine whose rules run commands from several worker processes.

:class:`WorkerStateMachine` is a ``RuleBasedStateMachine`` with a real server, a pool of
worker processes (each with its own :class:`~stateengine.client.client.Client`, arena
reads included) and a model: :class:`stateengine.Engine`, the same table engine in this
process. Two ways to run a command:

* :meth:`WorkerStateMachine.execute` runs one request on one worker; the reply must be the
  model's.
* :meth:`WorkerStateMachine.execute_concurrently` runs several requests at once, one per
  worker. Their outcome must be explained by *some* order of them applied to the model:
  every permutation is tried (so keep k small: at most the number of workers), the
  orders whose replies and resulting tables all match the server's are kept, and the
  model advances along one of them. No order: the test fails, naming the replies.

With ``tables`` set (``{name: declared schema}``), the base class creates those tables
at the start of every example and its generic rules send requests from
:func:`stateengine.testing.strategies.requests`; an invariant compares every table
with the model after each step. Subclasses add their own rules::

    class Queue(WorkerStateMachine):
        workers = 3
        tables = {"tasks": {"status": "string", "owner": "integer?"}}

        @rule(n=st.integers(1, 3))
        def add(self, n):
            for _ in range(n):
                self.execute({"command": "CREATE_RECORD", "state": "tasks",
                              "record": {"status": "pending", "owner": None}})

        @rule()
        def claim_race(self):
            self.execute_concurrently([
                {"command": "CLAIM_RECORD", "state": "tasks", "where": {"status": "pending"},
                 "fields": {"status": "running", "owner": w}, "lease_seconds": 1000.5}
                for w in range(self.workers)])

    def test_queue(tmp_path):
        Queue.run(tmp_path, settings=settings(max_examples=20, deadline=None))

``run`` starts one server and the workers for the whole test (examples reset the server
by dropping every table; the model starts from the server's ``seq``) and stops them after
it, whatever happens. Every wait is bounded (``timeout``). The model's clock stands
still: use leases far longer than the test (the strategies' default is 1000.5 s), or a
lease may run out on the server and not in the model.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from stateengine.client.client import Client
from stateengine.client.engine import Engine
from stateengine.errors import ServerUnavailable, StateEngineError
from stateengine.protocol import values_equal
from stateengine.testing.history import unknown_outcome
from stateengine.testing.nemesis import Nemesis, Schedule, Step, Targets, Worker
from stateengine.testing.server import ServerProcess
from stateengine.testing.strategies import requests

__all__ = ["WorkerPool", "WorkerStateMachine", "explain", "run_request", "same_reply"]

#: The model's clock (seconds): it never moves, so no lease runs out in the model.
MODEL_NOW = 1_000_000_000.0
#: A worker with no command for this long assumes its parent is gone and exits.
IDLE_EXIT = 600.0
#: The reply of a request whose worker was killed before answering (an unknown outcome:
#: not a wire error type).
WORKER_KILLED: dict[str, Any] = {
    "ok": False,
    "error": {"type": "WorkerKilled", "message": "the worker was killed"},
}

Reply = dict[str, Any]


def run_request(client: Client, request: dict[str, Any]) -> Reply:
    """Run *request* as a worker does: ``GET_RECORD``/``LIST_RECORDS`` through the client's
    read methods (from the arena), everything else as a raw request; never raises."""
    command = request.get("command")
    args = {k: v for k, v in request.items() if k not in ("command", "state")}
    try:
        if command == "GET_RECORD" and set(args) == {"id"}:
            return {"ok": True, "result": client.get_record(request["state"], args["id"])}
        if command == "LIST_RECORDS" and set(args) <= {"where", "order_by", "offset", "limit"}:
            return {"ok": True, "result": client.list_records(request["state"], **args)}
        return client.execute(request)
    except StateEngineError as exc:
        return {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}


def _worker_main(
    conn: Connection,
    endpoint: str,
    data_dir: str,
    history: str | None,
    timeout: float,
) -> None:
    """A worker process: run the lists of requests it is sent, send back the replies."""
    with Client(endpoint, data_dir, timeout=timeout, history=history) as client:
        while conn.poll(IDLE_EXIT):
            message = conn.recv()
            if message is None:
                break
            conn.send([run_request(client, r) for r in message])
    conn.close()


class WorkerPool:
    """Worker processes (spawned once), each with its own client, commanded over pipes.

    :param server: the server the workers connect to (by endpoint and data directory).
    :param size: how many workers.
    :param history: a directory: every worker records its operations there.
    :param timeout: the bound of every wait (a worker's reply, its start and exit).
    :param client_timeout: the workers' client timeout (a call past it is
        ``ServerUnavailable``: an unknown outcome).
    :param respawn: a worker found dead (killed by a nemesis) is replaced by a new one,
        and its requests in flight are answered with :data:`WORKER_KILLED` (unknown
        outcome); without it, a dead worker is an ``EOFError``.
    """

    def __init__(
        self,
        server: ServerProcess,
        size: int,
        history: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        client_timeout: float = 10.0,
        respawn: bool = False,
    ) -> None:
        self.server = server
        self.size = size
        self.history = history
        self.timeout = timeout
        self.client_timeout = client_timeout
        self.respawn = respawn
        #: The workers as a nemesis's targets (their pids follow a respawn).
        self.targets: list[Worker] = []
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []

    def start(self) -> WorkerPool:
        """Spawn the workers (each connects its own client); return the pool.

        :raises OSError: a process or pipe could not be made.
        """
        for i in range(self.size):
            conn, proc = self._spawn()
            self._conns.append(conn)
            self._procs.append(proc)
            assert proc.pid is not None
            self.targets.append(Worker(f"worker {i}", proc.pid))
        return self

    def _spawn(self) -> tuple[Connection, BaseProcess]:
        ctx = mp.get_context("spawn")
        history = os.fspath(self.history) if self.history is not None else None
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_worker_main,
            args=(
                child,
                self.server.endpoint,
                str(self.server.data_dir),
                history,
                self.client_timeout,
            ),
            daemon=True,
        )
        proc.start()
        child.close()
        return parent, proc

    def _replace(self, worker: int) -> None:
        """A new process for a dead *worker* (the old one is reaped)."""
        old = self._procs[worker]
        old.join(self.timeout)
        self._conns[worker].close()
        self._conns[worker], self._procs[worker] = self._spawn()
        target = self.targets[worker]
        target.pid, target.alive = self._procs[worker].pid or 0, True

    def send(self, worker: int, requests: list[dict[str, Any]]) -> None:
        """Hand *requests* to *worker* without waiting (a dead one respawned first, when
        ``respawn``).

        :raises IndexError: no such worker. :raises OSError: the worker's pipe is gone.
        """
        if self.respawn and not self._procs[worker].is_alive():
            self._replace(worker)
        try:
            self._conns[worker].send(requests)
        except OSError:
            if not self.respawn:
                raise  # else: killed meanwhile, and receive() says so

    def receive(self, worker: int) -> list[Reply]:
        """The replies to what *worker* was last sent.

        :raises TimeoutError: none within ``timeout``. :raises EOFError: the worker died
            (unless ``respawn``: then one :data:`WORKER_KILLED` reply).
        """
        conn = self._conns[worker]
        try:
            if not conn.poll(self.timeout):
                raise TimeoutError(f"worker {worker} sent no reply within {self.timeout} s")
            replies: list[Reply] = conn.recv()
        except (EOFError, OSError):
            if not self.respawn:
                raise
            self._procs[worker].kill()  # dying already; reaped by _replace
            self._replace(worker)
            return [dict(WORKER_KILLED)]
        return replies

    def run(self, worker: int, requests: list[dict[str, Any]]) -> list[Reply]:
        """Run *requests* in order on one worker; its replies (fewer than *requests* only
        when the worker was killed: one :data:`WORKER_KILLED`, when ``respawn``).

        :raises TimeoutError: as :meth:`receive`.
        """
        self.send(worker, requests)
        return self.receive(worker)

    def run_concurrently(self, requests: list[dict[str, Any]]) -> list[Reply]:
        """Request ``i`` on worker ``i``, all sent before any reply is awaited.

        :raises ValueError: more requests than workers. :raises TimeoutError: as
            :meth:`receive`.
        """
        if len(requests) > self.size:
            raise ValueError(f"{len(requests)} requests for {self.size} workers")
        for worker, request in enumerate(requests):
            self.send(worker, [request])
        return [self.receive(worker)[0] for worker in range(len(requests))]

    def close(self) -> None:
        """Ask every worker to exit, wait (bounded), kill what is left; never raises."""
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for proc in self._procs:
            proc.join(self.timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(self.timeout)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def same_reply(actual: Reply, expected: Reply) -> bool:
    """Whether a server's reply is the model's: ok, result (``values_equal``) or error type;
    ``version`` and ``seq`` when the actual reply has them (arena reads have none); never
    raises."""
    if bool(actual.get("ok")) != bool(expected.get("ok")):
        return False
    if not actual.get("ok"):
        return bool(_error_type(actual) == _error_type(expected))
    if not values_equal(actual.get("result"), expected.get("result")):
        return False
    return all(actual[key] == expected.get(key) for key in ("version", "seq") if key in actual)


def _error_type(reply: Reply) -> Any:
    error = reply.get("error")
    return error.get("type") if isinstance(error, dict) else error


def tables_of(target: Client | Engine) -> dict[str, Any]:
    """Every table's info and records, as one comparable value (over the socket).

    :raises ServerUnavailable: the server did not answer (a client target).
    """
    names = target.execute({"command": "LIST_STATES"})["result"]
    out: dict[str, Any] = {}
    for name in names:
        info = target.execute({"command": "GET_STATE_INFO", "state": name})["result"]
        rows = target.execute({"command": "LIST_RECORDS", "state": name})["result"]
        out[name] = {"info": info, "records": rows}
    return out


def explain(
    model: Engine,
    requests: list[dict[str, Any]],
    replies: list[Reply],
    tables: dict[str, Any] | None = None,
) -> Engine | None:
    """The model advanced along the first order of *requests* that yields *replies* (and,
    when given, the server's *tables*); None when no order does. *model* is not changed;
    tries up to ``len(requests)!`` orders. Never raises for a reply it cannot explain."""
    for order in itertools.permutations(range(len(requests))):
        candidate = copy.deepcopy(model)
        if all(
            same_reply(replies[i], candidate.execute(copy.deepcopy(requests[i]))) for i in order
        ) and (tables is None or values_equal(tables_of(candidate), tables)):
            return candidate
    return None


class WorkerStateMachine(RuleBasedStateMachine):
    """Rules run by worker processes against a real server; the model is ``Engine``.

    Class attributes to override: ``workers`` (pool size), ``tables`` (``{name: declared
    schema}`` created in every example; empty: no generic rules), ``server_args``
    (``serve`` arguments), ``timeout`` (every wait), ``history`` (set by :meth:`run`),
    ``nemesis`` (a schedule of faults run beside the whole test, see below) and
    ``client_timeout`` (the clients' timeout under a nemesis).

    With a nemesis (:mod:`stateengine.testing.nemesis`) the server is killed and
    restarted, paused, and workers are paused or killed (and respawned) while the rules
    run. A step whose outcome a fault made unknown (``ServerUnavailable``, a killed
    worker) cannot be compared with the model: from there to the end of the example the
    model is *diverged* and the steps are only run, not compared (``stats`` counts both);
    the next example starts from a fresh reset. Record the run (``history=``) and check
    it afterwards: the checker accounts for unknown outcomes where the model cannot.
    """

    workers: ClassVar[int] = 3
    tables: ClassVar[dict[str, dict[str, str]]] = {}
    server_args: ClassVar[tuple[str, ...]] = ("--fsync", "no")
    timeout: ClassVar[float] = 30.0
    nemesis: ClassVar[Schedule | Sequence[Step] | None] = None
    client_timeout: ClassVar[float] = 1.0

    # Set while :meth:`running` runs.
    pool: ClassVar[WorkerPool | None] = None
    client: ClassVar[Client | None] = None
    faults: ClassVar[Nemesis | None] = None
    #: Steps compared with the model, and steps run unverified (a diverged model).
    stats: ClassVar[dict[str, int]] = {}

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        directory: str | os.PathLike[str] | None = None,
        history: str | os.PathLike[str] | None = None,
        nemesis: Schedule | Sequence[Step] | None = None,
    ) -> Iterator[None]:
        """Start the server, the workers and the checking client; stop them after.

        :param directory: where the server's data directory goes (default: a temporary
            directory, removed after).
        :param history: a directory: every client (the workers' and the one that resets
            and inspects the server) records its operations there, so the whole run can
            be checked with :func:`stateengine.testing.checker.check` afterwards; the
            nemesis's faults are recorded there too.
        :param nemesis: a schedule of faults run beside the machine (default: the class's
            ``nemesis``); its offsets count from the start of the first example.
        :raises RuntimeError: the server did not start (``ServerProcess``).
        :raises NemesisError: a fault could not be injected or healed.
        """
        made = directory is None
        base = Path(directory or tempfile.mkdtemp(prefix="stateengine-machine-"))
        schedule = nemesis if nemesis is not None else cls.nemesis
        faulty = schedule is not None
        client_timeout = cls.client_timeout if faulty else cls.timeout
        try:
            with (
                ServerProcess(base / "data", *cls.server_args) as server,
                Client(
                    server.endpoint, server.data_dir, timeout=client_timeout, history=history
                ) as client,
                WorkerPool(
                    server,
                    cls.workers,
                    history,
                    cls.timeout,
                    client_timeout=client_timeout if faulty else 10.0,
                    respawn=faulty,
                ) as pool,
            ):
                cls.pool, cls.client = pool, client
                cls.stats = {"compared": 0, "unverified": 0}
                faults = None
                if schedule is not None:
                    faults = Nemesis(schedule, Targets(server, pool.targets), history=history)
                    cls.faults = faults.start()
                try:
                    yield
                finally:
                    cls.pool, cls.client = None, None
                    if faults is not None:
                        faults.stop()  # healed before the pool and the server stop
        finally:
            if made:
                shutil.rmtree(base, ignore_errors=True)

    @classmethod
    def run(
        cls,
        directory: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        history: str | os.PathLike[str] | None = None,
        nemesis: Schedule | Sequence[Step] | None = None,
    ) -> None:
        """Run the machine as a test (``run_state_machine_as_test``) inside :meth:`running`.

        :raises AssertionError: a reply or the server's tables differ from the model (what
            hypothesis found, shrunk). :raises RuntimeError: as :meth:`running`.
        :raises NemesisError: as :meth:`running`.
        """
        with cls.running(directory, history, nemesis):
            run_state_machine_as_test(cls, settings=settings)

    def __init__(self) -> None:
        super().__init__()
        cls = type(self)
        if cls.pool is None or cls.client is None:
            raise RuntimeError(f"run the machine with {cls.__name__}.run(...)")
        self.pool_: WorkerPool = cls.pool
        self.client_: Client = cls.client
        self.faulty = cls.pool.respawn  # a nemesis runs beside this machine
        self.diverged = False
        # A fresh start on the shared server: drop every table; the model takes its seq.
        for name in self._retrying({"command": "LIST_STATES"})["result"]:
            self._retrying({"command": "DELETE_STATE", "state": name})
        seq = self._retrying({"command": "LIST_STATES"})["seq"]
        self.model = Engine(clock=lambda: MODEL_NOW)
        self.model._engine.seq = seq
        for name, schema in self.tables.items():
            self.execute({"command": "CREATE_STATE", "state": name, "schema": schema})

    def _retrying(self, request: dict[str, Any]) -> Reply:
        """A request of the checking client; under a nemesis retried (bounded by
        ``timeout``) while the server is down or paused.

        :raises ServerUnavailable: no reply (without a nemesis, or past ``timeout``).
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self.client_.execute(request)
            except ServerUnavailable:
                if not self.faulty or time.monotonic() > deadline:
                    raise

    def _tables(self) -> dict[str, Any]:
        """:func:`tables_of` the server, retried as :meth:`_retrying`."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return tables_of(self.client_)
            except ServerUnavailable:
                if not self.faulty or time.monotonic() > deadline:
                    raise

    def _unverifiable(self, replies: list[Reply]) -> bool:
        """Whether these replies cannot be compared with the model (a fault made an
        outcome unknown now or earlier in the example); counts the step."""
        if self.faulty and not self.diverged:
            self.diverged = any(
                len(replies) == 0 or unknown_outcome(bool(r.get("ok")), _error_type(r))
                for r in replies
            )
        self.stats["unverified" if self.diverged else "compared"] += 1
        return self.diverged

    # --- running commands -------------------------------------------------------------------

    def execute(self, request: dict[str, Any], worker: int = 0) -> Reply:
        """Run *request* on *worker*; assert that the reply is the model's; return it.

        :raises AssertionError: the reply differs. :raises TimeoutError: no reply.
        """
        reply = self.pool_.run(worker, [request])[0]
        if self._unverifiable([reply]):
            return reply
        expected = self.model.execute(copy.deepcopy(request))
        assert same_reply(reply, expected), (
            f"worker {worker} ran {request!r}\n  server: {reply!r}\n  model:  {expected!r}"
        )
        return reply

    def execute_concurrently(self, requests: list[dict[str, Any]]) -> list[Reply]:
        """Run request ``i`` on worker ``i``, all at once; assert that some order of them
        explains the replies and the server's tables; advance the model along it.

        :raises AssertionError: no order explains them. :raises TimeoutError: no reply.
        """
        replies = self.pool_.run_concurrently(requests)
        if self._unverifiable(replies):
            return replies
        found = explain(self.model, requests, replies, self._tables())
        assert found is not None, (
            "no order of the concurrent requests explains the replies:\n"
            + "\n".join(
                f"  worker {i}: {q!r}\n    -> {r!r}"
                for i, (q, r) in enumerate(zip(requests, replies, strict=True))
            )
        )
        self.model = found
        return replies

    # --- generic rules (when ``tables`` is set) -----------------------------------------------

    def _requests(self) -> st.SearchStrategy[dict[str, Any]]:
        names = sorted(self.tables)
        return st.sampled_from(names).flatmap(lambda name: requests(name, self.tables[name]))

    @precondition(lambda self: bool(self.tables))
    @rule(data=st.data())
    def run_one(self, data: st.DataObject) -> None:
        """One generated request on one worker."""
        worker = data.draw(st.integers(0, self.workers - 1), label="worker")
        self.execute(data.draw(self._requests(), label="request"), worker)

    @precondition(lambda self: bool(self.tables) and self.workers > 1)
    @rule(data=st.data())
    def run_concurrently(self, data: st.DataObject) -> None:
        """Two or more generated requests at once, one per worker."""
        k = data.draw(st.integers(2, self.workers), label="k")
        self.execute_concurrently(
            [data.draw(self._requests(), label=f"request {i}") for i in range(k)]
        )

    @invariant()
    def server_matches_model(self) -> None:
        """Every table (info and records) on the server is the model's (not checked once
        a fault made the model diverge).

        :raises AssertionError: naming both.
        """
        if self.diverged:
            return
        server, model = self._tables(), tables_of(self.model)
        assert values_equal(server, model), f"server: {server!r}\nmodel:  {model!r}"
