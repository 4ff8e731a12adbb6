"""The writer's doors: how many connections it accepts, and how it refuses the rest.

libzmq accepts every connection it can, each one a file descriptor, and has no
per-socket accept cap. When the process runs out of descriptors, libzmq 4.3's ipc
listener aborts the whole process (``Too many open files (src/ipc_listener.cpp:297)``,
SIGABRT; its TCP listener tolerates ``EMFILE``, the ipc one does not): ~1,100 silent TCP
peers were enough to kill the writer at the usual soft limit of 1024 (issue 14, item 6).
So the writer:

1. raises its soft ``RLIMIT_NOFILE`` to the hard limit at start (:func:`raise_fd_limit`);
2. watches each bound socket through a socket monitor (:class:`Door`):
   ``EVENT_ACCEPTED`` carries the new connection's descriptor, ``EVENT_DISCONNECTED`` the
   one that went away, so the live connections are known exactly;
3. refuses a connection over its door's cap by ``shutdown(2)`` of that descriptor: the
   peer sees the connection end, libzmq sees an error, closes the descriptor itself and
   reports ``EVENT_DISCONNECTED``. (Closing it here would let libzmq close a reused
   descriptor number later; unbinding the endpoint at the cap would also drop every
   connection already accepted, authenticated clients included: libzmq ends a
   listener's sessions with it.)
4. reads the monitors and refuses on a thread of its own (:class:`Gatekeeper`), not in
   the writer's loop, and reads them without giving up the GIL (:class:`_HeldReader`);
5. stops new local connections while an ipc door is full, without unbinding: the
   socket file is unlinked (a hard link, ``<path>.held``, keeps the inode) and linked
   again once the connections fall to :attr:`Door.resume_at` (:meth:`Door._pace`);
6. keeps the caps below the descriptor limit with a reserve for its own files (log
   segments, snapshot, SQLite, the data-dir lock) and libzmq's internals.

Why 4-6: a refused ZeroMQ peer reconnects after ``ZMQ_RECONNECT_IVL`` (100 ms by
default), and until its refusal its descriptor stays open. With more peers than
descriptors (1,050 local clients against a limit of 1,024, ~190 over the cap) the
refused ones came back every 100 ms, in step (one batch of refusals sends them off
together), and whenever the refusals fell behind by about one reconnect interval,
libzmq accepted past the reserve and aborted: 2 of 20 runs under two busy loops, load
4-8, with the monitors read between passes; 7 of 7 with a test-only 100 ms stall of the
loop (``stall_loop`` in :mod:`stateengine.shm.faults`). No reserve bounds this (every
peer can hold a descriptor at once); only keeping the refusals prompt or the peers out
does, hence:

- (4) on its own thread the refusal waits for no pass: the thread sleeps in
  ``zmq_poll`` (without the GIL) until a monitor event, owns the monitor sockets (zmq
  sockets are not thread-safe; they were created before it started and are used by it
  alone from then on) and the counts, and ``shutdown(2)`` of a descriptor libzmq's I/O
  thread owns is the same call from any thread. But pyzmq releases the GIL around each
  ``recv`` and ``ctypes.CDLL`` around each call: with the loop running Python, every
  frame and every refusal then waited the switch interval (5 ms) for the GIL, ~50
  refusals a second against ~1,900 reconnects: the stalled flood still aborted 2 of 7
  runs. Through ``ctypes.PyDLL`` (which keeps the GIL) the thread waits once per batch:
  2 of 18, the descriptors open peaking at 964-1,020 of 1,024 in the runs that lived.
- (5) a full door takes no more peers in: their connects fail (``ENOENT``) and ZeroMQ
  retries them, at no cost to the writer, so the refuse-reconnect churn stops; only the
  connections already queued (``ZMQ_BACKLOG``, 100) and those racing the unlink are
  still accepted, and the door pauses under its cap by that backlog so that they fit.
  With 4-5: 0 of 42 stalled floods and 0 of 30 plain ones aborted (peak 894-979
  descriptors in the 12 counted), load 5-11. Unbinding instead would drop every
  accepted connection (3); a larger reserve only moves the number of peers that kills
  the writer; raising the soft limit (1) cannot pass the hard one.

What this cannot prevent: between libzmq's accept and the thread's reading of the
monitor event the descriptor is in use, so a door keeps accepting for as long as the
thread gets no CPU or no GIL (a single C call holding the GIL, e.g. decoding a body of
many MB) after it filled; what it then accepts is bounded by the new connects in that
time plus the listen backlog, not by the number of peers. A TCP door is not paused (its
listener survives ``EMFILE``; its cap and handshake cap bound it). While an ipc door is
paused a new local client waits (its request times out: ``ServerUnavailable``) as it
would once refused. A refused descriptor number could in principle be reused by libzmq
before the ``shutdown`` call (the monitor is read in batches and refusals are skipped
for any descriptor whose disconnect is already in the batch, which leaves a window of
microseconds); the peer that then loses its connection reconnects (ZeroMQ clients do).

:class:`Door` is not thread-safe: once a :class:`Gatekeeper` runs, only its thread reads
the door (``info()`` from another thread reads counters, a consistent-enough snapshot).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import resource
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, cast

import zmq

log = logging.getLogger("stateengine.server")


def _monitor_event(frames: list[bytes]) -> tuple[int, int, bytes]:
    """(event, value, endpoint) of a monitor message: pyzmq's ``parse_monitor_message``
    without its module, which imports ``zmq.asyncio`` and so asyncio and ssl. With the
    CLI's client imported only by client subcommands, ``serve``'s imports took 0.212 s
    of CPU instead of 0.238 (no bytecode cache, medians of 9)."""
    if len(frames) != 2 or len(frames[0]) != 6:
        raise RuntimeError(f"invalid monitor event message: {frames!r}")
    event, value = _MONITOR_EVENT.unpack(frames[0])
    return event, value, frames[1]


_MONITOR_EVENT = struct.Struct("=Hi")  # zmq_socket_monitor: u16 event id, i32 value

_POLLIN = int(zmq.POLLIN)
#: libzmq's default listen backlog (``ZMQ_BACKLOG``): connections a listener still
#: accepts after its socket file is unlinked
_BACKLOG = 100
_EVENTS = int(
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_ACCEPT_FAILED
    | zmq.EVENT_MONITOR_STOPPED  # disable_monitor() tells the Gatekeeper's thread
)
_HANDSHAKE_FAILED = (
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL),
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH),
)


class RateLimitedLog:
    """At most one log line per *interval* seconds per key, saying how many were folded.

    ``note(key, level, message)`` counts an occurrence; the first one after a quiet
    interval is logged at once, later ones are counted and summarised in the next line
    (``... (1234 more since the last line)``). :meth:`flush` writes pending summaries
    whose interval is up (call it when idle), so the last count is never lost.
    Thread-safe: the :class:`Gatekeeper`'s thread notes refusals in the writer's log.
    """

    def __init__(self, interval: float, logger: logging.Logger = log) -> None:
        self.interval = interval
        self.log = logger
        #: key → [time of the last line, occurrences folded since, level, last message]
        self._keys: dict[str, list[Any]] = {}
        self.lines = 0
        self._lock = threading.Lock()

    def note(self, key: str, level: int, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            entry = self._keys.get(key)
            if entry is None or now - entry[0] >= self.interval:
                folded = entry[1] if entry is not None else 0
                self._emit(level, message, folded)
                self._keys[key] = [now, 0, level, message]
            else:
                entry[1] += 1
                entry[2] = max(entry[2], level)
                entry[3] = message

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            for entry in self._keys.values():
                if entry[1] and (force or now - entry[0] >= self.interval):
                    self._emit(entry[2], entry[3], entry[1])
                    entry[0], entry[1] = now, 0

    def _emit(self, level: int, message: str, folded: int) -> None:
        self.lines += 1
        if folded:
            self.log.log(level, "%s (%d more since the last line)", message, folded)
        else:
            self.log.log(level, "%s", message)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return ``(before, after)``.

    macOS reports an infinite hard limit but refuses more than ``kern.maxfilesperproc``
    (``OPEN_MAX``, 10240): then the largest value it accepts is kept.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        for value in (target, 10240):
            if value <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
                break
            except (ValueError, OSError):
                continue
    after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft, after if after != resource.RLIM_INFINITY else 1 << 20


def open_fds() -> int:
    """Descriptors open in this process now (Linux and macOS; 64 if unknown)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # the listing's own descriptor
        except OSError:
            continue
    return 64


_libc: Any = None


def _shutdown(fd: int) -> None:
    """``shutdown(fd, SHUT_RDWR)`` without a new descriptor (there may be none left).

    Called through ``ctypes.PyDLL``, which keeps the GIL: through ``CDLL`` each call
    released it, and with the writer's loop running Python the Gatekeeper's thread then
    waited the interpreter's switch interval (5 ms) to get it back, once per refusal.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.PyDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.shutdown(ctypes.c_int(fd), ctypes.c_int(socket.SHUT_RDWR)) != 0:
        err = ctypes.get_errno()
        log.debug("shutdown(%d) failed: %s", fd, os.strerror(err))


_EAGAIN = errno.EAGAIN
_EINTR = errno.EINTR
_DONTWAIT = int(zmq.DONTWAIT)


class _HeldReader:
    """Reads a monitor socket's waiting events without releasing the GIL.

    pyzmq releases the GIL around every ``recv``, even a non-blocking one. While the
    writer's loop runs Python, the Gatekeeper's thread then waited the switch interval
    (5 ms) to get the GIL back after each frame: two frames an event, two events a
    refused connection, so ~50 refusals a second, fewer than the refused peers'
    reconnects (~1,900 a second for 190 peers). Called through ``ctypes.PyDLL``, libzmq's
    ``zmq_msg_recv`` with ``ZMQ_DONTWAIT`` keeps it, and the thread waits for the GIL once
    a batch (after its ``zmq_poll``). It must be the libzmq pyzmq loaded (a socket of one
    copy means nothing to another): found in ``/proc/self/maps``; elsewhere, or if it
    cannot be loaded, :func:`_held_reader` is None and pyzmq reads the events.
    """

    def __init__(self, path: str) -> None:
        lib = ctypes.PyDLL(path)
        vp, i = ctypes.c_void_p, ctypes.c_int
        for name, restype, argtypes in (
            ("zmq_msg_init", i, [vp]),
            ("zmq_msg_recv", i, [vp, vp, i]),
            ("zmq_msg_data", vp, [vp]),
            ("zmq_msg_size", ctypes.c_size_t, [vp]),
            ("zmq_msg_more", i, [vp]),
            ("zmq_msg_close", i, [vp]),
            ("zmq_errno", i, []),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self._lib = lib
        self._msg = (ctypes.c_uint64 * 8)()  # zmq_msg_t: 64 bytes, pointer-aligned

    def _frame(self, handle: int) -> tuple[bytes, bool] | None:
        """One frame, and whether more follow; None if nothing is waiting."""
        lib, msg = self._lib, self._msg
        while True:
            lib.zmq_msg_init(msg)
            size = lib.zmq_msg_recv(msg, handle, _DONTWAIT)
            if size >= 0:
                data = ctypes.string_at(lib.zmq_msg_data(msg), size) if size else b""
                more = bool(lib.zmq_msg_more(msg))
                lib.zmq_msg_close(msg)
                return data, more
            err = lib.zmq_errno()
            lib.zmq_msg_close(msg)
            if err == _EAGAIN:
                return None
            if err != _EINTR:
                raise zmq.ZMQError(err)

    def read(self, monitor: zmq.Socket[bytes]) -> list[tuple[int, int, Any]]:
        """Every waiting event as ``(event, value, endpoint)``."""
        handle = monitor.underlying
        events: list[tuple[int, int, Any]] = []
        while (frame := self._frame(handle)) is not None:
            head, more = frame
            endpoint = b""
            while more:  # a monitor message is two frames, delivered together
                rest = self._frame(handle)
                if rest is None:
                    break
                endpoint, more = rest
            event, value = _EVENT_HEAD.unpack_from(head)
            events.append((event, value, endpoint.decode(errors="replace")))
        return events


_EVENT_HEAD = struct.Struct("=HI")  # libzmq's v1 monitor frame: event (16 bits), value
_reader: _HeldReader | None = None
_reader_tried = False


def _held_reader() -> _HeldReader | None:
    """The process's :class:`_HeldReader`, or None where it cannot be had (see there)."""
    global _reader, _reader_tried
    if not _reader_tried:
        _reader_tried = True
        try:
            with open("/proc/self/maps") as f:
                paths = [line.split()[-1] for line in f if "/libzmq" in line]
            if paths:
                _reader = _HeldReader(paths[0])
        except (OSError, AttributeError) as exc:
            log.debug("monitor events read through pyzmq: %s", exc)
    return _reader


class Door:
    """One bound socket's connections: counted by its monitor, refused over the cap.

    :param sock: a bound ROUTER (or XPUB) socket.
    :param name: for log lines (``tcp``, ``ipc``, ``feed``).
    :param cap: live connections allowed; the next one is refused.
    :param handshake_cap: unauthenticated handshakes allowed at once (None: no cap).
    :param handshake_ivl: seconds libzmq gives a handshake (``ZMQ_HANDSHAKE_IVL``).
    :param rate_log: where refusals are logged, rate-limited.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        name: str,
        cap: int,
        rate_log: RateLimitedLog,
        handshake_cap: int | None = None,
        handshake_ivl: float = 10.0,
    ) -> None:
        self.name = name
        self.cap = cap
        self.handshake_cap = handshake_cap
        self.handshake_ivl = handshake_ivl
        self.rate_log = rate_log
        self.live: dict[int, float] = {}  # fd → accepted at (monotonic)
        #: doors whose connections count against one cap together (ipc and feed)
        self.group: list[Door] = [self]
        self._succeeded: deque[float] = deque()
        #: ``disconnected`` also counts the connections libzmq cut for a body over
        #: ``ZMQ_MAXMSGSIZE`` (a plain disconnect to the monitor; issue 14 item 4).
        self.stats = {
            "accepted": 0,
            "refused": 0,
            "handshake_failed": 0,
            "accept_failed": 0,
            "disconnected": 0,
            "pauses": 0,
        }
        ctx = cast("zmq.Context[zmq.Socket[bytes]]", sock.context)
        address = f"inproc://stateengine-monitor-{name}-{id(sock):x}"
        sock.monitor(address, _EVENTS)
        monitor = ctx.socket(zmq.PAIR)
        # Unlimited queue: a dropped ACCEPTED/DISCONNECTED event would skew the count.
        monitor.setsockopt(zmq.RCVHWM, 0)
        monitor.connect(address)
        self.sock = sock
        #: None once a :class:`Gatekeeper` owns the monitor (or after :meth:`close`)
        self.monitor: zmq.Socket[bytes] | None = monitor
        #: ``EVENT_MONITOR_STOPPED`` read: nothing more will come
        self.stopped = False
        #: an ipc door's socket file and the hard link that keeps it (:meth:`hold_path`)
        self.path: str | None = None
        self._held: str | None = None
        #: the socket file is unlinked: the door is full (module docstring, item 5)
        self.paused = False
        #: the door pauses at this many connections (its group's): under the cap by
        #: the listen backlog (``ZMQ_BACKLOG``, 100; at most a quarter of the cap), so
        #: the connections already queued fit under the cap; and is linked again at
        #: :attr:`resume_at`. With cap/32 (28 of a cap of 896) the stalled flood of
        #: test_fd_limits aborted once in ~3 full suites on a machine at load ~8: the
        #: backlog and the connects racing the unlink outran the reserve.
        self.pause_at = max(1, cap - max(2, cap // 32, min(_BACKLOG, cap // 4)))
        self.resume_at = max(0, self.pause_at - max(2, cap // 32))

    def pending_handshakes(self, now: float) -> int:
        """Live connections that may still be handshaking (accepted within the last
        ``handshake_ivl``), less the handshakes that succeeded in that window; an older
        live connection has finished its handshake (libzmq drops the others)."""
        since = now - self.handshake_ivl
        while self._succeeded and self._succeeded[0] < since:
            self._succeeded.popleft()
        young = sum(1 for t in self.live.values() if t >= since)
        return max(0, young - len(self._succeeded))

    def poll(self) -> None:
        """Read every waiting monitor event; refuse what is over the caps. Nothing to do
        once a :class:`Gatekeeper` owns the monitor: its thread reads it."""
        if self.monitor is not None:
            self.read(self.monitor)

    def read(self, monitor: zmq.Socket[bytes]) -> None:
        """Read every event waiting on *monitor* (this door's); refuse over the caps."""
        reader = _held_reader()
        if reader is not None:
            events = reader.read(monitor)
        else:
            events = []
            while cast(int, monitor.get(zmq.EVENTS)) & _POLLIN:
                events.append(_monitor_event(monitor.recv_multipart(zmq.NOBLOCK)))
        if not events:
            return
        now = time.monotonic()
        refuse: dict[int, None] = {}
        # Logged last: a log line's write releases the GIL, and getting it back can take
        # the switch interval (5 ms) while the writer's loop runs Python.
        notes: list[tuple[str, int, str]] = []
        for event, value, endpoint in events:
            if event == zmq.EVENT_ACCEPTED:
                self.stats["accepted"] += 1
                reason = self._over_cap(now)
                if reason:
                    refuse[value] = None
                    self.stats["refused"] += 1
                    notes.append(
                        (
                            f"refused-{self.name}",
                            logging.WARNING,
                            f"{self.name} connection refused: {reason}",
                        )
                    )
                else:
                    self.live[value] = now
            elif event == zmq.EVENT_DISCONNECTED:
                self.stats["disconnected"] += 1
                self.live.pop(value, None)
                refuse.pop(value, None)  # already gone: its number may be reused
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._succeeded.append(now)
            elif event in _HANDSHAKE_FAILED:
                self.stats["handshake_failed"] += 1
                notes.append(
                    (
                        f"handshake-{self.name}",
                        logging.WARNING,
                        f"{self.name} client refused: handshake failed "
                        f"event={zmq.Event(event).name} endpoint={endpoint!r}",
                    )
                )
            elif event == zmq.EVENT_ACCEPT_FAILED:
                self.stats["accept_failed"] += 1
                notes.append(
                    (
                        f"accept-{self.name}",
                        logging.ERROR,
                        f"{self.name} accept failed: {os.strerror(value)} "
                        f"(descriptors open: {open_fds()})",
                    )
                )
            elif event == zmq.EVENT_MONITOR_STOPPED:
                self.stopped = True
        if self._held is not None:
            self._pace(notes)
        for fd in refuse:
            _shutdown(fd)
        for note in notes:
            self.rate_log.note(*note)

    def hold_path(self) -> None:
        """Let an ipc door stop new connections while it is full: hard-link its socket
        file to ``<path>.held``, so that the file can be unlinked (no peer finds the
        listener, libzmq's listener and its connections are untouched) and linked again.
        Nothing for a TCP door, an abstract socket or where the link cannot be made."""
        endpoint = cast(bytes, self.sock.get(zmq.LAST_ENDPOINT)).decode()
        if not endpoint.startswith("ipc://") or endpoint.startswith("ipc://@"):
            return
        path = endpoint[len("ipc://") :]
        held = path + ".held"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(held)  # left by a server that was killed
            os.link(path, held)
        except OSError as exc:
            log.warning(
                "%s door: no %s (%s): a full door refuses each connection", self.name, held, exc
            )
            return
        self.path, self._held = path, held

    def release_path(self) -> None:
        """Remove the hard link (the socket file is the server's to remove)."""
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(held)

    def _pace(self, notes: list[tuple[str, int, str]]) -> None:
        """Unlink the socket files of a full group, link them again below
        :attr:`resume_at`: a hysteresis, so a crowd at the cap waits outside (its
        connects fail with ``ENOENT``, retried by ZeroMQ) instead of being accepted and
        refused again every reconnect interval."""
        total = sum(len(door.live) for door in self.group)
        if not self.paused and total >= self.pause_at:
            for door in self.group:
                door._pause(True, total, notes)
        elif self.paused and total <= self.resume_at:
            for door in self.group:
                door._pause(False, total, notes)

    def _pause(self, pause: bool, total: int, notes: list[tuple[str, int, str]]) -> None:
        if self.path is None or self._held is None or self.paused == pause:
            return
        try:
            if pause:
                os.unlink(self.path)
            else:
                os.link(self._held, self.path)
        except OSError as exc:
            notes.append((f"pause-{self.name}", logging.ERROR, f"{self.name}: {exc}"))
            return
        self.paused = pause
        if pause:
            self.stats["pauses"] += 1
            notes.append(
                (
                    f"pause-{self.name}",
                    logging.WARNING,
                    f"{self.name} door full ({total} connections, the cap is {self.cap}): "
                    f"new connections wait until {self.resume_at} are left",
                )
            )

    def _over_cap(self, now: float) -> str:
        total = sum(len(door.live) for door in self.group)
        if total >= self.cap:
            return f"{total} connections open, the cap is {self.cap}"
        if self.handshake_cap is not None and self.pending_handshakes(now) >= self.handshake_cap:
            return (
                f"{self.handshake_cap} unauthenticated handshakes in progress "
                f"(each gets {self.handshake_ivl:g} s)"
            )
        return ""

    def info(self) -> dict[str, Any]:
        return {"open": len(self.live), "cap": self.cap, **self.stats}

    def close(self) -> None:
        """Stop monitoring (before the socket closes); logs what is left to log."""
        if self.monitor is None:
            return
        self.poll()
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
        self.monitor = None


class Gatekeeper:
    """Reads the doors' monitors and refuses over the caps on a thread of its own.

    Why (module docstring, item 4): refused in the writer's loop, a refusal waited for
    the pass in progress, and the peers refused before it reconnected meanwhile, each
    taking a descriptor again. :meth:`start` takes each door's monitor socket
    (``door.monitor`` becomes None, so the loop no longer polls it); from then on only
    the thread uses those sockets. :meth:`close`, called from the thread that owns the
    doors' bound sockets, disables their monitors: libzmq then sends
    ``EVENT_MONITOR_STOPPED`` after the last event, the thread reads everything up to it,
    closes the monitor sockets and ends.
    """

    #: the thread's poll timeout (ms): the latest it sees :meth:`close` if no
    #: ``EVENT_MONITOR_STOPPED`` comes (a socket closed before its monitor was disabled)
    STOP_CHECK_MS = 1000

    def __init__(self, doors: list[Door], rate_log: RateLimitedLog) -> None:
        self.doors = list(doors)
        self.rate_log = rate_log
        self._owned: list[tuple[Door, zmq.Socket[bytes]]] = []
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        for door in self.doors:
            if door.monitor is not None:
                door.hold_path()
                self._owned.append((door, door.monitor))
                door.monitor = None
        if not self._owned:
            return
        # Thread start is the memory barrier libzmq asks of a socket changing threads.
        self._thread = threading.Thread(target=self._run, name="stateengine-doors", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        waiting: dict[zmq.Socket[bytes], Door] = {}
        for door, monitor in self._owned:
            poller.register(monitor, zmq.POLLIN)
            waiting[monitor] = door
        try:
            while waiting:
                try:
                    ready = poller.poll(self.STOP_CHECK_MS)
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    log.error("connection monitor thread: %s", exc)
                    return
                if not ready and self._closing.is_set():
                    return
                for polled, _ in ready:
                    monitor = cast("zmq.Socket[bytes]", polled)
                    door = waiting[monitor]
                    try:
                        door.read(monitor)
                    except Exception as exc:  # a refusal missed, never the thread lost
                        self.rate_log.note(
                            f"monitor-{door.name}",
                            logging.ERROR,
                            f"{door.name} connection monitor: {type(exc).__name__}: {exc}",
                        )
                    if door.stopped:
                        poller.unregister(monitor)
                        del waiting[monitor]
        finally:
            for _, monitor in self._owned:
                monitor.close(linger=0)

    def close(self, timeout: float = 5.0) -> None:
        """Disable the monitors, let the thread read what is left, wait for it to end."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        for door, _ in self._owned:
            try:
                door.sock.disable_monitor()
            except zmq.ZMQError:
                pass
        self._closing.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("connection monitor thread still running after %g s", timeout)
        for door, _ in self._owned:
            door.release_path()
        self._owned = []
