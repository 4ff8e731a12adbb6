"""Recording a client's operations: the observer protocol and the history file writer.

A client given ``history=`` tells an :class:`OperationObserver` about every operation:
``invoke`` before the request is sent, ``complete`` when its outcome is known. The
client defines the protocol and ships one implementation, :class:`HistoryWriter`, which
appends to a history file (the format the stress-test kit reads and checks:
:mod:`stateengine.testing.history`, which re-exports it). ``history=DIR`` makes one per
process (and asyncio task); any other object with these methods can be passed instead.

Why the writer lives here and not in the kit: it is what the client's ``history=``
option writes, it needs only msgpack, and a production client must not import the test
kit (the layer contract of ``tests/unit/test_layers.py``). The kit owns reading,
pairing and checking histories.

The file is a stream of concatenated msgpack maps, two per operation, so that an
operation whose process died mid-call still shows up (as an invocation without a
completion, i.e. an outcome the checker must treat as unknown):

- ``{"type": "invoke", "process", "op", "time", "command", "args"}``
- ``{"type": "complete", "process", "op", "time", "ok", "result", "error", "seq"}``
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import os
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import monotonic_ns as _now
from typing import IO, TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import msgpack

from stateengine import command_table
from stateengine.errors import StateEngineError

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "RECORDED_READS",
    "AsyncHistory",
    "History",
    "HistoryWriter",
    "OperationObserver",
    "recorded",
    "snapshot_read",
]

P = ParamSpec("P")
R = TypeVar("R")


@runtime_checkable
class OperationObserver(Protocol):
    """What a client tells about each of its operations (``history=`` an observer).

    Called in the thread (or asyncio task) that makes the call; an observer is used by
    one process only (after ``fork``, the client needs a directory to open a new one).
    """

    def invoke(self, command: str, args: dict[str, Any], *, time: int | None = None) -> int:
        """An operation starts: *command* with *args* (``time``: its ``monotonic_ns``
        when reported later than it happened). Return an id for :meth:`complete`."""
        ...

    def complete(
        self,
        op: int,
        *,
        ok: bool,
        result: Any = None,
        error: str | None = None,
        seq: int | None = None,
        time: int | None = None,
    ) -> None:
        """Operation *op* ended: its result, or its error type name (a timeout or a client
        exception means an unknown outcome), and the ``seq`` it produced if any."""
        ...

    def close(self) -> None:
        """The client is closed (release what the observer owns)."""
        ...


class HistoryWriter:
    """Appends one process's invocations and completions to a history file.

    Each entry is packed and written with one ``write`` on an ``O_APPEND`` file and
    flushed at once, so a process killed with ``kill -9`` leaves every entry it wrote
    whole, and several writers (one per process) may share one file. After ``fork`` the
    child must open its own writer (the ``op`` counter and the process name are per
    writer).
    """

    def __init__(self, path_or_file: str | os.PathLike[str] | IO[bytes], process: str) -> None:
        self.process = process
        self._next_op = 0
        self._owned = isinstance(path_or_file, (str, os.PathLike))
        if isinstance(path_or_file, (str, os.PathLike)):
            self._file: IO[bytes] = open(path_or_file, "ab", buffering=0)
        else:
            self._file = path_or_file
        self._packer = msgpack.Packer(use_bin_type=True)

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write(self._packer.pack(entry))
        self._file.flush()

    def invoke(self, command: str, args: dict[str, Any], *, time: int | None = None) -> int:
        """Record an invocation (before the request is sent); return its op id.

        :param time: the invocation's ``monotonic_ns`` when it is written later than it
            happened (a ``SNAPSHOT`` is invoked when the snapshot was taken); default now.
        """
        op = self._next_op
        self._next_op += 1
        self._write(
            {
                "type": "invoke",
                "process": self.process,
                "op": op,
                "time": _now() if time is None else time,
                "command": command,
                "args": args,
            }
        )
        return op

    def complete(
        self,
        op: int,
        *,
        ok: bool,
        result: Any = None,
        error: str | None = None,
        seq: int | None = None,
        time: int | None = None,
    ) -> None:
        """Record the completion of *op* (after the reply arrived; *time* default now)."""
        self._write(
            {
                "type": "complete",
                "process": self.process,
                "op": op,
                "time": _now() if time is None else time,
                "ok": ok,
                "result": result,
                "error": error,
                "seq": seq,
            }
        )

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the clients' history hooks ---------------------------------------------------------


class History:
    """The client's history option (see :mod:`stateengine.client.history`).

    *spec* is a directory (each process and client writes its own file in it with a
    :class:`HistoryWriter`, opened on first use and again after ``fork``) or an
    :class:`OperationObserver` (used as is; never after ``fork``). ``depth`` stops a
    recorded call from recording the calls it makes.
    """

    _clients = itertools.count(1)

    def __init__(self, spec: str | os.PathLike[str] | OperationObserver) -> None:
        self.spec = spec
        self.depth = 0
        self._writer: OperationObserver | None = None
        self._pid = os.getpid()

    @property
    def writer(self) -> OperationObserver:
        if self._pid != os.getpid():
            self._writer, self._pid = None, os.getpid()  # the parent's file is the parent's
            if not isinstance(self.spec, str | os.PathLike):
                raise RuntimeError("a history observer cannot follow a fork: pass a directory")
        if self._writer is None:
            if not isinstance(self.spec, str | os.PathLike):
                self._writer = self.spec
            else:
                folder = Path(self.spec)
                folder.mkdir(parents=True, exist_ok=True)
                process = f"{os.getpid()}-{next(History._clients)}"
                self._writer = HistoryWriter(folder / f"{process}.msgpack", process)
        return self._writer

    def invoke(self, request: dict[str, Any], at: int | None = None) -> int:
        args = {k: v for k, v in request.items() if k not in ("command", "req_id")}
        command = str(request.get("command"))
        # A SNAPSHOT is written when its reads are known, invoked when it was taken (at).
        return self.writer.invoke(command, args, time=at)

    def complete(self, op: int, reply: dict[str, Any]) -> None:
        if reply.get("ok"):
            self.writer.complete(op, ok=True, result=reply.get("result"), seq=reply.get("seq"))
        else:
            error = reply.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            self.writer.complete(op, ok=False, error=str(kind), seq=reply.get("seq"))

    def fail(self, op: int, exc: BaseException) -> None:
        """A call that raised: ``ServerUnavailable`` (or anything else) = unknown outcome."""
        self.writer.complete(op, ok=False, error=type(exc).__name__)

    def close(self) -> None:
        if self._writer is not None and self._pid == os.getpid() and self._writer is not self.spec:
            self._writer.close()
        self._writer = None


#: The client's read methods (answered from the arena when it can) and their commands:
#: the command table's arena reads.
RECORDED_READS: dict[str, str] = {spec.method: spec.name for spec in command_table.arena_reads()}


def recorded(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record a client method as one operation named *command* (when the client records
    a history), its arguments as the request; the calls it makes are not recorded.

    The client's own reads use it; so can a subclass whose method stands for one
    command (docs/testing.md: a claim made of a read and a write, recorded as a claim).
    """

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            hook: History | None = args[0]._history  # type: ignore[attr-defined]
            if hook is None or hook.depth:
                return method(*args, **kwargs)
            bound = signature.bind(*args, **kwargs).arguments
            request = {k: v for k, v in bound.items() if k != "self" and v is not None}
            op = hook.invoke({"command": command, **request})
            hook.depth += 1
            try:
                result = method(*args, **kwargs)
            except StateEngineError as exc:
                hook.complete(op, {"ok": False, "error": {"type": type(exc).__name__}})
                raise
            except BaseException as exc:
                hook.fail(op, exc)
                raise
            finally:
                hook.depth -= 1
            hook.complete(op, {"ok": True, "result": result})
            return result

        return wrapper

    return decorate


def snapshot_read(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Log a snapshot read (request, outcome) when the client records a history."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            reads: list[Any] | None = args[0]._reads  # type: ignore[attr-defined]
            if reads is None:
                return method(*args, **kwargs)
            bound = signature.bind(*args, **kwargs).arguments
            request = {k: v for k, v in bound.items() if k != "self" and v is not None}
            request = {"command": command, **request}
            try:
                result = method(*args, **kwargs)
            except StateEngineError as exc:
                reads.append((request, {"ok": False, "error": type(exc).__name__}))
                raise
            reads.append((request, {"ok": True, "result": result}))
            return result

        return wrapper

    return decorate


# Set inside a recorded call, per task: the calls it makes are not recorded again.
_RECORDING: contextvars.ContextVar[bool] = contextvars.ContextVar("recording", default=False)


class AsyncHistory(History):
    """The history option of :class:`AsyncClient`: one file per client, and one recorded
    process per asyncio task (a task's calls are sequential; several tasks' are not)."""

    def __init__(self, spec: str | os.PathLike[str]) -> None:
        super().__init__(spec)
        self._file: IO[bytes] | None = None
        self._name = ""
        self._tasks = itertools.count(1)
        self._writers: weakref.WeakKeyDictionary[asyncio.Task[Any], OperationObserver] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def writer(self) -> OperationObserver:
        import asyncio  # here, not at the top: a blocking client's history never needs it

        task = asyncio.current_task()
        assert task is not None, "an AsyncClient is used inside a task"
        writer = self._writers.get(task)
        if writer is None:
            if self._file is None:
                assert isinstance(self.spec, str | os.PathLike)
                folder = Path(self.spec)
                folder.mkdir(parents=True, exist_ok=True)
                self._name = f"{os.getpid()}-{next(History._clients)}"
                self._file = open(folder / f"{self._name}.msgpack", "ab", buffering=0)
            writer = HistoryWriter(self._file, f"{self._name}-t{next(self._tasks)}")
            self._writers[task] = writer
        return writer

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _recorded_async(
    command: str, method: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """An async read method recorded as one operation (see ``client.recorded``)."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        hook = self._history
        if hook is None or _RECORDING.get():
            return await method(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs).arguments
        request = {k: v for k, v in bound.items() if k != "self" and v is not None}
        op = hook.invoke({"command": command, **request})
        token = _RECORDING.set(True)
        try:
            result = await method(self, *args, **kwargs)
        except StateEngineError as exc:
            hook.complete(op, {"ok": False, "error": {"type": type(exc).__name__}})
            raise
        except BaseException as exc:
            hook.fail(op, exc)
            raise
        finally:
            _RECORDING.reset(token)
        hook.complete(op, {"ok": True, "result": result})
        return result

    return wrapper
