"""The change feed: every committed change, per table, in commit order (an XPUB socket).

The endpoint and the message format (one message per commit and table touched, with
``prev_seq`` chaining a table's messages so that a subscriber sees what it missed) are
shared with the readers: :mod:`stateengine.runtime.feed`. Messages are sent after the
pass is persisted and published, before its replies.

Cost when nobody listens: none beyond reading subscription frames; the writer tracks
subscriptions (``XPUB_VERBOSE``) and builds messages only while some exist.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, cast

import msgpack
import zmq

from stateengine.runtime.feed import FEED_HWM, encode_change
from stateengine.server.engine import TableEngine

log = logging.getLogger("stateengine.server")
_POLLIN = int(zmq.POLLIN)


class Feed:
    """The writer's side. Not thread-safe; the writer thread only."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, hwm: int = FEED_HWM
    ) -> None:
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscribe, so the count is right
        self.sock.setsockopt(zmq.SNDHWM, hwm)  # messages queued per subscriber, then drops
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://") :], 0o600)
        #: every socket the feed goes out on: the local one, then ``--tcp``'s (add_socket)
        self.socks = [self.sock]
        self.subscriptions = 0
        self.last_seq: dict[str, int] = {}
        self.dropped = 0
        self._pending: list[tuple[bytes, bytes]] = []
        self._pack = msgpack.Packer(use_bin_type=True).pack

    @property
    def active(self) -> bool:
        """Whether someone listens, subscriptions read first (the writer's loop reads
        them only when its poll says one came: :meth:`read_subscriptions`)."""
        self.read_subscriptions()
        return self.subscriptions > 0

    def add_socket(self, sock: zmq.Socket[bytes]) -> None:
        """Send the feed on *sock* too (a bound XPUB: the CurveZMQ one of ``--tcp``)."""
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        self.socks.append(sock)

    def read_subscriptions(self) -> None:
        """Count the (un)subscribe frames waiting on every feed socket."""
        for sock in self.socks:
            while cast(int, sock.get(zmq.EVENTS)) & _POLLIN:
                frame = sock.recv(zmq.NOBLOCK)
                if frame[:1] == b"\x01":
                    self.subscriptions += 1
                elif frame[:1] == b"\x00":
                    self.subscriptions = max(0, self.subscriptions - 1)

    def record_commit(self, engine: TableEngine) -> None:
        """Encode the commit just applied (call before the next command runs)."""
        cs = engine.change_set(engine.changes, engine.table_changes, engine.removed)
        by_table: dict[str, dict[str, Any]] = {}
        for name in cs.dropped:
            by_table[name] = {"dropped": name not in engine.tables, "puts": [], "deletes": []}
        for name, rid in cs.deletes:
            by_table.setdefault(name, {"dropped": False, "puts": [], "deletes": []})
            by_table[name]["deletes"].append(rid)
        for name, _rid, record, _lease in cs.puts:
            by_table.setdefault(name, {"dropped": False, "puts": [], "deletes": []})
            by_table[name]["puts"].append(record)
        for name in cs.tables:
            by_table.setdefault(name, {"dropped": False, "puts": [], "deletes": []})
        for (name, rid), how in engine.expired.items():
            by_table[name].setdefault("expired", []).append([rid, how])
            by_table[name]["at"] = engine.expired_at
        for name, change in by_table.items():
            prev = self.last_seq.get(name, 0)
            self.last_seq[name] = cs.seq
            self._pending.append(encode_change(self._pack, cs.seq, prev, name, change))

    def discard(self) -> None:
        """Forget what the pass recorded (it was undone): nothing is sent, and each
        table's chain goes on from the last message really sent."""
        seen: set[str] = set()
        for _topic, body in self._pending:
            message = msgpack.unpackb(body, raw=False, strict_map_key=False)
            name = message["table"]
            if name not in seen:  # its first message this pass follows the last one sent
                seen.add(name)
                self.last_seq[name] = message["prev_seq"]
        self._pending.clear()

    def flush(self) -> None:
        """Send what the pass recorded; a full queue drops (the subscriber sees the gap)."""
        for sock in self.socks:
            for topic, body in self._pending:
                try:
                    sock.send(topic, zmq.SNDMORE | zmq.NOBLOCK)
                    sock.send(body, zmq.NOBLOCK)
                except zmq.Again:
                    self.dropped += 1
        self._pending.clear()

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)
        if self.endpoint.startswith("ipc://"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.endpoint[len("ipc://") :])
