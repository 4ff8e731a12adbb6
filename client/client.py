"""The worker client: writes over a ZeroMQ DEALER socket, reads from the arena.

``stateengine.connect()`` returns a :class:`Client`. Its methods are the commands of the
README in lower case (from :class:`CommandsMixin`). Each call is a blocking round trip
with a timeout; :meth:`Client.pipeline` sends many requests and waits once.

Sharp edges, written down here as py-lmdb does:

* **Timeouts.** A request that gets no reply within ``timeout`` seconds raises
  :class:`~stateengine.errors.ServerUnavailable`. The socket is then dropped and a new
  one made on the next call, so a request still queued is never delivered to a server
  started later. Such a write *may* have been applied: check before retrying a
  non-idempotent write (``if_version`` makes retries safe).
* **fork.** A forked child must not use its parent's ZeroMQ context; the client notices
  the fork (a fork hook, no getpid per call) and opens its own socket. Pickling sends
  only the endpoint and options, so a client can be passed to ``multiprocessing`` spawn
  workers.
* **A server known to be gone** (its socket removed by a clean stop, its ``server.json``
  gone, the pid it names dead) fails a call at once, or within 0.1 s of waiting, with
  ``ServerUnavailable`` saying why, instead of after ``timeout``
  (:mod:`stateengine.client.liveness`). A server that is merely slow still gets
  ``timeout``.
* **Read-your-writes.** The client remembers the highest ``seq`` its writes produced, and
  an arena read waits (bounded by ``timeout``) until the arena has published it.
* **History.** ``Client(..., history=DIR)`` records every operation (invocation and
  completion time, arguments, result) for :mod:`stateengine.testing`'s checker: one file
  per process and client, ``DIR/<pid>-<n>.msgpack``; a forked or unpickled client opens
  its own. Off (the default), it costs one attribute test per call.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from stateengine import defaults
from stateengine.client.commands import CommandsMixin, Id, Record
from stateengine.client.history import (
    RECORDED_READS,
    History,
    HistoryWriter,
    OperationObserver,
    recorded,
    snapshot_read,
)

# Re-exported (in __all__): these lived here before the split into client/view.py and
# client/history.py, and users, the kit and the tests import them from here.
from stateengine.client.liveness import SLICE, Liveness
from stateengine.client.view import (
    ARENA_SCAN_LIMIT,
    ArenaView,
    ClientSnapshot,
    RemoteSnapshot,
    arena_get,
    arena_info,
    arena_list,
    arena_states,
    catch_up,
    reader_for,
    remote_snapshot,
)
from stateengine.client.watch import Watcher
from stateengine.errors import (
    ConnectionRefused,
    PayloadTooLarge,
    ServerUnavailable,
    SnapshotExpired,
    StateEngineError,
)
from stateengine.limits import MAX_REQUEST_BYTES
from stateengine.protocol import decode_reply, pack_request, reply_outcome, with_req_id
from stateengine.runtime import discovery as paths
from stateengine.runtime.curve import ConnectionProbe
from stateengine.runtime.feed import FEED_HWM, feed_endpoint
from stateengine.shm import ArenaReader, Snapshot, blocks
from stateengine.shm.blocks import STALE as _STALE
from stateengine.shm.blocks import ClientBase

__all__ = [
    "ARENA_SCAN_LIMIT",
    "RECORDED_READS",
    "ArenaView",
    "Client",
    "ClientSnapshot",
    "History",
    "HistoryWriter",
    "OperationObserver",
    "Pipeline",
    "arena_get",
    "arena_info",
    "arena_list",
    "arena_states",
    "connect",
    "reader_for",
    "recorded",
    "request_limit",
    "snapshot_read",
]

_wall_time = time.time

#: How many forks this process is from the one that imported this module: bumped in a
#: forked child (``os.register_at_fork``, which exists wherever ``os.fork`` does), so a
#: client tells it was forked by comparing it, not by a ``getpid`` (a system call,
#: 0.11 µs, timeit) per request; as :class:`~stateengine.client.view.ArenaView` does.
_FORKS = [0]


def _after_fork_in_child() -> None:
    _FORKS[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client(CommandsMixin, ClientBase):
    """A connection to one server. Not thread-safe: one client per thread.

    :param endpoint: the server's endpoint; default: read from the data directory.
    :param data_dir: the server's data directory (default: ``$STATEENGINE_DATA_DIR`` or
        ``./.stateengine``); used to find the endpoint and to tell whether the server
        process is alive.
    :param timeout: seconds to wait for each reply before ``ServerUnavailable``.
    :param history: record every operation for the checker: a directory (one file per
        process and client in it) or an :class:`~stateengine.client.history.OperationObserver`
        (e.g. a ``HistoryWriter``), told about every operation.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = defaults.CLIENT_TIMEOUT,
        arena: bool = True,
        curve: dict[str, bytes] | None = None,
        history: str | os.PathLike[str] | OperationObserver | None = None,
    ) -> None:
        """See the class.

        :raises ServerUnavailable: no *endpoint* given and no server runs on the data
            directory (no readable ``server.json``).
        """
        self.data_dir = Path(data_dir).absolute() if data_dir else None
        self._history = History(history) if history is not None else None
        if self._history is not None:
            # Reads the client may answer from the arena record themselves; wrapped per
            # instance so that a client without a history pays nothing for it.
            for name, command in RECORDED_READS.items():
                wrapped = recorded(command)(getattr(type(self), name))
                setattr(self, name, functools.partial(wrapped, self))
        self.timeout = timeout
        self.use_arena = arena
        self.curve = curve
        self._server_info: dict[str, Any] = {}
        if endpoint is None:
            self._server_info = paths.read_server_file(paths.resolve_data_dir(self.data_dir))
            endpoint = str(self._server_info["endpoint"])
        self.endpoint = endpoint
        #: The server's request limit, from ``server.json`` (the default limit when there
        #: is none for this endpoint): a larger request is refused here,
        #: ``PayloadTooLarge``, before anything is sent.
        self.max_request_bytes = request_limit(self._server_info, endpoint, self.data_dir)
        self.seen_seq = 0
        self._ids = itertools.count(1)
        self._forks = _FORKS[0]  # != _FORKS[0]: this is a forked child's copy
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._probe: ConnectionProbe | None = None
        self._closed = False
        self._view = ArenaView(self.data_dir) if self.data_dir is not None else None
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._live = Liveness(endpoint, self.data_dir)
        self._live.saw(self._server_info)

    # --- transport ----------------------------------------------------------------------

    def _socket(self) -> zmq.Socket[bytes]:
        if self._closed:
            raise ServerUnavailable("this client is closed")
        if self._forks != _FORKS[0]:
            # Forked: the parent's context belongs to the parent; abandon it untouched.
            self._ctx, self._sock = None, None
            self._forks, self._probe = _FORKS[0], None
        if self._sock is None:
            if self._ctx is None:
                self._ctx = zmq.Context()
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            # Waits are cut in slices: between two, the client asks whether the server
            # is known to be gone (client/liveness.py).
            sock.setsockopt(zmq.RCVTIMEO, max(1, int(min(self.timeout, SLICE) * 1000)))
            for option, key in (self.curve or {}).items():
                setattr(sock, option, key)  # curve_serverkey/_publickey/_secretkey
            if self.endpoint.startswith("tcp://"):
                self._probe = ConnectionProbe(sock)  # a refusal is told, not timed out
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset_socket(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _await_remote(self, sock: zmq.Socket[bytes], extra: float) -> None:
        """A TCP socket's wait for a reply: in 50 ms slices, raising as soon as the
        server refuses the handshake (retrying the same keys cannot help).

        :raises ConnectionRefused: the handshake failed (the reason is named).
        :raises ServerUnavailable: nothing within ``timeout`` (+ *extra*); why, if known.
        """
        probe = self._probe
        assert probe is not None
        deadline = time.monotonic() + self.timeout + extra
        while not sock.poll(50):
            reason = probe.refusal()
            if reason is not None:
                self._reset_socket()
                raise ConnectionRefused(f"{self.endpoint}: {reason}")
            if time.monotonic() >= deadline:
                hint = probe.hint(self.endpoint)
                self._reset_socket()
                raise ServerUnavailable(
                    f"no reply from {self.endpoint} within {self.timeout} s{hint}"
                )

    def _send(self, request: dict[str, Any]) -> int:
        """Encode (``req_id`` first) and send one request; return its ``req_id``.

        :raises PayloadTooLarge: over :attr:`max_request_bytes`; nothing was sent.
        """
        req_id = next(self._ids)
        body = pack_request(self._pack, with_req_id(request, req_id), self.max_request_bytes)
        self._socket().send(body)
        return req_id

    def _preflight(self) -> None:
        """Refuse at once to send to a server known to be gone (one ``access``).

        :raises ServerUnavailable: saying why; nothing was sent.
        """
        reason = self._live.fast()
        if reason is not None:
            raise ServerUnavailable(f"{self.endpoint}: {reason}")

    def _round_trip(self, request: dict[str, Any]) -> dict[str, Any]:
        """:meth:`_preflight`, :meth:`_send` and :meth:`_receive` of one request, in line:
        the path of every call. Written out, the three calls, the set of wanted ids and
        the replies' dict cost ~0.9 of the client's ~6.8 µs of Python per patch_record
        (python -m bench.clientcpu, fake_patch), and the socket is looked up once, not
        twice.

        :raises ServerUnavailable: :raises PayloadTooLarge: :raises BadRequest: as those.
        """
        reason = self._live.fast()
        if reason is not None:
            raise ServerUnavailable(f"{self.endpoint}: {reason}")
        req_id = next(self._ids)
        body = pack_request(self._pack, with_req_id(request, req_id), self.max_request_bytes)
        sock = self._socket()
        sock.send(body)
        # _wait_of(request), called only for a request that has a wait (a claim's)
        extra = 0.0 if "wait" not in request else _wait_of(request)
        deadline = time.monotonic() + extra + self.timeout
        while True:
            if self._probe is not None:
                self._await_remote(sock, extra)
            try:
                body = sock.recv()  # RCVTIMEO: one slice
            except zmq.Again:
                self._slice_over(deadline)
                continue
            reply = decode_reply(body)
            # == where _receive tests `in wanted`: the same for every hashable req_id
            if reply.get("req_id") == req_id:
                return reply
            # Anything else answers a request that already timed out: drop it.

    def _slice_over(self, deadline: float) -> None:
        """A slice of waiting passed without the reply: go on waiting (return), or raise
        when the server is known to be gone or *deadline* has passed.

        :raises ServerUnavailable: saying why; the socket is dropped first.
        """
        reason = self._live.gone()
        if reason is None and time.monotonic() < deadline:
            return
        self._reset_socket()  # a queued request must never reach a later server
        if reason is not None:
            raise ServerUnavailable(f"{self.endpoint}: {reason}") from None
        raise ServerUnavailable(
            f"no reply from {self.endpoint} within {self.timeout} s"
            + ("" if self.server_alive() else " (the server process is gone)")
        ) from None

    def _receive(self, wanted: set[int], extra: float = 0.0) -> dict[int, dict[str, Any]]:
        """Collect the replies to *wanted*, dropping stale ones; bounded by ``timeout``
        (plus *extra* seconds: a blocking claim's ``wait``), and cut short when the
        server is known to be gone (checked every :data:`SLICE` s of waiting)."""
        sock = self._socket()
        replies: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + extra + self.timeout
        while wanted:
            if self._probe is not None:
                self._await_remote(sock, extra)
            try:
                body = sock.recv()  # RCVTIMEO: one slice
            except zmq.Again:
                self._slice_over(deadline)
                continue
            reply = decode_reply(body)
            req_id = reply.get("req_id")
            if req_id in wanted:
                wanted.discard(req_id)
                replies[req_id] = reply
            # Anything else answers a request that already timed out: drop it.
        return replies

    def _result(self, reply: dict[str, Any]) -> Any:
        result, self.seen_seq = reply_outcome(reply, self.seen_seq)
        return result

    def _call(self, request: dict[str, Any]) -> Any:
        if self._history is not None:
            return self._result(self._recorded_execute(request))
        result, self.seen_seq = reply_outcome(self._round_trip(request), self.seen_seq)
        return result

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request map and return the raw reply map (errors not raised).

        :raises ServerUnavailable: no reply within ``timeout``, or the client is closed.
        :raises PayloadTooLarge: over :attr:`max_request_bytes`; nothing was sent.
        """
        if self._history is not None:
            return self._recorded_execute(request)
        return self._round_trip(request)

    def _recorded_execute(self, request: dict[str, Any]) -> dict[str, Any]:
        hook = self._history
        assert hook is not None
        if hook.depth:
            return self._round_trip(request)
        op = hook.invoke(request)
        try:
            reply = self._round_trip(request)
        except BaseException as exc:
            hook.fail(op, exc)
            raise
        hook.complete(op, reply)
        return reply

    # --- pipelining -----------------------------------------------------------------------

    @contextmanager
    def pipeline(self) -> Iterator[Pipeline]:
        """Queue commands, send them all when the block ends, wait once.

        Each command is applied on its own (not atomically: use :meth:`batch` for that),
        in order. Results land in ``pipe.results``; a failed command's slot holds its
        exception instead of raising, as redis-py's ``raise_on_error=False``.

        :raises ServerUnavailable: a reply did not come within ``timeout`` (outcomes
            unknown).
        """
        pipe = Pipeline()
        yield pipe
        pipe.results = self.send_many(pipe.requests)

    def send_many(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Send every request, then wait once; return results (exceptions in place).

        :raises ServerUnavailable: a reply did not come within ``timeout``.
        """
        hook = self._history if self._history is not None and not self._history.depth else None
        ops: list[int] = []
        ids: list[int] = []
        refused: dict[int, dict[str, Any]] = {}
        try:
            if requests:
                self._preflight()
            # _send() written out, the socket looked up once, not per request:
            # with the in-line results below, 2.6 -> 2.2 µs of the client's Python work
            # per request (python -m bench.clientcpu, fake_many)
            pack, limit, new_id = self._pack, self.max_request_bytes, self._ids.__next__
            sock: zmq.Socket[bytes] | None = None
            for r in requests:
                if hook is not None:
                    ops.append(hook.invoke(r))
                req_id = new_id()
                try:
                    body = pack_request(pack, with_req_id(r, req_id), limit)
                except PayloadTooLarge as exc:  # not sent: its slot holds the error
                    ids.append(-1 - len(refused))
                    refused[ids[-1]] = {"ok": False, "error": exc.to_wire()}
                    continue
                if sock is None:
                    sock = self._socket()
                sock.send(body)
                ids.append(req_id)
            # A blocking claim in the pipeline may be held its `wait`: as in execute()
            wait = max((_wait_of(r) for r in requests if "wait" in r), default=0.0)
            replies = self._receive({i for i in ids if i not in refused}, wait)
            replies.update(refused)
        except BaseException as exc:
            if hook is not None:
                for op in ops:
                    hook.fail(op, exc)  # outcome unknown, even of replies already in
            raise
        if hook is not None:
            for op, req_id in zip(ops, ids, strict=True):
                hook.complete(op, replies[req_id])
        out: list[Any] = []
        seen = self.seen_seq
        try:
            for req_id in ids:  # _result() in line
                try:
                    result, seen = reply_outcome(replies[req_id], seen)
                except StateEngineError as exc:
                    out.append(exc)
                else:
                    out.append(result)
        finally:
            self.seen_seq = seen
        return out

    # --- reads straight from the arena ----------------------------------------------------

    def _reader(self) -> ArenaReader | None:
        """The arena to read from, or None (use the socket).

        Read-your-writes: waits (bounded) until the arena shows this client's last write
        (:func:`~stateengine.client.view.reader_for`, then
        :func:`~stateengine.client.view.catch_up`).
        """
        view = self._view
        if view is None or not self.use_arena or self._closed:
            return None
        return reader_for(view, self.seen_seq) or self._reader_slow()

    def _reader_slow(self) -> ArenaReader | None:
        """:meth:`_reader` when the fast path does not apply: attach, re-check, wait."""
        assert self._view is not None
        return catch_up(self._view, self.seen_seq, self.timeout)

    def _get_record_py(self, state: str, id: Id) -> Record:
        """The record, from the arena when attached (else the socket).

        :raises RecordNotFound: :raises StateNotFound:
        """
        # get_record on the pure path; on the compiled one the twin of its C body
        # (ClientCore._get_record_c, shm/_speedups.c: the same steps without this frame
        # and its attribute loads: 16.1k -> 14.2k instructions a get, `python -m
        # bench.getcpu --instructions`; 1.35x -> 1.11x the floor's CPU time).
        # INLINED COPY of view.reader_for() and view.arena_get() (through _reader()): this
        # is the hot read, and each Python call layer costs ~60 ns of a ~1.2 µs get.
        # test_arena_reads.py::test_inlined_get_record_matches_the_view keeps them equal.
        view = self._view
        if view is not None and self.use_arena and not self._closed:
            # 1 == 1.0 == True as dict keys: only the server may judge other id types.
            if type(id) is int or type(id) is str:
                reader = view.reader
                try:
                    # reader_for()'s test (no re-check due, the index at or past this
                    # client's writes) and the get in one C call, ArenaReader._get_for:
                    # time.monotonic() and the seq test were ~0.07 us of a ~1.24 us get
                    # (CPU time, 97 B record); STALE: the slow path, as reader_for's None
                    record: Any = (
                        _STALE
                        if reader is None
                        else reader._get_for(state, id, self.seen_seq, view.deadline)
                    )
                    if record is _STALE:
                        reader = self._reader_slow()
                        record = None if reader is None else reader.get(state, id)
                except SnapshotExpired:  # superseded by a restarted server, or damaged
                    record = None
                    view.recheck_soon()
                # a record past its TTL goes to the server, which commits the expiry first
                if record is not None and (
                    "_expires" not in record or record["_expires"] > _wall_time()
                ):
                    return record  # type: ignore[no-any-return]
        # A miss, or no arena: the server gives the authoritative answer and error type.
        return super().get_record(state, id)

    def _get_record_stale(self, state: str, id: Id) -> Record:
        """_get_record_py's steps after ``STALE`` (or no reader): the compiled get_record's
        way back into Python for them."""
        view = self._view
        assert view is not None
        try:
            reader = self._reader_slow()
            record = None if reader is None else reader.get(state, id)
        except SnapshotExpired:
            record = None
            view.recheck_soon()
        if record is not None and ("_expires" not in record or record["_expires"] > _wall_time()):
            return record  # type: ignore[no-any-return]
        return super().get_record(state, id)

    def _get_record_remote(self, state: str, id: Id) -> Record:
        """The server's answer (``super().get_record``), for the compiled get_record."""
        return super().get_record(state, id)

    if TYPE_CHECKING or not blocks.COMPILED:
        get_record = _get_record_py
    else:
        get_record = ClientBase._get_record_c

    def list_records(
        self,
        state: str,
        where: dict[str, Any] | None = None,
        order_by: str | list[str] | None = None,
        offset: int | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """Records matching ``where``, ordered, paged: one arena snapshot, or the socket.

        :raises StateNotFound: :raises BadRequest: :raises SchemaError: as the command.
        """
        reader = self._reader()
        out = arena_list(reader, state, where, order_by, offset, limit) if reader else None
        return (
            out if out is not None else super().list_records(state, where, order_by, offset, limit)
        )

    def get_state_info(self, state: str) -> dict[str, Any]:
        """The table's info, from the arena when attached; :raises StateNotFound:."""
        reader = self._reader()
        info = arena_info(reader, state) if reader is not None else None
        return info if info is not None else super().get_state_info(state)

    def get_schema(self, state: str) -> list[str]:
        """The table's field names; :raises StateNotFound:."""
        return list(self.get_state_info(state)["schema"])

    def list_states(self) -> list[str]:
        """The table names, from the arena when attached.

        :raises ServerUnavailable: no arena and no reply within ``timeout``.
        """
        reader = self._reader()
        names = arena_states(reader) if reader is not None else None
        return names if names is not None else super().list_states()

    def watch(self, *tables: str, hwm: int = FEED_HWM) -> Watcher:
        """Subscribe to the change feed of *tables* (see :mod:`stateengine.client.watch`).

        :raises ServerUnavailable: the data directory names no running server.
        """
        endpoint = None
        if self.data_dir is not None and not self.endpoint.startswith("tcp://"):
            endpoint = paths.read_server_file(self.data_dir).get("feed")
        if not endpoint:
            endpoint = feed_endpoint(self.endpoint)  # tcp://HOST:PORT -> PORT+1
        return Watcher(str(endpoint), list(tables), hwm, curve=self.curve)

    @contextmanager
    def snapshot(self, tables: list[str] | None = None) -> Iterator[ClientSnapshot]:
        """Several reads at one version: the arena's, or without an arena (a remote
        client, ``--no-arena``) a copy of *tables* (default: all) read in one atomic
        ``BATCH`` (:func:`~stateengine.client.view.remote_snapshot`; *tables* is ignored
        with an arena, which reads any table at that version).

        Hold it briefly: a snapshot pinned longer than the arena's expiry (10 s) raises
        ``SnapshotExpired`` on its next read instead of returning data.

        :raises ServerUnavailable: no reply within ``timeout``.
        :raises PayloadTooLarge: a remote copy over the server's reply limit.
        """
        started = time.monotonic_ns()
        reader = self._reader()
        if reader is None:
            yield from self._recorded_snapshot(remote_snapshot(self._raw_execute, tables), started)
            return
        with reader.snapshot() as snap:
            yield from self._recorded_snapshot(snap, started)

    def _recorded_snapshot(
        self, snap: Snapshot | RemoteSnapshot, started: int
    ) -> Iterator[ClientSnapshot]:
        """Yield the snapshot's reader; with a history, record its reads as one
        ``SNAPSHOT`` operation invoked when the snapshot was taken."""
        reads: list[tuple[dict[str, Any], dict[str, Any]]] | None = (
            [] if self._history is not None else None
        )
        try:
            yield ClientSnapshot(snap, reads)
        finally:
            if reads and self._history is not None:
                op = self._history.invoke(
                    {"command": "SNAPSHOT", "reads": [r for r, _ in reads]}, at=started
                )
                result = [outcome for _, outcome in reads]
                self._history.complete(op, {"ok": True, "result": result, "seq": snap.version})

    def _raw_execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """One round trip that no history records (a remote snapshot's own reads)."""
        req_id = self._send(request)
        return self._receive({req_id})[req_id]

    # --- server liveness --------------------------------------------------------------------

    def server_alive(self) -> bool:
        """Whether the server process named in ``server.json`` still runs (True if unknown).

        Raises nothing: a missing ``server.json`` is False.
        """
        info = self._server_info
        if not info and self.data_dir is not None:
            try:
                info = paths.read_server_file(self.data_dir)
            except ServerUnavailable:
                return False
        pid = info.get("pid")
        if not isinstance(pid, int):
            return True
        return paths.pid_alive(pid, info.get("start_time"))

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket. Safe to call twice; later calls raise ``ServerUnavailable``.

        Raises nothing.
        """
        if self._forks == _FORKS[0]:  # a forked child leaves the parent's socket alone
            self._reset_socket()
            if self._ctx is not None:
                self._ctx.term()
            if self._view is not None:
                self._view.close()
        if self._history is not None:
            self._history.close()
        self._ctx = None
        self._closed = True

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None and self._forks == _FORKS[0]:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)
            self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        spec = self._history.spec if self._history is not None else None
        history = spec if isinstance(spec, str | os.PathLike) else None
        return (
            Client,
            (self.endpoint, self.data_dir, self.timeout, self.use_arena, self.curve, history),
        )

    def __repr__(self) -> str:
        return f"<stateengine.Client {self.endpoint}{' closed' if self._closed else ''}>"


def request_limit(info: dict[str, Any], endpoint: str, data_dir: Path | None) -> int:
    """The request limit of the server at *endpoint*: ``max_request_bytes`` of its
    ``server.json`` (*info*, or read from *data_dir*), else the default limit."""
    if not info and data_dir is not None:
        with contextlib.suppress(StateEngineError):
            info = paths.read_server_file(data_dir)
    if info.get("endpoint") == endpoint and type(info.get("max_request_bytes")) is int:
        return int(info["max_request_bytes"])
    return MAX_REQUEST_BYTES


def _wait_of(request: dict[str, Any]) -> float:
    """How long the server may hold *request* before answering (a blocking claim)."""
    wait = request.get("wait")
    if not isinstance(wait, (int, float)) or isinstance(wait, bool):
        return 0.0
    return float(wait) if 0 < wait < float("inf") else 0.0


if blocks.COMPILED:  # what ClientCore._get_record_c reads: _wall_time, at each use
    blocks._c._client_setup(globals(), SnapshotExpired)


class Pipeline(CommandsMixin):
    """Commands queued by :meth:`Client.pipeline`; their results fill ``results``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.results: list[Any] = []

    def _call(self, request: dict[str, Any]) -> None:
        self.requests.append(request)


def connect(
    endpoint: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
    arena: bool = True,
    curve: dict[str, bytes] | None = None,
    history: str | os.PathLike[str] | OperationObserver | None = None,
) -> Client:
    """Connect to a running server (by endpoint, by data directory, or the default one).

    A remote client passes the ``tcp://`` endpoint and ``curve=`` from
    :func:`stateengine.runtime.client_options`; it reads over the socket.

    :raises ServerUnavailable: no endpoint given and no server runs on the data directory.
    """
    if endpoint is None:
        data_dir = paths.resolve_data_dir(data_dir)
    return Client(endpoint, data_dir, timeout, arena, curve, history)
