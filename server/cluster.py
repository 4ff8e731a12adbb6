"""A cluster node: the same tables on every host, ordered by one Redis stream.

``stateengine serve --cluster redis://HOST:PORT/NAME`` runs a :class:`ClusterNode`: a
:class:`~stateengine.server.server.Server` (own data dir, arena, ipc endpoint, local
workers) whose pass does not apply its writes directly. It appends them to the stream
``stateengine:NAME:stream`` as one entry (``XADD``), reads the stream from the last
entry it applied, applies every entry in stream order, publishes to its arena and
answers its own requests once their entry is applied. Every node applies the same
entries in the same order to the same state, so every node computes the same replies.

Why it is deterministic: the engine's clock is the time of the entry being applied (the
stream id's milliseconds, given by Redis), never a node's wall clock, and expiry is one
commit made at the start of every entry (``expire_due(entry time)``). So that a deadline
fires on an idle stream, a node that sees one pass appends a *tick* (an entry with no
requests); ticks only advance the clock, so several nodes' ticks are harmless.

Why a poll and not ``XREAD BLOCK``: the writer's loop already wakes every
``poll_ms`` for its housekeeping; a non-blocking ``XREAD`` there keeps one thread and
one connection, and a node with requests reads the stream in the same round trip as its
``XADD`` (a pipeline). Another node's write is therefore seen within ``poll_ms``;
``SYNC`` (``client.sync()``) reads to the stream's end before answering.

Snapshots: every ``snapshot_seconds`` a node writes its whole state with the stream id
it covers to ``DATA_DIR/cluster.snapshot`` and to ``stateengine:NAME:snapshot`` (the
newest wins), reports the id it applied in ``stateengine:NAME:applied``, and trims the
stream (``XTRIM MINID``) behind both the newest snapshot and every live node's position.
A node starts from the newer of its own snapshot and Redis's, then replays the tail.

Failures: every Redis call is bounded (:func:`_connect`) and a failed one makes the node
refuse writes at once and try again after :data:`RETRY_SECONDS`. Through Sentinel
(``redis+sentinel://``) each new connection asks for the master, so a node follows a
failover. Once a second and after every outage the node checks that the stream still
holds the entry it applied last (:meth:`ClusterNode._position_lost`); if entries after
it were trimmed, or a failover or a data loss took it, the node reloads from the newest
snapshot in Redis into a new arena rather than skip entries or keep a lost one's effect.

``BACKUP`` on a node is a single server's (server/backup.py): the node's state at the
entry it applied, forked and written under its data dir at the end of the pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

import msgpack
import redis
import redis.sentinel
import zmq
from redis.backoff import NoBackoff
from redis.retry import Retry

from stateengine import command_table
from stateengine.errors import (
    ServerUnavailable,
    StateEngineError,
)
from stateengine.runtime import discovery as paths
from stateengine.server.backup import BACKUP_COMMAND
from stateengine.server.engine import Id
from stateengine.server.persist_base import (
    decode_change_set,
    encode_change_set,
    lease_out,
    packb,
    unpackb,
)
from stateengine.server.publish import ArenaPublisher
from stateengine.server.server import Server, _drain

log = logging.getLogger("stateengine.cluster")

#: The command a node answers itself (a single server's engine answers it null): read
#: the stream to its end, then answer (``client.sync()``).
SYNC_COMMAND = command_table.COMMANDS["SYNC"].name
#: Entries read per ``XREAD``; a pass reads again while a read comes back full.
READ_COUNT = 1000
#: A node's reported position older than this no longer holds the stream's trimming.
PROGRESS_TTL = 300.0
#: Seconds between attempts to reach Redis again after a failure (reads go on locally).
RETRY_SECONDS = 0.5
#: Seconds between checks that the stream still holds this node's position (and after
#: every return of Redis): else the node reloads from the newest snapshot in Redis.
VERIFY_SECONDS = 1.0
#: ``STATS`` counts the entries a node is behind up to this many (one ``XRANGE``).
LAG_COUNT = 10_000
SNAPSHOT_FILE = "cluster.snapshot"
NODE_FILE = "cluster.node"
#: A pass's writes go in entries of at most this many bytes of requests (a request
#: larger than that alone in its own): Redis takes a value of up to 512 MB, and a node
#: reads 1000 entries at a time.
ENTRY_BYTES = 4 * 1024 * 1024
_WRITES = command_table.writes()
#: Test-only fault switches (comma-separated), each defeating one guarantee so that a
#: test can show it fails without it: ``wall-clock`` (the engine reads the node's clock,
#: not the entry's), ``no-tail`` (a start skips the stream's entries after the snapshot),
#: ``no-idle-read`` (an idle node does not read the stream: only a request makes it),
#: ``no-verify`` (a node never checks that the stream still holds its position),
#: ``no-timeout`` (a Redis call waits for its reply without a bound).
FAULTS: Final = frozenset(os.environ.get("STATEENGINE_CLUSTER_FAULTS", "").split(",")) - {""}


@dataclass(frozen=True)
class ClusterAddress:
    """Where a cluster's Redis is: one address, or Sentinels and a master's name."""

    name: str
    host: str = "127.0.0.1"
    port: int = 6379
    #: ``redis+sentinel://``: the Sentinels to ask for the master named *master*
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""


def _host_port(text: str, default: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, ""
    if not host or (port and not port.isdigit()):
        raise ValueError(text)
    return host.strip("[]"), int(port) if port else default


def parse_cluster_url(url: str) -> ClusterAddress:
    """``redis://HOST:PORT/NAME`` or
    ``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER/NAME`` (Sentinels' port default
    26379) → a :class:`ClusterAddress`.

    :raises ValueError: another scheme, no cluster name, no master name.
    """
    parts = urlsplit(url)
    path = parts.path.strip("/").split("/")
    try:
        if parts.scheme == "redis" and len(path) == 1 and path[0] and parts.hostname:
            return ClusterAddress(path[0], parts.hostname, parts.port or 6379)
        if parts.scheme == "redis+sentinel" and len(path) == 2 and all(path):
            sentinels = tuple(_host_port(h, 26379) for h in parts.netloc.split(","))
            return ClusterAddress(path[1], sentinels=sentinels, master=path[0])
    except ValueError:
        pass
    raise ValueError(
        f"--cluster {url!r}: expected redis://HOST:PORT/NAME or "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER/NAME"
    )


def _connect(address: ClusterAddress) -> redis.Redis:
    """The node's one Redis client. Every call is bounded: 0.5 s to connect, 3 s for a
    reply (above ``WAIT``'s 1 s). No retries: an ``XADD`` retried after a lost reply
    would append the writes twice; a failed call is answered ``ServerUnavailable`` at
    once instead. Through Sentinel, a connection asks the Sentinels for the master when
    it opens; a failed call closes it, so the next one follows a failover."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 0.5,
        "socket_timeout": None if "no-timeout" in FAULTS else 3.0,
        "retry": Retry(NoBackoff(), 0),
    }
    if not address.sentinels:
        return redis.Redis(host=address.host, port=address.port, **options)
    sentinel = redis.sentinel.Sentinel(
        address.sentinels,
        sentinel_kwargs={"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        **options,
    )
    return cast(redis.Redis, sentinel.master_for(address.master, **options))


def stream_time(entry_id: bytes | str) -> float:
    """The clock of an entry: its id's milliseconds, in seconds."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0]) / 1000


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id as a comparable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, n = text.partition("-")
    return int(ms), int(n or 0)


def _requests(raw: bytes) -> list[Any]:
    """An entry's requests: msgpack objects back to back (as the log's codec reads)."""
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, use_list=True, max_buffer_size=len(raw) + 1
    )
    unpacker.feed(raw)
    return list(unpacker)


def _writes(request: dict[str, Any]) -> bool:
    """Whether *request* may change the state, so it goes through the stream (a BATCH
    with any write; an unknown command is answered locally with its error)."""
    name = request.get("command")
    if name == "BATCH":
        subs = request.get("commands")
        return isinstance(subs, list) and any(
            isinstance(sub, dict) and sub.get("command") in _WRITES for sub in subs
        )
    return name in _WRITES


@dataclass
class _Local:
    """One of this node's requests: where to answer it, and how."""

    sock: zmq.Socket[bytes]
    envelope: list[bytes]
    request: dict[str, Any]
    as_json: bool
    #: a blocking claim's end (wall clock), else None
    deadline: float | None = None


class ClusterNode(Server):
    """A server whose writes go through a Redis stream shared with other nodes.

    :param cluster: ``redis://HOST:PORT/NAME``.
    :param replicas: with N > 0, a write is answered only once ``WAIT N`` says N
        replicas have its entry (else ``ServerUnavailable``: it may still apply).
    :param snapshot_seconds: how often a node writes its snapshot (when it moved on).
    """

    def __init__(
        self,
        *args: Any,
        cluster: str,
        replicas: int = 0,
        snapshot_seconds: float = 30.0,
        poll_ms: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.store is not None:
            raise ValueError("a cluster node keeps no --store: the stream is its log")
        address = parse_cluster_url(cluster)
        self.name = address.name
        self.url = cluster
        self.replicas = replicas
        self.snapshot_seconds = snapshot_seconds
        self.poll_ms = poll_ms
        self.redis = _connect(address)
        prefix = f"stateengine:{self.name}"
        self.stream_key = f"{prefix}:stream"
        self.snapshot_key = f"{prefix}:snapshot"
        self.progress_key = f"{prefix}:applied"
        self.node_id = os.urandom(8).hex().encode()
        self.applied = b"0-0"
        #: the newest stream id this node has seen (its own read or append)
        self.stream_last = b"0-0"
        self._entry_time = 0.0
        self.engine.clock = time.time if "wall-clock" in FAULTS else self._clock
        #: why Redis cannot be reached (reads are answered from local state), or None
        self.stale: str | None = None
        self._retry_at = 0.0
        #: when this node last read the stream to its end (monotonic): how stale it may be
        self._read_at = time.monotonic()
        #: entry id → this node's requests in it, in entry order
        self._mine: dict[bytes, list[_Local]] = {}
        #: blocking claims found nothing: resubmitted when their table is written
        self._waiters: list[_Local] = []
        self._due: list[_Local] = []
        self._tick_in_flight = False
        self._snapshot_at = time.monotonic() + snapshot_seconds
        self._snapshot_id = b"0-0"
        self._verify_at = 0.0
        #: why this node last reloaded from the snapshot in Redis, or None
        self.reloaded: str | None = None
        self.cluster_stats = {
            "entries_appended": 0,
            "entries_applied": 0,
            "ticks": 0,
            "reloads": 0,
        }

    def _clock(self) -> float:
        """The engine's clock: the time of the entry being applied."""
        return self._entry_time

    # --- start: snapshot, then the tail -------------------------------------------------

    def start(self) -> None:
        self.lock()
        self.node_id = self._own_id()
        try:
            self._load_snapshot()
            self._verify()
            if "no-tail" in FAULTS:  # read only what comes after the start, as "$" would
                info: Any = self.redis.xinfo_stream(self.stream_key)
                self.applied = self.stream_last = info["last-generated-id"]
            self._catch_up()
            self._report_position()  # holds the stream's trimming from now on
        except redis.RedisError as exc:
            raise OSError(f"--cluster {self.url}: cannot reach Redis: {exc}") from exc
        log.info(
            "cluster %s: node %s at %s (seq %d)",
            self.name,
            self.node_id.decode(),
            self.applied.decode(),
            self.engine.seq,
        )
        super().start()

    def _own_id(self) -> bytes:
        """This data dir's node id (``DATA_DIR/cluster.node``, made once): a node
        restarted on its data dir reports its position under the same id, so the position
        its previous process reported stops holding the stream's trimming."""
        path = self.data_dir / NODE_FILE
        with contextlib.suppress(OSError):
            known = path.read_bytes().strip()
            if known:
                return known
        paths.write_private_file(path, self.node_id)
        return self.node_id

    def _load_snapshot(self) -> None:
        """Start from the newer of this data dir's snapshot and the cluster's."""
        candidates: list[bytes] = []
        with contextlib.suppress(OSError):
            candidates.append((self.data_dir / SNAPSHOT_FILE).read_bytes())
        remote = cast(bytes | None, self.redis.get(self.snapshot_key))
        if remote is not None:
            candidates.append(remote)
        best: tuple[bytes, bytes] | None = None
        for blob in candidates:
            snapshot = self._snapshot_of(blob)
            if snapshot is not None and (best is None or id_key(snapshot[0]) > id_key(best[0])):
                best = snapshot
        if best is not None:
            self._restore(best)

    def _snapshot_of(self, blob: bytes) -> tuple[bytes, bytes] | None:
        """A snapshot's ``(entry id, encoded state)``; None if of another cluster."""
        entry_id, payload, name = unpackb(blob)
        if name != self.name:  # this data dir served another cluster: not its state
            log.warning("cluster %s: ignoring a snapshot of cluster %s", self.name, name)
            return None
        return (entry_id.encode() if isinstance(entry_id, str) else entry_id), payload

    def _restore(self, snapshot: tuple[bytes, bytes] | None) -> None:
        """Replace the engine's state with *snapshot*'s (None: empty, before the stream)."""
        engine = self.engine
        engine.tables = {}
        engine.seq = 0
        entry_id = b"0-0"
        if snapshot is not None:
            entry_id = snapshot[0]
            engine.apply_change_set(decode_change_set(snapshot[1]))
            log.info("cluster %s: snapshot at %s loaded", self.name, entry_id.decode())
        engine.rebuild_deadlines()
        engine.changes, engine.table_changes, engine.removed = {}, set(), set()
        self.applied = self.stream_last = self._snapshot_id = entry_id
        self._entry_time = stream_time(entry_id)

    def _position_lost(self) -> str | None:
        """Why the stream no longer holds what comes after this node's position, or None.

        A live node's position holds the trimming, so its entry stays in the stream. It
        is gone when entries after it were trimmed (the node was away longer than
        :data:`PROGRESS_TTL`) or when the stream never kept it: a failover promoted a
        replica that had not received it, or Redis lost its data. Either way, reading on
        would skip entries or keep an effect no other node has.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_stream(self.stream_key)
        pipe.xrange(self.stream_key, self.applied, self.applied)
        info, here = pipe.execute(raise_on_error=False)
        if isinstance(here, Exception):
            raise here
        if here:
            return None
        position = id_key(self.applied)
        first: tuple[int, int] | None = None
        trimmed = False  # XTRIM only ever removes a prefix: the entries before `first`
        if not isinstance(info, Exception):  # an error: no stream at all
            entry = info.get("first-entry")
            first = id_key(entry[0]) if entry else None
            trimmed = info.get("entries-added", 0) > info.get("length", 0)
        if position == (0, 0) and not trimmed:
            return None
        if trimmed and (first is None or first > position):
            return (
                f"entries after {self.applied.decode()}, this node's last applied entry, "
                "were trimmed from the stream"
            )
        return (
            f"the stream does not hold {self.applied.decode()}, this node's last applied "
            "entry (a failover to a replica that lacked it, or a Redis that lost its data)"
        )

    def _verify(self) -> None:
        """Reload from the newest snapshot in Redis if the stream lost this node's
        position, rather than skip entries or keep a lost one's effect.

        :raises redis.RedisError: Redis did not answer.
        """
        self._verify_at = time.monotonic() + VERIFY_SECONDS
        if "no-verify" in FAULTS:
            return
        reason = self._position_lost()
        if reason is None:
            return
        remote = cast(bytes | None, self.redis.get(self.snapshot_key))
        if remote is None and not self.redis.exists(self.stream_key):
            # No stream and no snapshot: a new or emptied Redis, not this cluster's. Wiping
            # every node to match it is the operator's call (docs/cluster.md).
            raise redis.RedisError(
                f"Redis holds no stream nor snapshot of cluster {self.name} (it lost its "
                f"data?), and this node applied up to {self.applied.decode()}"
            )
        log.error("cluster %s: %s; reloading from the newest snapshot in Redis", self.name, reason)
        self.reloaded = reason
        self.cluster_stats["reloads"] += 1
        self._restore(self._snapshot_of(remote) if remote is not None else None)
        # This node's writes appended but not applied: their entries may be gone.
        for locals_ in self._mine.values():
            for local in locals_:
                self._refuse(local, ServerUnavailable(f"cluster {self.name}: {reason}"))
        self._mine = {}
        self._tick_in_flight = False
        with contextlib.suppress(OSError):  # it may hold the lost entries' effects
            (self.data_dir / SNAPSHOT_FILE).unlink()
        if self._sock is not None:  # started: the arena already holds the old state
            self._renew_arena()

    def _renew_arena(self) -> None:
        """Publish the reloaded state to a new arena: the old one may stand at a higher
        ``seq`` (the lost entries' commits) and an arena's versions only go up. Workers
        find the new one in ``server.json`` (re-checked at least once a second)."""
        old = self.publisher
        if not isinstance(old, ArenaPublisher):
            return
        try:
            new = old.renewed()
            new.publish(self.engine.full_change_set())
        except Exception:
            log.exception("cluster %s: no new arena; clients read via the socket", self.name)
            new = None
        self.publisher = new
        self._supersede_previous_arena()
        self._write_server_file()
        old.close(unlink=True)

    # --- the loop -----------------------------------------------------------------------

    def serve_forever(self, poll_ms: int = 100) -> None:
        super().serve_forever(self.poll_ms)

    def _next_wake(self) -> float | None:
        # Deadlines are judged by the wall clock in run_pass (a tick), not by the engine's
        # clock, which stands still between entries; the loop polls every poll_ms.
        return None

    def run_pass(self) -> int:
        """Drain; append the writes as one entry; apply the stream; answer."""
        assert self._sock is not None
        received: list[tuple[zmq.Socket[bytes], list[bytes]]] = []
        for sock in (self._sock, self._tcp) if self._tcp is not None else (self._sock,):
            _drain(sock, received, self.max_pass)
        # Redis failed less than RETRY_SECONDS ago: nothing is asked of it (an unreachable
        # host costs a connect timeout per attempt), writes are refused at once.
        resting = self.stale is not None and time.monotonic() < self._retry_at
        if (resting or "no-idle-read" in FAULTS) and not received:
            return 0
        writes: list[_Local] = []
        reads: list[_Local] = []
        syncs: list[_Local] = []
        backups: list[_Local] = []
        for sock, frames in received:
            local = self._decode(sock, frames)
            if local is None:
                continue
            command = local.request.get("command")
            if command == SYNC_COMMAND:
                try:  # its arguments checked as the engine would (it takes none)
                    self.engine._lookup(local.request, nested=False)
                except StateEngineError as exc:
                    self._refuse(local, exc)
                    continue
                syncs.append(local)
            elif command == BACKUP_COMMAND:
                backups.append(local)
            elif _writes(local.request):
                try:  # refused before it enters the stream: the engine's dispatch checks
                    self.engine._lookup(local.request, nested=False)
                    if local.request.get("wait") is not None:
                        wait = self.engine.wait_arg(local.request)
                        local.deadline = time.time() + (wait or 0)
                except StateEngineError as exc:
                    self._refuse(local, exc)
                    continue
                writes.append(local)
            else:
                reads.append(local)
        writes = self._due + writes  # parked claims first: the earliest is answered first
        self._due = []
        if not resting and (self.stale is not None or time.monotonic() >= self._verify_at):
            try:  # back from an outage, or once a second: is the position still there?
                self._verify()
            except redis.RedisError as exc:
                self._failed(exc)
                resting = True
        if resting:
            for local in writes:
                self._refuse(local, ServerUnavailable(self._unavailable()))
            writes = []
        tick = not resting and self._tick_due()
        caught_up = False
        if writes or tick:
            entries = self._append(writes, tick)
            if entries is not None:
                if entries:
                    self._apply(entries)
                caught_up = len(entries) < READ_COUNT or self._catch_up()
        elif not resting:
            caught_up = self._catch_up()
        if caught_up:
            self._read_at = time.monotonic()
        for local in reads:
            self._send(local.sock, local.envelope, self._answer(local.request, local.as_json))
        for local in syncs:
            if caught_up:
                reply: dict[str, Any] = {
                    "ok": True,
                    "result": {"applied": self.applied.decode()},
                    "seq": self.engine.seq,
                }
                if "req_id" in local.request:
                    reply["req_id"] = local.request["req_id"]
                self._send(local.sock, local.envelope, self._encode(reply, local.as_json))
            else:
                self._refuse(local, ServerUnavailable(self._unavailable()))
        for local in backups:  # of the state at ``applied``, as a single server's at its seq
            refused = self._want_backup(local.sock, local.envelope, local.request, local.as_json)
            if refused is not None:
                self._send(local.sock, local.envelope, refused)
        if self._backup_waiters:
            self._start_backups()
        self._expire_waiters()
        if caught_up and time.monotonic() >= self._snapshot_at:
            self._snapshot()
        self.stats["requests"] += len(received)
        self.stats["passes"] += 1
        self._last_pass = len(received)
        return len(received)

    def _decode(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> _Local | None:
        """One ROUTER message as a request (None: answered here with its error)."""
        envelope, request, as_json, refused = self._parse(frames, echo_req_id=True)
        if request is None:
            assert refused is not None
            self._send(sock, envelope, refused)
            return None
        return _Local(sock, envelope, request, as_json)

    def _refuse(self, local: _Local, exc: StateEngineError) -> None:
        reply: dict[str, Any] = {"ok": False, "error": exc.to_wire()}
        if "req_id" in local.request:
            reply["req_id"] = local.request["req_id"]
        self._send(local.sock, local.envelope, self._encode(reply, local.as_json))

    def _unavailable(self) -> str:
        return (
            f"cluster {self.name}: Redis unreachable ({self.stale}); writes are refused, "
            "reads are answered from this node's state (stale: see stats)"
        )

    def _tick_due(self) -> bool:
        """Whether a deadline this node knows of has passed on the wall clock."""
        if self._tick_in_flight:
            return False
        deadline = self.engine.next_deadline()
        return deadline is not None and deadline <= time.time()

    def _failed(self, exc: Exception) -> None:
        if self.stale is None:
            log.error("cluster %s: Redis unreachable, writes refused: %s", self.name, exc)
        self.stale = str(exc) or type(exc).__name__
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _append(self, writes: list[_Local], tick: bool) -> list[Any] | None:
        """``XADD`` this pass's writes (one entry, or one per :data:`ENTRY_BYTES` of
        requests; a tick if none) and read the stream after the last applied entry, in
        the same round trip (a pipeline); return the entries read, or None when Redis
        failed (each write is then answered ``ServerUnavailable`` at once)."""
        chunks: list[tuple[list[_Local], list[bytes]]] = []
        size = 0
        for local in writes:
            packed = packb(local.request)
            if not chunks or size + len(packed) > ENTRY_BYTES:
                chunks.append(([], []))
                size = 0
            chunks[-1][0].append(local)
            chunks[-1][1].append(packed)
            size += len(packed)
        pipe = self.redis.pipeline(transaction=False)
        for _, packed_requests in chunks or [([], [])]:
            fields = {"n": self.node_id}
            if packed_requests:
                fields["r"] = b"".join(packed_requests)  # msgpack objects back to back
            pipe.xadd(self.stream_key, fields)  # type: ignore[arg-type]
        if self.replicas:
            pipe.wait(self.replicas, 1000)
        pipe.xread({self.stream_key: self.applied}, count=READ_COUNT)
        try:
            results: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)
            for local in writes:
                self._refuse(local, ServerUnavailable(self._unavailable()))
            return None
        self.stale = None
        self.cluster_stats["entries_appended"] += max(1, len(chunks))
        acked = results[len(chunks) or 1] if self.replicas else None
        if acked is not None and acked < self.replicas:
            # In the stream (it will apply everywhere) but not on enough replicas: not
            # acknowledged, as a timeout would not be.
            for local in writes:
                self._refuse(
                    local,
                    ServerUnavailable(
                        f"cluster {self.name}: WAIT: {acked} of {self.replicas} "
                        "replicas have the write within 1 s; it may still apply"
                    ),
                )
        else:
            for (locals_, _), entry_id in zip(chunks, results, strict=False):
                self._mine[cast(bytes, entry_id)] = locals_
        if not writes:
            self._tick_in_flight = True
            self.cluster_stats["ticks"] += 1
        read = results[-1]
        return list(read[0][1]) if read else []

    def _catch_up(self) -> bool:
        """Read and apply the stream to its end; whether Redis answered."""
        try:
            for _ in range(1_000_000):  # bounded: a stream this long is read in passes
                reply: Any = self.redis.xread({self.stream_key: self.applied}, count=READ_COUNT)
                entries = reply[0][1] if reply else []
                if entries:
                    self._apply(entries)
                if len(entries) < READ_COUNT:
                    break
        except redis.RedisError as exc:
            self._failed(exc)
            return False
        self.stale = None
        return True

    def _apply(self, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Apply entries in stream order, publish once, answer this node's requests."""
        engine = self.engine
        feed = self.feed if self.feed is not None and self.feed.active else None
        dirty_records: dict[tuple[str, Id], None] = {}
        dirty_tables: set[str] = set()
        removed: set[tuple[str, Id]] = set()
        replies: list[tuple[_Local, bytes]] = []

        def absorb() -> None:
            if not (engine.changes or engine.table_changes):
                return
            if feed is not None:
                feed.record_commit(engine)
            dirty_records.update(engine.changes)
            dirty_tables.update(engine.table_changes)
            removed.update(engine.removed)
            engine.changes, engine.table_changes, engine.removed = {}, set(), set()

        for entry_id, fields in entries:
            self._entry_time = stream_time(entry_id)
            if engine.expire_due(self._entry_time):
                absorb()
            mine = self._mine.pop(entry_id, None) if fields.get(b"n") == self.node_id else None
            raw = fields.get(b"r")
            requests = _requests(raw) if raw is not None else []
            for i, request in enumerate(requests):
                reply = engine.execute(request)
                absorb()
                if mine is not None:
                    self._reply_to(mine[i], reply, replies)
            if raw is None and fields.get(b"n") == self.node_id:
                self._tick_in_flight = False
            self.applied = entry_id
            if id_key(entry_id) > id_key(self.stream_last):
                self.stream_last = entry_id
            self.cluster_stats["entries_applied"] += 1
        if dirty_records or dirty_tables:
            cs = engine.change_set(dirty_records, dirty_tables, removed)
            # Before start() the arena gets the whole state at once (Server.start).
            if cs and self.publisher is not None and self._sock is not None:
                self._publish(cs)
            touched = {name for name, _ in dirty_records} | dirty_tables
            still: list[_Local] = []
            for waiter in self._waiters:
                (self._due if waiter.request.get("state") in touched else still).append(waiter)
            self._waiters = still
        if feed is not None:
            feed.flush()
        for local, body in replies:  # after the publish: read-your-writes from the arena
            self._send(local.sock, local.envelope, body)

    def _reply_to(
        self, local: _Local, reply: dict[str, Any], replies: list[tuple[_Local, bytes]]
    ) -> None:
        """Encode the reply to one of this node's requests now (it holds the stored
        records, which the next entry may change), or park a blocking claim that found
        nothing: it is submitted again when an entry writes its table."""
        if (
            local.deadline is not None
            and reply.get("ok")
            and reply.get("result") is None
            and time.time() < local.deadline
        ):
            self._waiters.append(local)
            return
        replies.append((local, self._encode(reply, local.as_json)))

    def _expire_waiters(self) -> None:
        """Answer null the parked claims whose wait ended (they found nothing)."""
        now = time.time()
        for waiter in [w for w in self._waiters if w.deadline is not None and w.deadline <= now]:
            self._waiters.remove(waiter)
            self._answer_null(waiter)

    def _answer_null(self, waiter: _Local) -> None:
        self._send_found_nothing(waiter.sock, waiter.envelope, waiter.request, waiter.as_json)

    def _release_parked(self) -> None:
        """On stop: answer the writes already appended (one last read of the stream),
        then every parked claim null, as its wait would."""
        if self._mine:
            self._catch_up()
        for waiter in self._waiters + self._due:
            self._answer_null(waiter)
        self._waiters, self._due = [], []
        super()._release_parked()

    # --- snapshots and trimming ---------------------------------------------------------

    def _snapshot(self) -> None:
        """Write the state at ``applied`` here and to Redis; trim behind every node."""
        self._snapshot_at = time.monotonic() + self.snapshot_seconds
        applied = self.applied
        try:
            self._report_position()
            if applied == self._snapshot_id:
                return
            state = encode_change_set(self.engine.full_change_set())
            blob = packb([applied, state, self.name])
            paths.write_private_file(self.data_dir / SNAPSHOT_FILE, blob)
            newest = cast(bytes | None, self.redis.get(self.snapshot_key))
            if newest is None or id_key(unpackb(newest)[0]) < id_key(applied):
                self.redis.set(self.snapshot_key, blob)
                newest = blob
            self._snapshot_id = applied
            self._trim(unpackb(newest)[0])
        except (redis.RedisError, OSError) as exc:
            self.repeat_log.note("cluster-snapshot", logging.ERROR, f"snapshot: {exc}")

    def _report_position(self) -> None:
        """Say in Redis which entry this node applied: the stream is not trimmed past it
        (for :data:`PROGRESS_TTL` seconds)."""
        self.redis.hset(self.progress_key, self.node_id, f"{self.applied.decode()} {time.time()}")

    def _trim(self, snapshot_id: bytes | str) -> None:
        """``XTRIM MINID``: behind the newest snapshot and every live node's position."""
        floor = id_key(snapshot_id)
        now = time.time()
        for node, value in cast(dict[bytes, bytes], self.redis.hgetall(self.progress_key)).items():
            position, _, at = value.decode().partition(" ")
            if now - float(at or 0) > PROGRESS_TTL:
                self.redis.hdel(self.progress_key, node)
                continue
            floor = min(floor, id_key(position))
        if floor > (0, 0):
            self.redis.xtrim(self.stream_key, minid=f"{floor[0]}-{floor[1]}", approximate=False)

    # --- figures ------------------------------------------------------------------------

    def digest(self) -> str:
        """sha256 of the whole state (``seq``; tables by name: meta, records in order,
        leases): equal on nodes that applied the same entries. Tables are sorted: their
        order in a change set follows a set's, which differs between processes."""
        engine = self.engine
        state = [
            engine.seq,
            [
                [
                    name,
                    table.state(),
                    [
                        [rid, rec, lease_out(table.leases.get(rid))]
                        for rid, rec in table.records.items()
                    ],
                ]
                for name, table in sorted(engine.tables.items())
            ],
        ]
        return hashlib.sha256(packb(state)).hexdigest()

    def _stats(self) -> dict[str, Any]:
        stats = super()._stats()
        length = None
        behind: int | None = None  # unknown while Redis is unreachable
        if self.stale is None:  # where the stream is now: how far behind this node is
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.xinfo_stream(self.stream_key)
                pipe.xrange(self.stream_key, f"({self.applied.decode()}", count=LAG_COUNT)
                info, tail = pipe.execute(raise_on_error=False)
                if isinstance(tail, Exception):
                    raise tail
                behind = len(tail)
                if not isinstance(info, Exception):  # else no stream yet: nothing behind
                    length = info["length"]
                    last = info["last-generated-id"]
                    if id_key(last) > id_key(self.stream_last):
                        self.stream_last = last
            except redis.RedisError:
                pass  # said by stale at the next read; STATS is answered regardless
        behind_ms = max(0, id_key(self.stream_last)[0] - id_key(self.applied)[0])
        stats["cluster"] = {
            "name": self.name,
            "url": self.url,
            "node": self.node_id.decode(),
            "applied": self.applied.decode(),
            "stream_last": self.stream_last.decode(),
            "behind_ms": behind_ms,
            "behind_entries": behind,
            "stream_length": length,
            "stale": self.stale,
            "reloaded": self.reloaded,
            "read_age_ms": round((time.monotonic() - self._read_at) * 1000),
            "parked_claims": len(self._waiters) + len(self._due),
            "next_deadline": self.engine.next_deadline(),
            "replicas": self.replicas,
            "snapshot": self._snapshot_id.decode(),
            "digest": self.digest(),
            **self.cluster_stats,
        }
        return stats


def snapshot_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where a node keeps its own snapshot."""
    return Path(data_dir) / SNAPSHOT_FILE
