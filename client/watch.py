"""Watching a table: every committed change, in commit order, from the writer's feed.

    with client.watch("tasks") as changes:
        for change in changes.iter(timeout=5.0):
            if change.gap:
                ...  # messages were lost (this subscriber was too slow): resynchronise
            handle(change.puts, change.deletes)

ZeroMQ subscriptions take a moment to reach the writer (the "slow joiner"): messages
of commits made before then are not delivered. To start from a consistent point, open
the watcher, read the table (``list_records``) and the ``seq`` it was read at, then
call :meth:`Watcher.start_after` with that ``seq``: a change already covered is skipped,
and a missing one shows as a gap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import zmq

from stateengine.errors import ConnectionRefused, ServerUnavailable
from stateengine.runtime.curve import ConnectionProbe
from stateengine.runtime.feed import FEED_HWM, decode_change, feed_gap, feed_topic

__all__ = [
    "Change",
    "Watcher",
]


@dataclass
class Change:
    """One commit's effect on one table."""

    seq: int
    table: str
    puts: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[Any] = field(default_factory=list)
    dropped: bool = False
    #: True when messages of this table were lost before this one.
    gap: bool = False
    #: ``[(id, how), ...]`` when the commit was an expiry: ``"lease"`` (pre-claim values
    #: put back), ``"dead"`` (dead-letter fields set), ``"ttl"`` (deleted).
    expired: list[tuple[Any, str]] = field(default_factory=list)
    #: The writer's wall clock the expiry commit was made at (0.0 for other commits).
    at: float = 0.0


class Watcher:
    """A SUB socket on the feed, filtered to some tables. One thread; close it.

    A remote feed (``tcp://``, the server's ``--tcp`` port + 1) takes the client's
    CurveZMQ options (*curve*); its handshake is watched (a
    :class:`~stateengine.runtime.curve.ConnectionProbe`), so a refused or unreachable
    watcher raises instead of looking like a quiet table. *tables* None: every table.
    """

    def __init__(
        self,
        feed_endpoint: str,
        tables: list[str] | None,
        hwm: int = FEED_HWM,
        curve: dict[str, bytes] | None = None,
    ) -> None:
        self.endpoint = feed_endpoint
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        for option, key in (curve or {}).items():
            setattr(self._sock, option, key)
        for table in tables if tables is not None else [None]:
            self._sock.setsockopt(zmq.SUBSCRIBE, b"" if table is None else feed_topic(table))
        self._probe = ConnectionProbe(self._sock) if feed_endpoint.startswith("tcp://") else None
        self._sock.connect(feed_endpoint)
        self.last_seq: dict[str, int] = {}

    def _check_link(self, quiet: bool) -> None:
        """A remote feed: raise if its handshake failed, or (after a quiet wait) never
        completed; a local one is always fine.

        :raises ConnectionRefused: :raises ServerUnavailable:
        """
        if self._probe is None:
            return
        reason = self._probe.refusal()
        if reason is not None:
            raise ConnectionRefused(f"feed {self.endpoint}: {reason}")
        if quiet and not self._probe.handshaken:
            raise ServerUnavailable(
                f"feed {self.endpoint}: not connected{self._probe.hint(self.endpoint)}"
            )

    def start_after(self, seq: int, tables: list[str]) -> None:
        """Treat *seq* (a snapshot's) as already seen for *tables*."""
        for table in tables:
            self.last_seq[table] = seq

    def next(self, timeout: float | None = None) -> Change | None:
        """The next change, or None after *timeout* seconds (None: wait forever)."""
        while True:
            if self._probe is not None and not self._probe.handshaken:
                self._wait_handshake(timeout)
            if not self._sock.poll(None if timeout is None else int(timeout * 1000)):
                self._check_link(quiet=True)
                return None
            _topic, body = self._sock.recv_multipart()
            msg = decode_change(body)
            table, seq, prev = msg["table"], msg["seq"], msg["prev_seq"]
            last = self.last_seq.get(table)
            if last is not None and seq <= last:
                continue  # already covered by the snapshot we started after
            self.last_seq[table] = seq
            return Change(
                seq,
                table,
                msg["puts"],
                msg["deletes"],
                msg["dropped"],
                gap=feed_gap(last, prev),
                expired=[(rid, how) for rid, how in msg.get("expired", ())],
                at=msg.get("at", 0.0),
            )

    def _wait_handshake(self, timeout: float | None) -> None:
        """Until a remote feed's handshake is done (a refusal raises at once), bounded
        by *timeout* (None: 10 s, so that a dead link never waits forever unnoticed)."""
        assert self._probe is not None
        deadline = time.monotonic() + (10.0 if timeout is None else timeout)
        while not self._probe.handshaken:
            self._check_link(quiet=time.monotonic() >= deadline)
            self._sock.poll(20)

    def iter(self, timeout: float | None = None) -> Iterator[Change]:
        """Changes until none arrives for *timeout* seconds."""
        while (change := self.next(timeout)) is not None:
            yield change

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
