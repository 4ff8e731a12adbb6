"""The change feed's wire format, for its writer (``server/feed.py``) and its readers
(:class:`~stateengine.client.watch.Watcher`, the HTTP gateway's feed hub).

The feed is an XPUB socket beside the request endpoint (:func:`feed_endpoint`). One
message per commit and table touched: topic ``<table>\\0`` (:func:`feed_topic`), body a
msgpack map::

    {"seq": S, "prev_seq": P, "table": T, "dropped": bool,
     "puts": [record, ...], "deletes": [id, ...], "expired": [[id, how], ...]}

``expired`` (and ``at``, the writer's wall clock it was made at) is present only in the
messages of an expiry commit (the commit no request drives: a lease or a TTL ran out);
``how`` is ``"lease"`` (the values the claim
overwrote put back: the record is among ``puts``), ``"dead"`` (the claim's dead-letter
fields set after ``max_attempts``: among ``puts``) or ``"ttl"`` (among ``deletes``).

``prev_seq`` is the ``seq`` of the previous message on the same table's topic (0 for
none), so a subscriber checks the chain and knows when it missed messages
(:func:`feed_gap`): a slow subscriber's messages are dropped at the high-water mark,
the writer never waits for one, and the subscriber must resynchronise from a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from stateengine import defaults

#: Messages queued per subscriber (writer side) or per socket (reader side) before drops.
FEED_HWM = defaults.FEED_HWM


def feed_endpoint(endpoint: str) -> str:
    """The feed's endpoint next to the request endpoint (``ipc://x.sock`` → ``x.sock.feed``,
    ``tcp://host:port`` → ``tcp://host:port+1``).

    :raises ValueError: for another transport.
    """
    if endpoint.startswith("ipc://"):
        return endpoint + ".feed"
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        return f"tcp://{host}:{int(port) + 1}"
    raise ValueError(f"no feed endpoint for {endpoint!r}")


def feed_topic(table: str) -> bytes:
    """The topic of *table*'s messages (subscribe to it; ``b""`` subscribes to all)."""
    return table.encode() + b"\0"


def encode_change(
    pack: Callable[[Any], bytes], seq: int, prev_seq: int, table: str, change: dict[str, Any]
) -> tuple[bytes, bytes]:
    """One message's ``(topic, body)``; *change* holds ``dropped``, ``puts``, ``deletes``."""
    body = pack({"seq": seq, "prev_seq": prev_seq, "table": table, **change})
    return feed_topic(table), body


def decode_change(body: bytes) -> dict[str, Any]:
    """A message body as its map (the keys of the module docstring)."""
    msg: dict[str, Any] = msgpack.unpackb(body, strict_map_key=False)
    return msg


def feed_gap(last_seq: int | None, prev_seq: int) -> bool:
    """Whether messages of a table were lost before one whose ``prev_seq`` is *prev_seq*,
    *last_seq* being the ``seq`` last seen (or started after) on that table (None: none)."""
    return last_seq is not None and prev_seq > last_seq
