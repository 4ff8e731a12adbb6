"""The change feed, fanned out to the gateway's SSE clients.

One upstream SUB socket on the writer's feed (opened by the first listener, closed after
the last), decoded by the shared codec of :mod:`stateengine.runtime.feed`
(``decode_change``, ``feed_gap``: the same gap rule as ``client/watch.py``), re-encoded
as server-sent events into one bounded queue per listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from stateengine.protocol import encode_reply
from stateengine.runtime.feed import FEED_HWM, decode_change, feed_gap

if TYPE_CHECKING:
    from stateengine.app.gateway.app import Gateway

__all__ = ["SSE_PING_SECONDS", "SSE_QUEUE", "FeedHub", "Listener", "sse"]

log = logging.getLogger("stateengine.gateway")

SSE_QUEUE = 1024  # events queued per SSE client before it misses some (flagged as a gap)
SSE_PING_SECONDS = 15.0


@dataclass(eq=False)
class Listener:
    """One SSE client: a bounded queue of encoded events (None: the gateway stops)."""

    tables: frozenset[str] | None
    records: bool
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(SSE_QUEUE))
    missed: bool = False

    def offer(self, table: str, full: str, brief: str) -> None:
        if self.tables is not None and table not in self.tables:
            return
        event = full if self.records else brief
        if self.missed:
            event = event.replace('"gap": false', '"gap": true', 1)
        try:
            self.queue.put_nowait(event)
            self.missed = False
        except asyncio.QueueFull:
            self.missed = True  # the next event it gets says so: resynchronise

    def close(self) -> None:
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


class FeedHub:
    """Subscribes to the writer's feed while at least one SSE client listens.

    The writer builds feed messages only while it has subscribers (``server/feed.py``),
    so an idle dashboard costs the writer nothing: the upstream SUB socket is opened by
    the first listener and closed about a second after the last one leaves.
    """

    def __init__(self, endpoint: str, gateway: Gateway) -> None:
        self.endpoint = endpoint
        self.gateway = gateway
        self.listeners: set[Listener] = set()
        self.events = 0
        self.upstream_gaps = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def add(self, tables: frozenset[str] | None, records: bool) -> Listener:
        listener = Listener(tables, records)
        if self._closed:  # the gateway is stopping: the stream ends after its hello
            listener.close()
            return listener
        self.listeners.add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return listener

    def remove(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    async def _run(self) -> None:
        ctx = self.gateway.zmq_context
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, FEED_HWM)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.endpoint)
        last_seq: dict[str, int] = {}
        try:
            while self.listeners and not self._closed:
                if not await sock.poll(1000):
                    continue
                _topic, body = await sock.recv_multipart()
                msg = decode_change(body)
                table = msg["table"]
                last = last_seq.get(table)
                gap = feed_gap(last, msg["prev_seq"])
                self.upstream_gaps += gap
                last_seq[table] = msg["seq"]
                self._broadcast(msg, gap)
        except Exception:  # a broken feed must not take the gateway down; listeners resync
            log.exception("change feed reader failed")
        finally:
            sock.close(linger=0)

    def _broadcast(self, msg: dict[str, Any], gap: bool) -> None:
        self.events += 1
        table = msg["table"]
        info = self.gateway.arena_table_info(table)
        event: dict[str, Any] = {
            "seq": msg["seq"],
            "prev_seq": msg["prev_seq"],
            "table": table,
            "dropped": msg["dropped"],
            "gap": False,
            "size": None if info is None else info["size"],
            "version": None if info is None else info["version"],
            "put_ids": [r.get("id") for r in msg["puts"]],
            "deletes": msg["deletes"],
        }
        if "expired" in msg:
            event["expired"] = msg["expired"]
        brief = sse("change", event, msg["seq"])
        event["puts"] = msg["puts"]
        full = sse("change", event, msg["seq"])
        if gap:  # the upstream lost messages: every listener of the table must resync
            brief = brief.replace('"gap": false', '"gap": true', 1)
            full = full.replace('"gap": false', '"gap": true', 1)
        for listener in list(self.listeners):
            listener.offer(table, full, brief)

    def close(self) -> None:
        """End every stream and stop reading the feed (idempotent)."""
        self._closed = True
        for listener in list(self.listeners):
            listener.close()
        if self._task is not None:
            self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the upstream socket is closed (before the ZMQ context terminates)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def sse(event: str, data: dict[str, Any], id_: int | None = None) -> str:
    """One server-sent event (``data`` is one JSON line: JSON never holds a raw newline)."""
    head = f"event: {event}\n" + (f"id: {id_}\n" if id_ is not None else "")
    return head + "data: " + encode_reply(data, as_json=True).decode() + "\n\n"
