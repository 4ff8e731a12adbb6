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

import os
from time import monotonic_ns as _now
from typing import IO, Any, Protocol, runtime_checkable

import msgpack

__all__ = ["HistoryWriter", "OperationObserver"]


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
