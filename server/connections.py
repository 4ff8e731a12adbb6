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
   the writer's loop;
5. keeps the caps below the descriptor limit with a reserve for its own files (log
   segments, snapshot, SQLite, the data-dir lock) and libzmq's internals.

Why a thread (4): a refused ZeroMQ peer reconnects after ``ZMQ_RECONNECT_IVL`` (100 ms
by default), and while its refusal waits its descriptor stays open. Refused in the
loop, every refused peer could take a descriptor again while one pass ran: with 1,050
local clients against a limit of 1,024 (~190 over the cap) a pass held up ~77 ms on a
loaded machine let libzmq accept past the reserve and abort (5 of 20 runs; every run
with a test-only 100 ms stall per pass, ``stall_loop`` in :mod:`stateengine.shm.faults`).
What the reserve must cover is the peers that can reconnect before their refusal,
which no fixed reserve bounds when the refusal waits for a pass. On its own thread the
refusal waits for no pass: the thread sleeps in ``zmq_poll`` (without the GIL) until a
monitor event, and a pass running Python hands it the GIL within the interpreter's
switch interval (5 ms). It owns the monitor sockets (zmq sockets are not thread-safe;
they were created before it started and are used by it alone from then on), the
connection counts are its alone, and ``shutdown(2)`` of a descriptor libzmq's I/O
thread owns is the same call from any thread. The loop no longer polls the monitors
(two fewer entries in its ``poll``). Other ways, and why not: a larger reserve only
moves the number of peers that kills the writer; unbinding above a high-water mark
drops the accepted connections (3); raising the soft limit (1) cannot pass the hard one.

What this cannot prevent: between libzmq's accept and the thread's reading of the
monitor event the descriptor is in use; refusals fall behind only if the thread gets
no CPU or no GIL (a single C call holding the GIL, e.g. decoding a body of many MB) for
longer than the reconnect interval while more peers than the reserve are waiting to
reconnect. A refused descriptor number could in principle be reused by libzmq before
the ``shutdown`` call (the monitor is read in batches and refusals are skipped for any
descriptor whose disconnect is already in the batch, which leaves a window of
microseconds); the peer that then loses its connection reconnects (ZeroMQ clients do).

:class:`Door` is not thread-safe: once a :class:`Gatekeeper` runs, only its thread reads
the door (``info()`` from another thread reads counters, a consistent-enough snapshot).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import resource
import socket
import threading
import time
from collections import deque
from typing import Any, cast

import zmq
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("stateengine.server")

_POLLIN = int(zmq.POLLIN)
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
    """``shutdown(fd, SHUT_RDWR)`` without a new descriptor (there may be none left)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.shutdown(ctypes.c_int(fd), ctypes.c_int(socket.SHUT_RDWR)) != 0:
        err = ctypes.get_errno()
        log.debug("shutdown(%d) failed: %s", fd, os.strerror(err))


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
        events: list[tuple[int, int, Any]] = []
        while cast(int, monitor.get(zmq.EVENTS)) & _POLLIN:
            msg = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            events.append((int(msg["event"]), int(msg["value"]), msg.get("endpoint")))
        if not events:
            return
        now = time.monotonic()
        refuse: dict[int, None] = {}
        for event, value, endpoint in events:
            if event == zmq.EVENT_ACCEPTED:
                self.stats["accepted"] += 1
                reason = self._over_cap(now)
                if reason:
                    refuse[value] = None
                    self.stats["refused"] += 1
                    self.rate_log.note(
                        f"refused-{self.name}",
                        logging.WARNING,
                        f"{self.name} connection refused: {reason}",
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
                self.rate_log.note(
                    f"handshake-{self.name}",
                    logging.WARNING,
                    f"{self.name} client refused: handshake failed "
                    f"event={zmq.Event(event).name} endpoint={endpoint!r}",
                )
            elif event == zmq.EVENT_ACCEPT_FAILED:
                self.stats["accept_failed"] += 1
                self.rate_log.note(
                    f"accept-{self.name}",
                    logging.ERROR,
                    f"{self.name} accept failed: {os.strerror(value)} "
                    f"(descriptors open: {open_fds()})",
                )
            elif event == zmq.EVENT_MONITOR_STOPPED:
                self.stopped = True
        for fd in refuse:
            _shutdown(fd)

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
        self._owned = []
