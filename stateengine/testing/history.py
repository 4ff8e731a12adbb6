"""Recorded histories of client operations: the input of the linearizability checker.

A history file is a stream of concatenated msgpack maps, two per operation, so that an
operation whose process died mid-call still shows up (as an invocation without a
completion, i.e. an outcome the checker must treat as unknown):

- ``{"type": "invoke", "process", "op", "time", "command", "args"}``
- ``{"type": "complete", "process", "op", "time", "ok", "result", "error", "seq"}``

``op`` is a per-process counter, ``time`` is ``time.monotonic_ns()`` (CLOCK_MONOTONIC,
comparable across processes of one Linux machine). ``command`` is a wire command name or
``SNAPSHOT`` (several reads in one consistent snapshot: ``args = {"reads": [request, ...]}``,
``result = [{"ok": True, "result": ...} | {"ok": False, "error": type}, ...]``).
A completion whose ``error`` is ``ServerUnavailable`` (a timeout) is an unknown outcome too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from time import monotonic_ns as _now
from typing import IO, Any, Final

import msgpack

#: Error types that say nothing about whether the operation took effect.
UNKNOWN_ERRORS: Final = frozenset({"ServerUnavailable"})


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


def iter_entries(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The raw entries of one history file; a torn last entry (a killed writer) is dropped."""
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        try:
            yield from unpacker
        except (msgpack.OutOfData, ValueError):
            return


def pair_entries(entries: Iterable[dict[str, Any]]) -> list[Operation]:
    """Pair invocations with completions by ``(process, op)``, in invocation-time order."""
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
        if comp is not None and comp.get("error") in UNKNOWN_ERRORS:
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
    """Read and pair the entries of one or more history files (one per process, or shared)."""
    entries: list[dict[str, Any]] = []
    for path in paths:
        entries.extend(iter_entries(Path(path)))
    return pair_entries(entries)
