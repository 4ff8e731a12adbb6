"""The writer: a ZeroMQ ROUTER queue in front of the table engine.

One pass of the loop (SPEC §6 order):

1. drain every request waiting on the ROUTER socket (up to ``max_pass``);
2. apply them one at a time, in arrival order, through ``TableEngine.execute``;
3. persist the pass (once durability lands), then publish the new version to the arena
   once for the whole pass;
4. send the replies, never blocking: a client that stops reading has its replies
   dropped (and logged) at the high-water mark instead of freezing the writer.

Why a plain ``zmq.Poller`` loop and not ``zmq.asyncio`` on uvloop: the loop does no
other I/O than this one socket, and an asyncio ROUTER adds a future, a callback and a
loop iteration per message; on this machine that measured 1.6–2.7× slower for a ROUTER
echo (bench/server.py prints both). uvloop is used where an asyncio loop does run (the
asyncio client).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import operator
import os
import signal
import time
from types import FrameType
from typing import Any, Final, Protocol, cast

import msgpack
import zmq

from stateengine import command_table, defaults
from stateengine.errors import (
    BadRequest,
    PayloadTooLarge,
    StateEngineError,
    StorageUnavailable,
)
from stateengine.limits import (
    FD_RESERVE,
    HANDSHAKE_SECONDS,
    MAX_PARKED_CLAIMS,
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    MAX_TCP_CONNECTIONS,
    MAX_TCP_HANDSHAKES,
    OVERSIZE_FACTOR,
    REPEAT_LOG_SECONDS,
    STORAGE_PROBE_BYTES,
    STORAGE_RETRY_SECONDS,
)
from stateengine.protocol import (
    decode_request,
    encode_reply,
    encode_valid,
    is_json,
    peek_req_id,
)
from stateengine.runtime import discovery as paths
from stateengine.runtime.feed import feed_endpoint
from stateengine.server import backup
from stateengine.server.backup import BACKUP_COMMAND
from stateengine.server.connections import (
    Door,
    Gatekeeper,
    RateLimitedLog,
    open_fds,
    raise_fd_limit,
)
from stateengine.server.engine import ChangeSet, Id, TableEngine
from stateengine.server.feed import Feed
from stateengine.server.parking import ParkedClaims, Waiter, group_key
from stateengine.server.persist_base import Encoded, gc_paused, probe_space
from stateengine.server.persistence import PersistenceError, RecoveryReport, Store, crash_point
from stateengine.server.stores import name_of
from stateengine.shm import faults, locks, stale

log = logging.getLogger("stateengine.server")

_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
#: The defaults of ``serve --max-request-bytes`` and of the reply limit.
DEFAULT_MAX_REQUEST = MAX_REQUEST_BYTES
DEFAULT_MAX_REPLY = MAX_REPLY_BYTES


def _drain(
    sock: zmq.Socket[bytes], received: list[tuple[zmq.Socket[bytes], list[bytes]]], limit: int
) -> None:
    """Append the messages waiting on *sock* to *received*, up to *limit* in all.

    Frames come with ``copy=False`` and end at the first without ``more``: pyzmq's
    ``recv_multipart`` asks ``getsockopt(RCVMORE)`` after every frame and the loop
    asked ``get(EVENTS)`` before every message, each a Python-level enum conversion
    (and EVENTS a syscall); on a burst that was 8.6 µs a 3-frame message against 2.2 µs
    this way (issue 17, ROUTER over ipc, thread CPU). The drain ends with one ``Again``,
    except after a first message with nothing behind it (one client, one request in
    flight: the common pass), which one ``EVENTS`` check tells for 1.5 µs where a
    raised ``Again`` takes 3.6 (issue 17, thread CPU, an empty ROUTER).
    """
    recv = sock.recv
    first = True
    while len(received) < limit:
        try:
            frame = recv(_NOBLOCK, copy=False)
        except zmq.Again:
            return
        frames = [frame.bytes]
        while frame.more:
            frame = recv(_NOBLOCK, copy=False)
            frames.append(frame.bytes)
        received.append((sock, frames))
        if first:
            first = False
            if not cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:
                return


#: Commands whose result is the engine's own checked values (records, counts, ids; not
#: STATS, which holds the server's figures): a reply to one is encoded by msgspec.
_VALID_RESULTS: Final = frozenset(
    {
        "CREATE_RECORD",
        "SET_RECORD",
        "PATCH_RECORD",
        "EXPIRE_RECORD",
        "DELETE_RECORD",
        "GET_RECORD",
        "LIST_RECORDS",
        "CLAIM_RECORD",
        "INCREMENT",
        "SET_STATE",
    }
)
#: ``req_id`` types msgspec and the Packer encode alike in every case (a timestamp or
#: other ext the Packer refuses: InternalError, as before).
_IDS: Final = frozenset({int, str, type(None)})


def _valid_batch(request: dict[str, Any]) -> bool:
    """Whether an applied ``BATCH``'s results are all of :data:`_VALID_RESULTS` commands
    (its reply then goes through msgspec too: a BATCH of 100 patches' reply took 0.45 µs
    a result in the Packer, ~0.2 here; issue 17, in-process)."""
    return set(map(_command_of, request["commands"])) <= _VALID_RESULTS


_command_of: Final = operator.itemgetter("command")


def _writes(name: Any) -> bool:
    """Whether the command named *name* may change the state (unknown: not judged here)."""
    spec = command_table.COMMANDS.get(name) if isinstance(name, str) else None
    return spec is not None and spec.writes


class Publisher(Protocol):
    """Where each pass's changes become visible to workers (the shared-memory arena)."""

    name: str

    def publish(self, changes: ChangeSet) -> None: ...

    def publish_state(self, encoded: Encoded | None = None) -> None: ...

    def reclaim(self) -> None: ...

    def reserve(self, nbytes: int) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self, unlink: bool = True) -> None: ...


class DataDirLocked(RuntimeError):
    """Another server holds the data directory."""


class Server:
    """The writer process's state: engine, socket, data directory lock, arena.

    Not safe to share across threads or to fork after :meth:`start`.

    :param data_dir: created if missing; locked for this server's lifetime.
    :param endpoint: ``ipc://...`` (default: private, derived from *data_dir*) or
        ``tcp://host:port``.
    :raises DataDirLocked: another server runs on *data_dir* (its pid is named).
    """

    #: ``gc.freeze()`` what :meth:`start` built (``stateengine serve`` sets it: the
    #: server's own process); off for a server embedded in another program.
    freeze_after_start = False

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        endpoint: str | None = None,
        *,
        publisher: Publisher | None = None,
        store: Store | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST,
        max_reply_bytes: int = DEFAULT_MAX_REPLY,
        max_pass: int = 1024,
        engine: TableEngine | None = None,
        feed_hwm: int = defaults.FEED_HWM,
        tcp: str | None = None,
        slow_ms: float = defaults.SLOW_MS,
    ) -> None:
        self.data_dir = paths.resolve_data_dir(data_dir)
        self.endpoint = endpoint or ""
        self.publisher = publisher
        self.store = store
        self.recovery: RecoveryReport | None = None
        self.max_request_bytes = max_request_bytes
        self.max_reply_bytes = max_reply_bytes
        self.max_pass = max_pass
        self.feed_hwm = feed_hwm
        self.tcp = tcp
        self.slow_seconds = slow_ms / 1000
        self._tcp: zmq.Socket[bytes] | None = None
        self.doors: list[Door] = []
        #: reads the doors' monitors and refuses on a thread of its own (connections.py)
        self.gatekeeper: Gatekeeper | None = None
        self._stall = "stall_loop" in faults.FAULTS  # a test-only fault: shm/faults.py
        self.fd_limit = 0
        self.repeat_log = RateLimitedLog(REPEAT_LOG_SECONDS, log)
        self._auth: Any = None
        self.engine = engine or TableEngine()
        self.engine.copy_results = False  # each reply is encoded before the next command
        self.engine.owns_requests = True  # each request is decoded from its body
        self.engine.stats_hook = self._stats  # STATS: a server-scope command of the table
        self.stats = {"requests": 0, "passes": 0, "dropped_replies": 0, "storage_failures": 0}
        #: why writes are refused (a pass could not be stored), or None
        self.storage_error: str | None = None
        self._storage_retry_at = 0.0
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._last_idle = time.monotonic()
        #: serve_forever polls the feed's sockets by fd and reads subscriptions on a signal
        self._feed_polled = False
        self._started = time.monotonic()
        self.feed: Feed | None = None
        self._last_pass = 0
        self._stop = False
        self._lock_fd: int | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        #: CLAIM_RECORDs with ``wait`` that found nothing yet (server/parking.py)
        self.parked = ParkedClaims()
        self.engine.rebuild_deadlines()
        #: BACKUP requests of this pass, and the backups being written (server/backup.py)
        self._backup_waiters: dict[tuple[Any, ...], tuple[Any, list[bytes], bool, Any]] = {}
        self._backup_jobs: list[backup.BackupJob] = []

    # --- lifecycle ----------------------------------------------------------------------

    def lock(self) -> None:
        """Take the data directory (done by :meth:`start` if not yet).

        :raises DataDirLocked: another server holds it.
        """
        if self._lock_fd is None:
            paths.private_dir(self.data_dir)
            self._lock_data_dir()

    @gc_paused
    def start(self) -> None:
        self.lock()
        if self.store is not None:
            self._reserve_arena()
            # CorruptStore propagates: never serve a half-recovered state.
            self.recovery = self.store.recover(self.engine, progress=self._progress)
            log.info("recovered %s", self.recovery.summary())
            self.engine.rebuild_deadlines(self.recovery.ttl_tables)
        self._expire_at_start()
        self._supersede_previous_arena()
        if not self.endpoint:
            self.endpoint = paths.default_endpoint(self.data_dir)
        if not self.endpoint.startswith("ipc://"):
            raise OSError(
                f"--endpoint {self.endpoint}: the local endpoint is ipc:// only; "
                "TCP is served by --tcp HOST:PORT, with CurveZMQ authentication"
            )
        if self.endpoint.startswith("ipc://"):
            # A dead server may have left its socket file; the data-dir lock proves it is dead.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.endpoint[len("ipc://") :])
        before, self.fd_limit = raise_fd_limit()
        if self.fd_limit != before:
            log.info("file descriptor limit raised from %d to %d", before, self.fd_limit)
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_SECONDS * 1000))
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable reply: an error, not silence
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        # Bodies up to OVERSIZE_FACTOR x the limit are read and answered PayloadTooLarge;
        # libzmq cuts the connection of a larger one before it is held in memory.
        sock.setsockopt(zmq.MAXMSGSIZE, OVERSIZE_FACTOR * self.max_request_bytes)
        sock.setsockopt(zmq.LINGER, 2000)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(f"cannot bind {self.endpoint}: {exc}") from exc
        if self.endpoint.startswith("ipc://"):
            os.chmod(self.endpoint[len("ipc://") :], 0o600)
        self._sock = sock
        if self.tcp:
            self._bind_tcp(self.tcp)
        try:
            self.feed = Feed(self._ctx, feed_endpoint(self.endpoint), self.feed_hwm)
        except (zmq.ZMQError, ValueError) as exc:
            log.warning("no change feed: %s", exc)
        if self.feed is not None and self._tcp is not None:
            remote_feed = feed_endpoint(f"tcp://{self.tcp}")
            try:
                self.feed.add_socket(self._bind_curve(zmq.XPUB, remote_feed))
            except OSError as exc:  # requests still served; remote watchers are told
                log.warning("no remote change feed (watch over TCP): %s", exc)
        self._open_doors()
        if self.publisher is not None:
            # The recovered state goes to the arena before server.json announces the
            # server: server.json is the readiness signal (ServerProcess.start, clients,
            # workers attaching the arena it names), so once it exists the arena holds
            # the recovered seq and the loop is about to answer.
            self._publish_state()
        # What the start built (every record, the arena's index) lives as long as the
        # server: frozen, the collections of the first passes do not walk it again (the
        # start runs with the cyclic GC off: gc_paused). Only in a process of its own
        # (``stateengine serve``): frozen objects are never collected, so a server
        # embedded in another program leaves that program's collector alone.
        if self.freeze_after_start:
            gc.freeze()
        self._write_server_file()
        log.info(
            "serving endpoint=%s data_dir=%s seq=%d tables=%d arena=%s tcp=%s",
            self.endpoint,
            self.data_dir,
            self.engine.seq,
            len(self.engine.tables),
            self.publisher.name if self.publisher else None,
            self.tcp,
        )

    def _reserve_arena(self) -> None:
        """Have the arena's generation for the recovered records made while they are read
        (``ArenaWriter.reserve``), when the store says how many bytes it will read
        (``recovery_bytes``: optional, a store plugin without it starts as before)."""
        size = getattr(self.store, "recovery_bytes", None)
        if size is None or self.publisher is None:
            return
        nbytes = size()
        if nbytes > 0:
            log.debug(
                "arena: its generation for %d bytes of records made beside the recovery", nbytes
            )
            self.publisher.reserve(nbytes)

    def _publish_state(self) -> None:
        """The recovered state to the arena, from the store's bytes where it has them."""
        assert self.publisher is not None
        encoded = self.recovery.encoded if self.recovery is not None else None
        try:
            self.publisher.publish_state(encoded)
        finally:
            if self.recovery is not None:
                self.recovery.encoded = {}  # the bytes' memory goes back now

    def _supersede_previous_arena(self) -> None:
        """Mark the arena of this data dir's previous server (named in ``arena.last``) as
        superseded, so that a worker still attached to it re-attaches instead of reading
        a version this server has moved past (found by the kit's nemesis: reads in the
        second after a kill -9 and restart missed the new server's writes)."""
        last = self.data_dir / "arena.last"
        with contextlib.suppress(OSError):
            previous = last.read_text().strip()
            if previous and (self.publisher is None or previous != self.publisher.name):
                stale.supersede(previous)
        if self.publisher is not None:
            with contextlib.suppress(OSError):
                paths.write_private_file(last, self.publisher.name.encode())

    def _expire_at_start(self) -> None:
        """Commit what ran out while no server ran, before the arena shows anything: a
        worker must not read a lease or a record that the first pass would end."""
        engine = self.engine
        if not engine.expire_due(engine.clock()):
            return
        cs = engine.change_set(engine.changes, engine.table_changes, engine.removed)
        engine.changes, engine.table_changes, engine.removed = {}, set(), set()
        if self.store is None:
            return
        try:
            self.store.write(cs)
        except PersistenceError as exc:
            self._undo_pass(exc, None)  # as for a pass: writes refused, deadlines wait
        else:
            log.info(
                "committed %d expiries due while stopped (seq %d)", len(engine.expired), cs.seq
            )

    def _bind_tcp(self, address: str) -> None:
        """A second ROUTER on ``tcp://address``, CurveZMQ only, clients by allow-list.

        Keys live in ``DATA_DIR/curve`` (see :mod:`stateengine.server.curve`): a client
        whose public key is not in ``curve/clients/`` is refused by the ZAP handler and
        the refusal is logged.
        """
        from stateengine.server import curve

        assert self._ctx is not None
        self._auth = curve.start_authenticator(self._ctx, self.data_dir, log)
        self._tcp = self._bind_curve(zmq.ROUTER, f"tcp://{address}")

    def _bind_curve(self, kind: int, endpoint: str) -> zmq.Socket[bytes]:
        """A CurveZMQ server socket on *endpoint*: the ``--tcp`` ROUTER, or the remote
        change feed's XPUB (``--tcp`` port + 1), behind the same allow-list.

        :raises OSError: *endpoint* cannot be bound.
        """
        from stateengine.server import curve

        assert self._ctx is not None
        server_public, server_secret = curve.server_keys(self.data_dir)
        sock = self._ctx.socket(kind)
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.setsockopt(zmq.LINGER, 2000)
        else:
            sock.setsockopt(zmq.SNDHWM, self.feed_hwm)
        # Bodies up to OVERSIZE_FACTOR x the limit are read and answered PayloadTooLarge;
        # libzmq cuts the connection of a larger one before it is held in memory.
        sock.setsockopt(zmq.MAXMSGSIZE, OVERSIZE_FACTOR * self.max_request_bytes)
        sock.curve_secretkey = server_secret
        sock.curve_publickey = server_public
        sock.curve_server = True
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_SECONDS * 1000))
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(f"cannot bind {endpoint}: {exc}") from exc
        return sock

    def _open_doors(self) -> None:
        """Count and cap the connections of every bound socket (see
        :mod:`stateengine.server.connections`). The descriptors left under the limit,
        less :data:`FD_RESERVE`, are shared: a quarter (at most
        :data:`MAX_TCP_CONNECTIONS`) for TCP, the rest for local clients and feed
        subscribers. Handshake failures (no CurveZMQ at all, a bad handshake) never
        reach the ZAP handler: the TCP door logs each as a refusal (rate-limited)."""
        assert self._sock is not None
        available = max(8, self.fd_limit - FD_RESERVE - open_fds() - 16)
        tcp_cap = min(MAX_TCP_CONNECTIONS, max(4, available // 4)) if self._tcp else 0
        local_cap = max(4, available - tcp_cap)
        local = Door(self._sock, "ipc", local_cap, self.repeat_log)
        self.doors = [local]
        if self.feed is not None:
            feed = Door(self.feed.sock, "feed", local_cap, self.repeat_log)
            local.group = feed.group = [local, feed]
            self.doors.append(feed)
        if self._tcp is not None:
            handshakes = min(MAX_TCP_HANDSHAKES, tcp_cap)
            tcp = Door(self._tcp, "tcp", tcp_cap, self.repeat_log, handshakes, HANDSHAKE_SECONDS)
            self.doors.append(tcp)
            if self.feed is not None and len(self.feed.socks) > 1:  # one cap for both
                tcp_feed = Door(
                    self.feed.socks[1],
                    "tcp-feed",
                    tcp_cap,
                    self.repeat_log,
                    handshakes,
                    HANDSHAKE_SECONDS,
                )
                tcp.group = tcp_feed.group = [tcp, tcp_feed]
                self.doors.append(tcp_feed)
        log.info(
            "connection caps: local %d, tcp %d (%d handshaking); descriptor limit %d",
            local_cap,
            tcp_cap,
            min(MAX_TCP_HANDSHAKES, tcp_cap),
            self.fd_limit,
        )
        if "doors_in_loop" not in faults.FAULTS:  # else the loop polls the monitors
            self.gatekeeper = Gatekeeper(self.doors, self.repeat_log)
            self.gatekeeper.start()

    def _log_refusals(self) -> None:
        for door in self.doors:
            door.poll()

    def _write_server_file(self) -> None:
        pid = os.getpid()
        paths.write_server_file(
            self.data_dir,
            {
                "pid": pid,
                "start_time": paths.process_start_time(pid),
                "endpoint": self.endpoint,
                "arena": self.publisher.name if self.publisher else None,
                "feed": self.feed.endpoint if self.feed else None,
                "tcp": f"tcp://{self.tcp}" if self._tcp is not None else None,
                "tcp_feed": feed_endpoint(f"tcp://{self.tcp}")
                if self._tcp is not None and self.feed is not None and len(self.feed.socks) > 1
                else None,
                # Clients refuse a larger request before sending it (issue 14 item 4).
                "max_request_bytes": self.max_request_bytes,
                "started_at": time.time(),
            },
        )

    def _progress(self, done: int, total: int) -> None:
        if total >= 100_000 and (done == total or done % 100_000 == 0):
            log.warning("recovery: %d of %d records loaded", done, total)

    def _lock_data_dir(self) -> None:
        fd = os.open(self.data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        if not locks.try_lock(fd):  # flock; a portable lock where there is none
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"{self.data_dir} is in use by another stateengine server (pid {holder}); "
                "stop it first or pick another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Close the socket (flushing replies), unlink the arena, release the lock.

        ``server.json`` and the ipc socket files are removed only by the server that
        holds the data-dir lock: a second server refused on a directory in use must
        leave the running one's files alone (issue 14, item 11).
        """
        owner = self._lock_fd is not None
        if self.gatekeeper is not None:
            self.gatekeeper.close()
            self.gatekeeper = None
        for door in self.doors:
            door.close()
        self.doors = []
        self.repeat_log.flush(force=True)
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        if self._sock is not None:
            self._sock.close(linger=2000)
            self._sock = None
        if self._tcp is not None:
            self._tcp.close(linger=2000)
            self._tcp = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if owner and self.endpoint.startswith("ipc://"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.endpoint[len("ipc://") :])
        if self.publisher is not None:
            self.publisher.close(unlink=True)
            self.publisher = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if owner:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / paths.SERVER_FILE).unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Finish the current pass, answer everything already received, then return."""
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # --- the loop -------------------------------------------------------------------------

    def serve_forever(self, poll_ms: int = 100) -> None:
        """Poll, run a pass, housekeep, until :meth:`request_stop`.

        Only the request sockets are polled as zmq sockets. libzmq checks the command
        mailbox of every zmq socket in a poll (a ``getpid`` and a ``poll`` syscall) in
        its non-blocking first pass and again after the wait: the doors' two monitors
        cost 8 of the main thread's 26.5 syscalls a write one at a time, and the
        feed's subscription check (``EVENTS`` every pass) 2 more. The
        monitors and the feed's XPUB sockets are polled by their ``ZMQ_FD`` instead
        (one more entry of the one ``poll``): it turns readable when a command reaches
        the socket, so an accepted connection or a subscription still wakes the loop,
        and each is read to the end (no ``POLLIN`` left) when it does, which is what
        lets the next command signal it again. Issue 17, one REQ write at a time: the
        main thread's syscalls 26.5 -> 16.1 a write (strace -f, 2000 writes; the echo
        makes ~15); server CPU a write 211.7 -> 200.0 µs, medians of four interleaved
        ``bench.writepath --server --writes 3000 --repeats 3`` at load ~5 on 2 cores,
        and -19 µs (median of 60 paired rounds, lower in 40) in a scratch A/B.
        """
        assert self._sock is not None, "call start() first"
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self._tcp is not None:
            poller.register(self._tcp, zmq.POLLIN)
        # The doors' monitors: none once the Gatekeeper's thread owns them (connections.py).
        monitors = {
            cast(int, door.monitor.get(zmq.FD)) for door in self.doors if door.monitor is not None
        }
        feed_fds = {cast(int, s.get(zmq.FD)) for s in self.feed.socks} if self.feed else set()
        for fd in monitors | feed_fds:
            poller.register(fd, zmq.POLLIN)
        # Read both to the end once: from here on, their fds say when something came.
        self._log_refusals()
        if self.feed is not None:
            self.feed.read_subscriptions()
        self._feed_polled = True
        gc_on = gc.isenabled()
        try:
            while not self._stop:
                timeout = poll_ms
                wake = self._next_wake()
                if wake is not None:
                    timeout = min(poll_ms, max(0, int((wake - self.engine.clock()) * 1000) + 1))
                try:
                    ready = poller.poll(timeout)
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                requests = ready
                if ready and (monitors or feed_fds):
                    fds = {s for s, _ in ready if type(s) is int}
                    if fds:
                        requests = [r for r in ready if type(r[0]) is not int]
                        if fds & monitors:
                            # Connections first: an accepted descriptor over the cap is
                            # refused before more of them pile up.
                            self._log_refusals()
                        if fds & feed_fds:
                            assert self.feed is not None
                            self.feed.read_subscriptions()
                if requests or (wake is not None and self.engine.clock() >= wake):
                    if gc_on:
                        # No cyclic GC inside a pass (one after it, if due): a SET_STATE
                        # of 10⁵ records ran ~140 over its own new objects. Server CPU a
                        # record of it 10.1-10.7 -> 8.7-8.8 µs (issue 17, bench.writepath
                        # --server --bulk 100000, interleaved runs).
                        gc.disable()
                        try:
                            self.run_pass()
                        finally:
                            gc.enable()
                    else:
                        self.run_pass()
                now = time.monotonic()
                if not ready or now - self._last_idle > 0.1:
                    self._idle(now)
        finally:
            self._feed_polled = False
        self._release_parked()
        if self._backup_waiters:
            self._start_backups()
        self._reap_backups(block=True)  # a backup asked for is finished and answered

    def _release_parked(self) -> None:
        """On stop, answer every parked claim null (found nothing), as its wait would."""
        for waiter in self.parked.expired(float("inf")):
            self._send_found_nothing(waiter.sock, waiter.envelope, waiter.request, waiter.as_json)

    def _send_found_nothing(
        self,
        sock: zmq.Socket[bytes],
        envelope: list[bytes],
        request: dict[str, Any],
        as_json: bool,
    ) -> None:
        """Answer a parked claim null at the current version, as its ended wait would."""
        table = self.engine.tables.get(request.get("state", ""))
        reply: dict[str, Any] = {
            "ok": True,
            "result": None,
            "version": table.version if table is not None else None,
            "seq": self.engine.seq,
        }
        if "req_id" in request:
            reply["req_id"] = request["req_id"]
        self._send(sock, envelope, self._encode(reply, as_json))

    def _idle(self, now: float) -> None:
        """Housekeeping between passes: everysec fsync, snapshot reaping, arena reclaim."""
        self._last_idle = now
        self._log_refusals()
        if self._stall:
            faults.stall()
        self.repeat_log.flush()
        if self.store is not None:
            try:
                self.store.tick()
            except (PersistenceError, OSError) as exc:  # an everysec save; retried
                self.repeat_log.note("store-tick", logging.ERROR, f"store: {exc}")
            self._maybe_resume_writes(now)
        if self.publisher is not None:
            self.publisher.reclaim()
        if self._backup_jobs:
            self._reap_backups()
        # Answer whatever is already queued before the next poll (and, once a stop was
        # asked, before the loop leaves: no received request goes unanswered).
        while self.run_pass():
            pass

    def run_pass(self) -> int:
        """Drain, apply, persist, publish, reply once; return the number of requests.

        A pass the store cannot take (disk full) is undone (:meth:`_undo_pass`): its
        writes are answered ``StorageUnavailable``, its reads from the state without it.

        :raises PersistenceError: the pass could not be stored and the stored state could
            not be read back either (the caller must stop; a restart recovers).
        """
        assert self._sock is not None
        received: list[tuple[zmq.Socket[bytes], list[bytes]]] = []
        for sock in (self._sock, self._tcp) if self._tcp is not None else (self._sock,):
            _drain(sock, received, self.max_pass)
        wake = self._next_wake()
        now = self.engine.clock()
        if not received and (wake is None or now < wake):
            return 0
        self._last_pass = len(received)
        outgoing: list[tuple[zmq.Socket[bytes], list[bytes], bytes | None]] = []
        dirty_records: dict[tuple[str, Id], None] = {}
        dirty_tables: set[str] = set()
        removed: set[tuple[str, Id]] = set()
        engine = self.engine
        feed = self.feed
        if feed is not None:
            # serve_forever reads the subscriptions when the feed's fd says one came;
            # while someone subscribes, every pass, as flush's sends may process the
            # command that signalled one without reading it. Elsewhere, every pass.
            if feed.subscriptions or not self._feed_polled:
                feed.read_subscriptions()
            if not feed.subscriptions:
                feed = None
        first_write = -1
        parked_now: list[Waiter] = []

        def absorb() -> bool:
            """Take the last command's writes into the pass; whether it wrote."""
            changes, table_changes = engine.changes, engine.table_changes
            if not (changes or table_changes):
                return False
            if feed is not None:
                feed.record_commit(engine)
            # Only what the command filled is taken and replaced: a record write leaves
            # table_changes and removed empty (two updates and two sets less a write).
            if changes:
                dirty_records.update(changes)
                engine.changes = {}
            if table_changes:
                dirty_tables.update(table_changes)
                engine.table_changes = set()
            if engine.removed:
                removed.update(engine.removed)
                engine.removed = set()
            return True

        # The timer pass: leases and TTLs that ran out are one commit before the requests
        # (not while writes are refused: it is a write; deadlines then wait).
        if self.storage_error is None and engine.expire_due(now):
            absorb()
            first_write = 0
        for sock, frames in received:
            envelope, reply_body, waiter = self._handle(frames, sock)
            if absorb() and first_write < 0:
                first_write = len(outgoing)
            if waiter is not None:
                self.parked.add(waiter)
                parked_now.append(waiter)
            outgoing.append((sock, envelope, reply_body))
        answered: list[Waiter] = []
        if self.parked:
            answered = self._wake_parked(dirty_records, dirty_tables, now, absorb, outgoing)
            if answered and first_write < 0:
                first_write = len(received)
        if dirty_records or dirty_tables:
            cs = engine.change_set(dirty_records, dirty_tables, removed)
            stored = True
            if cs and self.store is not None:
                try:
                    self.store.write(cs)
                except PersistenceError as exc:
                    self._undo_pass(exc, feed)
                    stored = False
                    # Answer again from the first write on: the writes are refused now,
                    # the reads see the state without the undone pass. Woken claims park
                    # again (their claims were undone); claims parked in this pass are
                    # handled again like every other request.
                    self.parked.forget(parked_now)
                    for waiter in answered:
                        self.parked.add(waiter)
                    del outgoing[len(received) :]
                    for i in range(min(first_write, len(received)), len(received)):
                        sock, frames = received[i]
                        envelope, reply_body, waiter = self._handle(frames, sock)
                        if waiter is not None:
                            self.parked.add(waiter)
                        outgoing[i] = (sock, envelope, reply_body)
            if cs and stored:
                crash_point("pass-synced")
                if self.publisher is not None:
                    self._publish(cs)
                crash_point("pass-published")
        if feed is not None:
            feed.flush()
        for sock, envelope, body in outgoing:
            if body is not None:  # None: a parked claim, answered later
                self._send(sock, envelope, body)
        if self.store is not None and self.storage_error is None:
            try:
                self.store.maybe_snapshot(engine)
            except (PersistenceError, OSError) as exc:  # the log goes on; retried later
                self.repeat_log.note("snapshot", logging.ERROR, f"snapshot failed: {exc}")
        if self._backup_waiters:
            self._start_backups()
        self.stats["requests"] += len(received)
        self.stats["passes"] += 1
        return len(received)

    def _next_wake(self) -> float | None:
        """When the loop must run a pass with no request: a lease or a TTL runs out (its
        expiry commit is due), or a parked claim's wait ends."""
        deadline = self.engine.next_deadline() if self.storage_error is None else None
        wait = self.parked.next_deadline() if self.parked else None
        if deadline is None or wait is None:
            return deadline if wait is None else wait
        return min(deadline, wait)

    def _wake_parked(
        self,
        dirty_records: dict[tuple[str, Id], None],
        dirty_tables: set[str],
        now: float,
        absorb: Any,
        outgoing: list[tuple[zmq.Socket[bytes], list[bytes], bytes | None]],
    ) -> list[Waiter]:
        """Try the parked claims this pass may satisfy; answer those whose wait ended.

        Tried: the groups on tables this pass wrote (an expiry commit included: a lease
        that ran out writes its record back). A claim is tried with the engine as any
        claim; a null result leaves it parked.
        """
        if self.storage_error is not None:
            states: list[str] = []  # no write can happen: only the deadlines
        else:
            states = sorted({name for name, _ in dirty_records} | dirty_tables)

        def try_claim(waiter: Waiter) -> bool:
            reply = self.engine.execute(waiter.request)
            if reply.get("ok") and reply.get("result") is None:
                return False
            absorb()
            outgoing.append((waiter.sock, waiter.envelope, self._encode(reply, waiter.as_json)))
            return True

        answered = self.parked.retry(states, try_claim) if states != [] else []
        for waiter in self.parked.expired(now):
            request = {k: v for k, v in waiter.request.items() if k != "wait"}
            body = self._answer(request, waiter.as_json)
            absorb()
            outgoing.append((waiter.sock, waiter.envelope, body))
        return answered

    def _undo_pass(self, exc: PersistenceError, feed: Feed | None) -> None:
        """The pass could not be stored: take it back out of memory, refuse writes.

        The store has put its files back as before the pass (a partial log entry cut, a
        transaction rolled back); :meth:`Store.reload` rebuilds the engine from them, so
        memory matches disk. Nothing of the pass was published or acknowledged. Costs
        what a restart's recovery costs, once per episode: while writes are refused, no
        write reaches the engine, so no further pass can fail this way.

        :raises PersistenceError: the stored state cannot be read back (the server stops,
            as before; a restart recovers).
        """
        assert self.store is not None
        self.stats["storage_failures"] += 1
        log.error(
            "cannot store a pass, undoing it; writes are refused (StorageUnavailable) until "
            "the store takes writes again, reads go on: %s",
            exc,
        )
        try:
            self.store.reload(self.engine)
        except Exception as reload_exc:
            raise PersistenceError(
                f"{exc}; and the stored state cannot be read back: {reload_exc}"
            ) from reload_exc
        self.engine.rebuild_deadlines()
        self.engine.changes = {}
        self.engine.table_changes = set()
        self.engine.removed = set()
        if feed is not None:
            feed.discard()
        self.storage_error = str(exc)
        self._storage_retry_at = time.monotonic() + STORAGE_RETRY_SECONDS

    def _maybe_resume_writes(self, now: float) -> None:
        """While writes are refused: about once a second, write a probe file (1 MiB,
        fsynced, removed) to the data directory; when that works, take writes again."""
        if self.storage_error is None or now < self._storage_retry_at:
            return
        self._storage_retry_at = now + STORAGE_RETRY_SECONDS
        try:
            probe_space(self.data_dir, STORAGE_PROBE_BYTES)
        except OSError as exc:
            self.repeat_log.note(
                "storage-still", logging.WARNING, f"writes still refused: store: {exc}"
            )
            return
        log.warning("the data directory takes writes again: writes accepted")
        self.storage_error = None

    def _refused(self, request: dict[str, Any]) -> bool:
        """Whether *request* writes while writes are refused (a BATCH with any write).

        The commands that change nothing (``writes`` False in the command table) are
        answered as usual; an unknown command gets its ``UnknownCommand``.
        """
        name = request.get("command")
        if name == "BATCH":
            subs = request.get("commands")
            return not isinstance(subs, list) or any(
                not isinstance(sub, dict) or _writes(sub.get("command")) for sub in subs
            )
        return _writes(name)

    def _publish(self, cs: ChangeSet) -> None:
        assert self.publisher is not None
        try:
            self.publisher.publish(cs)
        except Exception:
            # The pass is applied and durable; only the read tier failed (the arena could
            # not grow, /dev/shm is full). Turn the arena off: clients then read over the
            # socket, which is slower but never stale.
            log.exception("arena publish failed; the arena is off, clients read via the socket")
            self.publisher.close(unlink=True)
            self.publisher = None
            self._write_server_file()

    def _parse(
        self, frames: list[bytes], echo_req_id: bool = False
    ) -> tuple[list[bytes], dict[str, Any] | None, bool, bytes | None]:
        """Split one ROUTER message: ``(envelope, request, as_json, None)``, or
        ``(envelope, None, as_json, error reply body)`` for a malformed or oversize body,
        answered in the body's own format. The error carries the request's ``req_id``
        when it is ``PayloadTooLarge`` (or always, with *echo_req_id*): not decoded, but
        the clients put ``req_id`` first, so the caller gets this answer instead of
        waiting for its timeout (issue 14 item 4)."""
        if len(frames) >= 2 and frames[1] == b"":
            envelope, body_frames = frames[:2], frames[2:]
        else:
            envelope, body_frames = frames[:1], frames[1:]
        body = body_frames[0] if len(body_frames) == 1 else b""
        try:
            if len(body_frames) != 1:
                raise BadRequest(
                    f"a request is one frame after the envelope, got {len(body_frames)}"
                )
            if len(body) > self.max_request_bytes:
                raise PayloadTooLarge(
                    f"request of {len(body)} bytes exceeds the server's limit of "
                    f"{self.max_request_bytes} (serve --max-request-bytes)"
                )
            request, as_json = decode_request(body, self.max_request_bytes)
        except StateEngineError as exc:
            error: dict[str, Any] = {"ok": False, "error": exc.to_wire()}
            if echo_req_id or isinstance(exc, PayloadTooLarge):
                found, req_id = peek_req_id(body)
                if found:
                    error["req_id"] = req_id
            return envelope, None, is_json(body), encode_reply(error, is_json(body))
        return envelope, request, as_json, None

    def _handle(
        self, frames: list[bytes], sock: zmq.Socket[bytes] | None = None
    ) -> tuple[list[bytes], bytes | None, Waiter | None]:
        """Split one ROUTER message and answer it: ``(envelope, reply body, None)``, or
        ``(envelope, None, waiter)`` for a claim with ``wait`` that found nothing (parked).

        A DEALER sends ``[body]`` and a REQ ``[b"", body]``; ROUTER prepends the identity.
        """
        # A REQ's or a DEALER's one body frame within the limit is decoded here; anything
        # else, and a body that does not decode, goes through _parse, which answers it.
        request: dict[str, Any] | None = None
        n = len(frames)
        if (n == 3 and not frames[1]) or (n == 2 and frames[1]):
            body = frames[-1]
            if len(body) <= self.max_request_bytes:
                try:
                    request, as_json = decode_request(body, self.max_request_bytes)
                except StateEngineError:
                    pass
        if request is None:
            envelope, request, as_json, refused = self._parse(frames)
            if request is None:
                return envelope, refused, None
        else:
            envelope = frames[:-1]
        command = request.get("command")
        if command == BACKUP_COMMAND:
            return envelope, self._want_backup(sock, envelope, request, as_json), None
        if self.storage_error is None:  # _reply's common case, one call less a request
            started = time.perf_counter()
            reply = self.engine.execute(request)
            elapsed = time.perf_counter() - started
            if elapsed >= self.slow_seconds or not reply["ok"]:
                self._log_request(request, reply, elapsed)
        else:
            reply = self._reply(request)
        if reply["ok"]:
            wait = request.get("wait")
            if (
                wait
                and reply["result"] is None
                and command == "CLAIM_RECORD"
                and len(self.parked) < MAX_PARKED_CLAIMS
            ):
                deadline = self.engine.clock() + wait
                state = request["state"]
                waiter = Waiter(
                    sock, envelope, request, as_json, deadline, state, group_key(request)
                )
                return envelope, None, waiter
            if (
                not as_json
                and (command in _VALID_RESULTS or (command == "BATCH" and _valid_batch(request)))
                and type(reply.get("req_id")) in _IDS
            ):
                # Results of stored, checked values: msgspec's encoder gives msgpack's
                # bytes for them (tests/unit/test_codec_compat.py) in 0.29 µs where the
                # Packer takes 0.57 (issue 17, the bench's PATCH_RECORD reply).
                try:
                    encoded = encode_valid(reply)
                except Exception:  # not expected: _encode then says what it is
                    encoded = None
                if encoded is not None and len(encoded) <= self.max_reply_bytes:
                    return envelope, encoded, None
        return envelope, self._encode(reply, as_json), None

    # --- backups (server/backup.py) ---------------------------------------------------------

    def _want_backup(
        self, sock: Any, envelope: list[bytes], request: dict[str, Any], as_json: bool
    ) -> bytes | None:
        """``BACKUP``: answered when a backup started after this pass is written (None
        now), or at once with ``BadRequest`` for arguments it does not take."""
        extra = sorted(set(request) - {"command", "req_id"})
        if extra:
            error = BadRequest(f"BACKUP takes no arguments, got {extra}").to_wire()
            reply: dict[str, Any] = {"ok": False, "error": error}
            if "req_id" in request:
                reply["req_id"] = request["req_id"]
            return self._encode(reply, as_json)
        # Keyed: a pass undone and handled again (disk full) must not ask twice.
        key = (id(sock), tuple(envelope), repr(request.get("req_id")))
        self._backup_waiters[key] = (sock, envelope, as_json, request.get("req_id"))
        return None

    def _start_backups(self) -> None:
        """After a pass: one backup for every ``BACKUP`` it received, at its ``seq``."""
        waiters = list(self._backup_waiters.values())
        self._backup_waiters = {}
        try:
            job = backup.start_backup(self.engine, self.data_dir)
        except OSError as exc:
            for waiter in waiters:
                self._answer_backup(waiter, None, f"cannot start a backup: {exc}")
            return
        job.waiters = waiters
        self._backup_jobs.append(job)
        self._reap_backups()

    def _reap_backups(self, block: bool = False) -> None:
        """Answer the waiters of every backup whose child has exited (*block*: wait)."""
        for job in list(self._backup_jobs):
            if not backup.finished(job, block):
                continue
            self._backup_jobs.remove(job)
            try:
                done, error = backup.result(job), None
                log.info("backup at seq %d written to %s", job.seq, job.path)
            except (PersistenceError, OSError) as exc:
                done, error = None, str(exc)
                log.error("backup at seq %d failed: %s", job.seq, exc)
            for waiter in job.waiters:
                self._answer_backup(waiter, done, error)

    def _answer_backup(
        self, waiter: tuple[Any, list[bytes], bool, Any], done: Any, error: str | None
    ) -> None:
        sock, envelope, as_json, req_id = waiter
        reply: dict[str, Any] = (
            {"ok": True, "result": done, "seq": self.engine.seq}
            if error is None
            else {"ok": False, "error": StorageUnavailable(error).to_wire()}
        )
        if req_id is not None:
            reply["req_id"] = req_id
        self._send(sock, envelope, self._encode(reply, as_json))

    def _answer(self, request: dict[str, Any], as_json: bool) -> bytes:
        return self._encode(self._reply(request), as_json)

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        """The engine's reply, or ``StorageUnavailable`` for a write while writes are
        refused; slow and failed requests are logged."""
        started = time.perf_counter()
        if self.storage_error is not None and self._refused(request):
            self._maybe_resume_writes(time.monotonic())
        if self.storage_error is not None and self._refused(request):
            reply = {
                "ok": False,
                "error": StorageUnavailable(
                    f"writes are refused: the server cannot store them ({self.storage_error})"
                    "; reads are answered; retry when space is back"
                ).to_wire(),
            }
            if "req_id" in request:
                reply["req_id"] = request["req_id"]
        else:
            reply = self.engine.execute(request)
        elapsed = time.perf_counter() - started
        if elapsed >= self.slow_seconds or not reply["ok"]:
            self._log_request(request, reply, elapsed)
        return reply

    def _encode(self, reply: dict[str, Any], as_json: bool) -> bytes:
        """The reply's bytes in the request's format; ``PayloadTooLarge`` past the limit."""
        try:
            encoded = encode_reply(reply, True) if as_json else self._pack(reply)
        except (TypeError, ValueError, OverflowError) as exc:
            error = {"type": "InternalError", "message": f"cannot encode reply: {exc}"}
            encoded = encode_reply({"ok": False, "error": error}, as_json)
        if len(encoded) > self.max_reply_bytes:
            error = PayloadTooLarge(
                f"reply of {len(encoded)} bytes exceeds {self.max_reply_bytes}; "
                "page with offset/limit"
            ).to_wire()
            small: dict[str, Any] = {"ok": False, "error": error}
            if "req_id" in reply:
                small["req_id"] = reply["req_id"]
            encoded = encode_reply(small, as_json)
        return encoded

    def _log_request(self, request: dict[str, Any], reply: dict[str, Any], elapsed: float) -> None:
        """key=value lines: slow requests at WARNING, internal errors at ERROR, other
        failed requests at DEBUG (they are the client's to handle)."""
        command, req_id = request.get("command"), request.get("req_id")
        state = request.get("state")
        if not reply["ok"]:
            error = reply["error"]
            level = logging.ERROR if error["type"] == "InternalError" else logging.DEBUG
            log.log(
                level,
                "request failed command=%s state=%r req_id=%r error=%s message=%r",
                command,
                state,
                req_id,
                error["type"],
                error["message"],
            )
        if elapsed >= self.slow_seconds:
            log.warning(
                "slow request command=%s state=%r req_id=%r ms=%.1f",
                command,
                state,
                req_id,
                elapsed * 1000,
            )

    def _stats(self) -> dict[str, Any]:
        """``STATS``: the server's own figures (the engine adds the tables': its
        ``stats_hook``)."""
        now = time.monotonic()
        uptime = now - self._started
        store: dict[str, Any] | None = None
        if self.store is not None:
            store = {
                "backend": name_of(self.store),  # what --store takes: log, sqlite, ...
                "fsync": getattr(self.store, "fsync", None),
                **getattr(self.store, "stats", {}),
            }
        arena = self.publisher.stats() if self.publisher is not None else None
        if arena is not None:
            arena = {k: v for k, v in arena.items() if k != "files"}
        # Live leases only: an expired lease stays in the table until the record is
        # claimed again or written, but it holds nothing (this replaces the engine's count).
        clock = self.engine.clock()
        tables = {
            name: {
                "records": len(t.records),
                "version": t.version,
                "leases": sum(1 for lease in t.leases.values() if lease.expires > clock),
            }
            for name, t in sorted(self.engine.tables.items())
        }
        return {
            "tables": tables,
            "pid": os.getpid(),
            "endpoint": self.endpoint,
            "data_dir": str(self.data_dir),
            "uptime": round(uptime, 3),
            "requests": self.stats["requests"],
            "passes": self.stats["passes"],
            "requests_per_second": round(self.stats["requests"] / uptime, 1) if uptime else 0,
            "last_pass_size": self._last_pass,
            "dropped_replies": self.stats["dropped_replies"],
            "parked_claims": len(self.parked),
            "storage_failures": self.stats["storage_failures"],
            "writes_refused": self.storage_error,
            "fd_limit": self.fd_limit,
            "connections": {door.name: door.info() for door in self.doors},
            "store": store,
            "arena": arena,
        }

    def _send(self, sock: zmq.Socket[bytes], envelope: list[bytes], body: bytes) -> None:
        # Plain send() with int flags: send_multipart costs ~6 µs more per reply here.
        try:
            for part in envelope:
                sock.send(part, _SNDMORE_NOBLOCK)
            sock.send(body, _NOBLOCK)
        except zmq.Again:
            # Counted always, logged at a bounded rate: one client that never reads would
            # otherwise write a line per request (281,710 lines in 11 s; issue 14 item 7).
            self.stats["dropped_replies"] += 1
            self.repeat_log.note(
                "reply-dropped-full",
                logging.WARNING,
                f"reply dropped: client {envelope[0]!r} is not reading (send queue full); "
                f"{self.stats['dropped_replies']} replies dropped since start",
            )
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.stats["dropped_replies"] += 1
            self.repeat_log.note(
                "reply-dropped-gone",
                logging.INFO,
                f"reply dropped: client {envelope[0]!r} disconnected; "
                f"{self.stats['dropped_replies']} replies dropped since start",
            )
