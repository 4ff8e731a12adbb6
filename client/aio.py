"""The asyncio client: the same commands as :class:`~stateengine.client.client.Client`,
awaited.

    async with await stateengine.connect_async() as db:
        rec = await db.create_record("leads", {"name": "ada"})
        await db.get_record("leads", rec["id"])       # from the arena: no socket, no wait

Only the transport differs (as pyzmq's ``zmq.asyncio`` overrides primitives only): the
command methods are :class:`CommandsMixin`'s, awaited (:class:`AsyncCommandsMixin`,
generated from it by ``client/_gen_async.py``), requests are pipelined over
one ``zmq.asyncio`` DEALER socket, and a single receiver task hands each reply to the
future waiting for its ``req_id``. Arena reads are memory reads of a few microseconds
and run inline; only the read-your-writes wait yields to the loop.

A server known to be gone (its socket removed, its ``server.json`` gone, its pid dead)
fails a call at once, or within 0.1 s of waiting, as in the blocking client
(:mod:`stateengine.client.liveness`).

Sharp edges: a call cancelled after its request was sent may still be applied by the
server (its reply is then dropped, and logged at debug level); one client belongs to
one event loop. With ``history=DIR`` (the stress-test kit's history option) every asyncio
task is one recorded process, since its calls are sequential; the client's calls go to
``DIR/<pid>-<n>.msgpack``. Use uvloop for the loop (:func:`install_uvloop`); the client does not
install it for you.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from stateengine import defaults
from stateengine.client.client import _wait_of, request_limit
from stateengine.client.commands import Id, Record
from stateengine.client.commands_async import AsyncCommandsMixin
from stateengine.client.history import _RECORDING, RECORDED_READS, AsyncHistory, _recorded_async
from stateengine.client.liveness import SLICE, Liveness
from stateengine.client.view import (
    ArenaView,
    arena_get,
    arena_info,
    arena_list,
    arena_states,
    catch_up_async,
    reader_for,
)
from stateengine.errors import ConnectionRefused, ServerUnavailable
from stateengine.protocol import decode_reply, pack_request, reply_outcome, with_req_id
from stateengine.runtime import discovery as paths
from stateengine.runtime.curve import ConnectionProbe
from stateengine.shm import ArenaReader

__all__ = [
    "AsyncClient",
    "connect_async",
    "install_uvloop",
]


log = logging.getLogger("stateengine.client")


def install_uvloop() -> bool:
    """Make uvloop the event loop policy when it is installed; return whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class AsyncClient(AsyncCommandsMixin):
    """One connection for one event loop. Every command method returns an awaitable.

    :param timeout: seconds to wait for each reply before ``ServerUnavailable``.
    :param history: a directory: record every operation for the checker (each asyncio
        task is one recorded process).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = defaults.CLIENT_TIMEOUT,
        arena: bool = True,
        history: str | os.PathLike[str] | None = None,
        curve: dict[str, bytes] | None = None,
    ) -> None:
        """See the class.

        :raises ServerUnavailable: no *endpoint* given and no server runs on the data
            directory (no readable ``server.json``).
        """
        self._history = AsyncHistory(history) if history is not None else None
        if self._history is not None:  # per instance: a client without a history pays nothing
            for name, command in RECORDED_READS.items():
                wrapped = _recorded_async(command, getattr(type(self), name))
                setattr(self, name, functools.partial(wrapped, self))
        self.data_dir = Path(data_dir).absolute() if data_dir else None
        info: dict[str, Any] = {}
        if endpoint is None:
            self.data_dir = paths.resolve_data_dir(self.data_dir)
            info = paths.read_server_file(self.data_dir)
            endpoint = str(info["endpoint"])
        self.endpoint = endpoint
        #: The server's request limit (``server.json``; the default limit when given only
        #: an endpoint): a larger request is refused here, ``PayloadTooLarge``, unsent.
        self.max_request_bytes = request_limit(info, endpoint, self.data_dir)
        self.timeout = timeout
        self.seen_seq = 0
        self._view = ArenaView(self.data_dir) if arena and self.data_dir else None
        self._ids = itertools.count(1)
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        self.curve = curve
        for option, key in (curve or {}).items():
            setattr(self._sock, option, key)  # curve_serverkey/_publickey/_secretkey
        # A remote server: a refused handshake is told at once, not timed out.
        self._probe = ConnectionProbe(self._sock) if endpoint.startswith("tcp://") else None
        self._sock.connect(endpoint)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._receiver: asyncio.Task[None] | None = None
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._closed = False
        self._live = Liveness(endpoint, self.data_dir)
        self._live.saw(info)

    # --- transport ----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            body = await self._sock.recv()
            reply = decode_reply(body)
            future = self._pending.pop(reply.get("req_id", -1), None)
            if future is None or future.done():
                log.debug("reply dropped: its call was cancelled or timed out: %r", reply)
                continue
            future.set_result(reply)

    async def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request map; return the raw reply map (errors not raised).

        :raises ServerUnavailable: no reply within ``timeout``, or the client is closed.
        :raises PayloadTooLarge: over :attr:`max_request_bytes`; nothing was sent.
        """
        hook = self._history
        if hook is None or _RECORDING.get():
            return await self._execute(request)
        op = hook.invoke(request)
        try:
            reply = await self._execute(request)
        except BaseException as exc:
            hook.fail(op, exc)
            raise
        hook.complete(op, reply)
        return reply

    async def _execute(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise ServerUnavailable("this client is closed")
        if self._receiver is None or self._receiver.done():
            self._receiver = asyncio.get_running_loop().create_task(self._receive_loop())
        req_id = next(self._ids)
        # Encode before registering the call: a request that cannot be encoded must not
        # leave a future pending forever.
        body = pack_request(self._pack, with_req_id(request, req_id), self.max_request_bytes)
        reason = self._live.fast()  # a server known to be gone: refuse before sending
        if reason is not None:
            raise ServerUnavailable(f"{self.endpoint}: {reason}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[req_id] = future
        await self._sock.send(body)
        deadline = loop.time() + self.timeout + _wait_of(request)
        try:
            if self._probe is not None:
                return await self._await_remote(future, self.timeout + _wait_of(request))
            while True:  # in slices: between two, is the server known to be gone?
                remaining = deadline - loop.time()
                if remaining > 0:
                    done, _ = await asyncio.wait((future,), timeout=min(SLICE, remaining))
                    if done:
                        return future.result()
                    reason = self._live.gone()
                    if reason is None:
                        continue
                    raise ServerUnavailable(f"{self.endpoint}: {reason}")
                raise ServerUnavailable(f"no reply from {self.endpoint} within {self.timeout} s")
        except TimeoutError:
            hint = self._probe.hint(self.endpoint) if self._probe is not None else ""
            raise ServerUnavailable(
                f"no reply from {self.endpoint} within {self.timeout} s{hint}"
            ) from None
        finally:
            self._pending.pop(req_id, None)

    async def _await_remote(
        self, future: asyncio.Future[dict[str, Any]], seconds: float
    ) -> dict[str, Any]:
        """A TCP reply: waited for in 50 ms slices, raising as soon as the server refuses
        the handshake (:raises ConnectionRefused:); TimeoutError after *seconds*."""
        assert self._probe is not None
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait({future}, timeout=min(0.05, left))
            if done:
                return future.result()
            reason = self._probe.refusal()
            if reason is not None:
                future.cancel()
                raise ConnectionRefused(f"{self.endpoint}: {reason}")

    async def _call(self, request: dict[str, Any]) -> Any:
        result, self.seen_seq = reply_outcome(await self.execute(request), self.seen_seq)
        return result

    # --- arena reads (inline: microseconds; only read-your-writes yields) ----------------

    def arena_reader(self) -> ArenaReader | None:
        """The server's arena as it is now, without waiting for this client's writes
        (None: no arena, e.g. a remote client or after :meth:`close`). For monitoring
        (the gateway's health, feed and table sizes); the read methods wait for
        read-your-writes instead. Raises nothing."""
        return self._view.current() if self._view is not None else None

    async def _reader(self) -> ArenaReader | None:
        """The arena to read from (waits for this client's last write), or None."""
        # The fast path: no coroutine to create and await (the reads below call it first).
        fast = reader_for(self._view, self.seen_seq)
        if fast is not None:
            return fast
        return await catch_up_async(self._view, self.seen_seq, self.timeout)

    async def get_record(self, state: str, id: Id) -> Record:
        """The record, from the arena when attached (else the socket).

        :raises RecordNotFound: :raises StateNotFound:
        """
        reader = reader_for(self._view, self.seen_seq) or await self._reader()
        record = arena_get(reader, state, id) if reader is not None else None
        return record if record is not None else await super().get_record(state, id)

    async def list_records(
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
        reader = reader_for(self._view, self.seen_seq) or await self._reader()
        out = arena_list(reader, state, where, order_by, offset, limit) if reader else None
        if out is not None:
            return out
        return await super().list_records(state, where, order_by, offset, limit)

    async def get_state_info(self, state: str) -> dict[str, Any]:
        """The table's info, from the arena when attached; :raises StateNotFound:."""
        reader = reader_for(self._view, self.seen_seq) or await self._reader()
        info = arena_info(reader, state) if reader is not None else None
        return info if info is not None else await super().get_state_info(state)

    async def get_schema(self, state: str) -> list[str]:
        """The table's field names; :raises StateNotFound:."""
        return list((await self.get_state_info(state))["schema"])

    async def list_states(self) -> list[str]:
        """The table names, from the arena when attached.

        :raises ServerUnavailable: no arena and no reply within ``timeout``.
        """
        reader = reader_for(self._view, self.seen_seq) or await self._reader()
        names = arena_states(reader) if reader is not None else None
        return names if names is not None else await super().list_states()

    # --- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel the receiver, fail pending calls, close the socket. Safe to call twice.

        Raises nothing; the calls still pending raise ``ServerUnavailable``.
        """
        if self._closed:
            return
        self._closed = True
        if self._receiver is not None:
            self._receiver.cancel()
            try:
                await self._receiver
            except (asyncio.CancelledError, zmq.ZMQError):
                pass
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ServerUnavailable("the client was closed"))
        self._pending.clear()
        if self._probe is not None:
            self._probe.close()
        self._sock.close(linger=0)
        self._ctx.term()
        if self._view is not None:
            self._view.close()
            self._view = None  # a read after close() goes to the closed socket: an error
        if self._history is not None:
            self._history.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<stateengine.AsyncClient {self.endpoint}{' closed' if self._closed else ''}>"


async def connect_async(
    endpoint: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    timeout: float = defaults.CLIENT_TIMEOUT,
    arena: bool = True,
    history: str | os.PathLike[str] | None = None,
    curve: dict[str, bytes] | None = None,
) -> AsyncClient:
    """:func:`stateengine.connect` for asyncio; call it inside the loop that will use it.

    A remote client passes the ``tcp://`` endpoint and ``curve=`` (as ``connect``).
    """
    return AsyncClient(endpoint, data_dir, timeout, arena, history, curve)
