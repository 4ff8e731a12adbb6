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
  the new pid and opens its own socket. Pickling sends only the endpoint and options, so
  a client can be passed to ``multiprocessing`` spawn workers.
* **Read-your-writes.** The client remembers the highest ``seq`` its writes produced, and
  an arena read waits (bounded by ``timeout``) until the arena has published it.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq

from stateengine.client.commands import CommandsMixin
from stateengine.errors import ServerUnavailable, StateEngineError, from_wire
from stateengine.protocol import decode_reply, encode_request
from stateengine.server import paths


class Client(CommandsMixin):
    """A connection to one server. Not thread-safe: one client per thread.

    :param endpoint: the server's endpoint; default: read from the data directory.
    :param data_dir: the server's data directory (default: ``$STATEENGINE_DATA_DIR`` or
        ``./.stateengine``); used to find the endpoint and to tell whether the server
        process is alive.
    :param timeout: seconds to wait for each reply before ``ServerUnavailable``.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute() if data_dir else None
        self.timeout = timeout
        self._server_info: dict[str, Any] = {}
        if endpoint is None:
            self._server_info = paths.read_server_file(self.data_dir or paths.default_data_dir())
            endpoint = str(self._server_info["endpoint"])
        self.endpoint = endpoint
        self.seen_seq = 0
        self._ids = itertools.count(1)
        self._pid = os.getpid()
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._closed = False

    # --- transport ----------------------------------------------------------------------

    def _socket(self) -> zmq.Socket[bytes]:
        if self._closed:
            raise ServerUnavailable("this client is closed")
        if self._pid != os.getpid():
            # Forked: the parent's context belongs to the parent; abandon it untouched.
            self._ctx, self._sock, self._pid = None, None, os.getpid()
        if self._sock is None:
            if self._ctx is None:
                self._ctx = zmq.Context()
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _send(self, request: dict[str, Any]) -> int:
        req_id = next(self._ids)
        request["req_id"] = req_id
        self._socket().send(encode_request(request))
        return req_id

    def _receive(self, wanted: set[int]) -> dict[int, dict[str, Any]]:
        """Collect the replies to *wanted*, dropping stale ones; bounded by ``timeout``."""
        sock = self._socket()
        replies: dict[int, dict[str, Any]] = {}
        deadline_ms = int(self.timeout * 1000)
        while wanted:
            if not sock.poll(deadline_ms, zmq.POLLIN):
                self._reset_socket()
                raise ServerUnavailable(
                    f"no reply from {self.endpoint} within {self.timeout} s"
                    + ("" if self.server_alive() else " (the server process is gone)")
                )
            reply = decode_reply(sock.recv())
            req_id = reply.get("req_id")
            if req_id in wanted:
                wanted.discard(req_id)
                replies[req_id] = reply
            # Anything else answers a request that already timed out: drop it.
        return replies

    def _result(self, reply: dict[str, Any]) -> Any:
        if not reply.get("ok"):
            raise from_wire(reply.get("error"))
        seq = reply.get("seq")
        if isinstance(seq, int) and seq > self.seen_seq:
            self.seen_seq = seq
        return reply.get("result")

    def _call(self, request: dict[str, Any]) -> Any:
        req_id = self._send(dict(request))
        return self._result(self._receive({req_id})[req_id])

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request map and return the raw reply map (errors not raised)."""
        req_id = self._send(dict(request))
        return self._receive({req_id})[req_id]

    # --- pipelining -----------------------------------------------------------------------

    @contextmanager
    def pipeline(self) -> Iterator[Pipeline]:
        """Queue commands, send them all when the block ends, wait once.

        Each command is applied on its own (not atomically: use :meth:`batch` for that),
        in order. Results land in ``pipe.results``; a failed command's slot holds its
        exception instead of raising, as redis-py's ``raise_on_error=False``.
        """
        pipe = Pipeline()
        yield pipe
        pipe.results = self.send_many(pipe.requests)

    def send_many(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Send every request, then wait once; return results (exceptions in place)."""
        ids = [self._send(dict(r)) for r in requests]
        replies = self._receive(set(ids))
        out: list[Any] = []
        for req_id in ids:
            try:
                out.append(self._result(replies[req_id]))
            except StateEngineError as exc:
                out.append(exc)
        return out

    # --- server liveness --------------------------------------------------------------------

    def server_alive(self) -> bool:
        """Whether the server process named in ``server.json`` still runs (True if unknown)."""
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
        """Close the socket. Safe to call twice; later calls raise ``ServerUnavailable``."""
        if self._pid == os.getpid():
            self._reset_socket()
            if self._ctx is not None:
                self._ctx.term()
        self._ctx = None
        self._closed = True

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None and self._pid == os.getpid():
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)
            self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Client, (self.endpoint, self.data_dir, self.timeout))

    def __repr__(self) -> str:
        return f"<stateengine.Client {self.endpoint}{' closed' if self._closed else ''}>"


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
) -> Client:
    """Connect to a running server (by endpoint, by data directory, or the default one).

    :raises ServerUnavailable: no endpoint given and no server runs on the data directory.
    """
    return Client(endpoint, data_dir, timeout)
