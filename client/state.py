"""Manifest state for worker processes: the ``InMemory`` store is the server's arena.

:class:`State` is :class:`stateengine.manifests.state.State` (the seed's ``get``/``set``/
``delete``/``exists``) with its ``InMemory`` client replaced by :class:`ArenaStore`: every
``InMemory`` store key is one record of the server table ``$manifest``, so a value stored
by one worker is visible to every worker, read lock-free from the shared-memory arena and
written through the writer like any other record (and persisted by the server's store).

**The ``$manifest`` table.** Created on first write (``StateExists`` ignored) with the
declared schema :data:`SCHEMA`; one record per store key::

    {"id": <store key>, "status": "ready" | "loading" | "error", "value": <any>,
     "expires": <wall-clock deadline or None>, "owner": "<pid>:<nonce>" | None,
     "error": <message> | None}

Only a ``ready`` record whose ``expires`` has not passed is a value: ``loading`` and
``error`` records, and expired ones, read as absent (``get`` misses, ``exists`` is False,
``version_of`` is None). An ``error`` record keeps the failed load's error as
``value = {"type": T, "message": M}`` (the wire form of the exception).

**Instance cache.** ``version_of(key)`` is the record's ``_version``, read from the
arena, checked on every cache hit: another worker's ``set``/``delete`` and TTL expiry
are seen by the next ``get``.

**One load per miss, across processes** (SPEC §4). When ``get`` misses a standalone
key whose ``_store`` is ``InMemory`` and whose ``_load`` names a client, the worker
tries to take a *load lease*: ``create_record`` of a ``loading`` record expiring
``load_timeout`` seconds from now. The winner runs the load in its own process (never
in the writer) and replaces the lease with the ``ready`` value (``if_version`` of its
lease) — or with an ``error`` record when the load fails. The others poll the arena
(backoff 0.5 ms → 20 ms) until the record turns ``ready`` (they return its value) or
``error`` (they raise the same exception class with the holder's message), for at
most ``wait_timeout`` seconds (then :class:`LoadTimeout`). A lease whose ``expires``
passed while still ``loading`` (its holder died, or overran ``load_timeout``) is taken
over by a waiter with ``set_record(..., if_version=...)``; a ``VersionConflict`` means
another waiter won, and the loser keeps waiting. An ``error`` record, or an expired
value, is claimable the same way: the next ``get`` after a failed load loads again.

Not single-flighted (each worker loads on its own, as in one process): fields of a
container (their value lives in the container's record), keys stored in another store
(``KVS``, ``File``, ``Http``) and store-less keys.

Sharp edges:

* ``load_timeout`` must exceed the slowest load: a lease is not renewed, so a load that
  takes longer is taken over by a waiter and runs twice (the first result to land wins;
  the later one is returned to its caller but not stored).
* ``expires`` compares wall clocks (``time.time``) of processes on one machine, like the
  server's leases; a wall-clock jump moves every deadline with it.
* A State is one process's and one thread's (as the :class:`Client` it uses).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from stateengine.client.client import Client
from stateengine.client.commands import CommandsMixin, Record
from stateengine.errors import (
    BadRequest,
    DuplicateId,
    LoadError,
    RecordNotFound,
    ServerUnavailable,
    SnapshotExpired,
    StateEngineError,
    StateExists,
    StateNotFound,
    StoreError,
    StoreSerializeError,
    VersionConflict,
    from_wire,
)
from stateengine.manifests.parser import Manifest, Node
from stateengine.manifests.state import MISS
from stateengine.manifests.state import State as CoreState

#: The table that holds every ``InMemory`` manifest value.
TABLE: Final = "$manifest"
#: Its declared schema.
SCHEMA: Final = {
    "id": "string",
    "value": "any",
    "status": "string",
    "expires": "float?",
    "owner": "string?",
    "error": "string?",
}
READY: Final = "ready"
LOADING: Final = "loading"
ERROR: Final = "error"

_MAX_TRIES: Final = 50  # compare-and-set rounds before a write gives up (contention)
_POLL_MIN: Final = 0.0005
_POLL_MAX: Final = 0.02


class LoadTimeout(LoadError):
    """No result came for a key another worker is loading within ``wait_timeout``.

    A :class:`LoadError` (its wire type is ``LoadError``): the message names the key,
    the lease holder and the wait.
    """

    type = "LoadError"


class ArenaStore:
    """The ``InMemory`` store client over ``$manifest``: reads from the arena, writes
    through the writer. ``get``/``set``/``delete``/``version_of`` as the manifest
    ``InMemoryClient``; safe across processes (every write is a compare-and-set).

    :param client: the worker's :class:`Client` (or any object with its commands).
    :param wall_clock: seconds since the epoch, for ``expires`` (tests pass their own).
    """

    def __init__(self, client: CommandsMixin, wall_clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.wall_clock = wall_clock
        self._table_ready = False
        # key → _version of a load lease this process holds (the next set replaces it).
        self.held: dict[str, int] = {}
        # key → _version of the record a get/set of the current State call returned or
        # wrote: version_of answers from it until the call ends (clear_pins), so a value is
        # cached under its own version, never under a newer record's.
        self._pins: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"ArenaStore({self.client!r})"

    # --- records ----------------------------------------------------------------------

    def record(self, key: str) -> Record | None:
        """The raw ``$manifest`` record of *key* (any status), None when there is none.

        From one arena snapshot when the client has an arena (a miss costs no round
        trip); otherwise over the socket.
        """
        if isinstance(self.client, Client):
            try:
                with self.client.snapshot() as snap:
                    try:
                        return snap.get_record(TABLE, key)
                    except (RecordNotFound, StateNotFound):
                        return None
            except (ServerUnavailable, SnapshotExpired):
                pass  # no arena (remote client, --no-arena) or a stalled read: ask the server
        try:
            record: Record = self.client.get_record(TABLE, key)
        except (RecordNotFound, StateNotFound):
            return None
        return record

    def live(self, record: Record | None) -> bool:
        """Whether *record* is a value: ``ready`` and not past ``expires``."""
        return (
            record is not None
            and record.get("status") == READY
            and not self.expired(record, self.wall_clock())
        )

    @staticmethod
    def expired(record: Record, now: float) -> bool:
        expires = record.get("expires")
        return expires is not None and now >= expires

    def ensure_table(self) -> None:
        """Create ``$manifest`` with :data:`SCHEMA` once per process (``StateExists``: fine)."""
        if self._table_ready:
            return
        try:
            self.client.create_state(TABLE, schema=dict(SCHEMA))
        except StateExists:
            pass
        self._table_ready = True

    def clear_pins(self) -> None:
        """Forget the versions pinned by this call's reads (the State calls it per call)."""
        self._pins.clear()

    # --- the InMemory client interface ----------------------------------------------------

    def get(self, key: str) -> Any:
        """The value at *key*; None when absent, expired, loading or failed."""
        record = self.record(key)
        if not self.live(record):
            self._pins.pop(key, None)
            return None
        assert record is not None
        self._pins[key] = record["_version"]
        return record["value"]

    def version_of(self, key: str) -> int | None:
        """The ``_version`` of *key*'s value; None when absent, expired, loading or failed."""
        pinned = self._pins.get(key)
        if pinned is not None:
            return pinned
        record = self.record(key)
        return record["_version"] if self.live(record) else None  # type: ignore[index]

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store *value* as a ``ready`` record (compare-and-set, retried under contention).

        TTL: *ttl* seconds from now; None keeps the current value's deadline (none when
        there is no live value). Replaces a load lease: this process's own (the load's
        result), or another's (a ``set`` wins over a load in flight).

        :return: True when stored; False when this process's load lease was taken over
            and another value landed first (that value stands).
        :raises StoreSerializeError: *value* is not a msgpack value.
        :raises StoreError: the record changed under every one of many attempts.
        """
        held = self.held.pop(key, None)
        self._pins.pop(key, None)
        self.ensure_table()
        for _ in range(_MAX_TRIES):
            now = self.wall_clock()
            current: Record | None = None
            version: int | None = held
            if held is None:
                current = self.record(key)
                version = None if current is None else current["_version"]
            if ttl is not None:
                expires: float | None = now + ttl
            else:
                expires = current["expires"] if self.live(current) else None  # type: ignore[index]
            fields = {
                "value": value,
                "status": READY,
                "expires": expires,
                "owner": None,
                "error": None,
            }
            try:
                if version is None:
                    stored = self.client.create_record(TABLE, {"id": key, **fields})
                else:
                    stored = self.client.set_record(TABLE, key, fields, if_version=version)
            except BadRequest as exc:
                raise StoreSerializeError(f"InMemory store: {exc.message}") from None
            except StateNotFound:
                self._table_ready = False  # dropped by someone: create it again
                self.ensure_table()
                continue
            except (DuplicateId, VersionConflict, RecordNotFound):
                if held is not None:
                    held = None
                    if self.live(self.record(key)):
                        return False  # our lease was taken over and a value landed first
                continue
            self._pins[key] = stored["_version"]
            return True
        raise StoreError(f"InMemory store: {key!r} kept changing; gave up after {_MAX_TRIES} tries")

    def delete(self, key: str) -> bool:
        """Remove *key*'s value (and any stale lease or error record); True when a live
        value was removed. A load in flight (a live lease) is left alone: False."""
        self._pins.pop(key, None)
        for _ in range(_MAX_TRIES):
            record = self.record(key)
            if record is None:
                return False
            now = self.wall_clock()
            if record.get("status") == LOADING and not self.expired(record, now):
                return False
            live = self.live(record)
            try:
                self.client.delete_record(TABLE, key, if_version=record["_version"])
            except VersionConflict:
                continue
            except (RecordNotFound, StateNotFound):
                return False
            return live
        raise StoreError(f"InMemory store: {key!r} kept changing; gave up after {_MAX_TRIES} tries")

    # --- load leases -------------------------------------------------------------------------

    def take_lease(self, key: str, record: Record | None, load_timeout: float) -> int | None:
        """Try to take the load lease of *key*, given its current *record* (None: absent).

        :return: the lease record's ``_version``, or None when another process won.
        """
        self.ensure_table()
        fields = {
            "value": None,
            "status": LOADING,
            "expires": self.wall_clock() + load_timeout,
            "owner": f"{os.getpid()}:{uuid.uuid4().hex[:8]}",
            "error": None,
        }
        try:
            if record is None:
                stored = self.client.create_record(TABLE, {"id": key, **fields})
            else:
                stored = self.client.set_record(TABLE, key, fields, if_version=record["_version"])
        except (DuplicateId, VersionConflict, RecordNotFound):
            return None
        except StateNotFound:
            self._table_ready = False
            return None
        version: int = stored["_version"]
        self.held[key] = version
        return version

    def fail_lease(self, key: str, error: StateEngineError) -> None:
        """Replace this process's lease of *key* with an ``error`` record (best effort:
        the original error matters more than a failure to record it)."""
        version = self.held.pop(key, None)
        if version is None:
            return
        fields = {
            "value": error.to_wire(),
            "status": ERROR,
            "expires": None,
            "owner": None,
            "error": error.message,
        }
        try:
            self.client.set_record(TABLE, key, fields, if_version=version)
        except StateEngineError:
            pass

    def release_lease(self, key: str) -> None:
        """Drop this process's lease of *key* without a result (best effort)."""
        version = self.held.pop(key, None)
        if version is None:
            return
        try:
            self.client.delete_record(TABLE, key, if_version=version)
        except StateEngineError:
            pass


class State(CoreState):
    """Manifest state shared by every worker of one server (SPEC §4).

    :param manifest_dir: the manifest directory (or a parsed :class:`Manifest`).
    :param client: this process's :class:`Client` (``stateengine.connect()``); not closed
        by :meth:`close`.
    :param clients: load/store clients by name, as the core ``State`` takes them; an
        ``InMemory`` entry is not allowed (``InMemory`` is the arena).
    :param load_timeout: seconds a load lease lasts; a lease still ``loading`` after it
        is taken over by a waiting worker. Must exceed the slowest load.
    :param wait_timeout: seconds a worker waits for another's load before
        :class:`LoadTimeout` (default: ``2 * load_timeout + 1``, room for one takeover).
    :param single_flight: False turns the load lease off (every missing worker loads);
        for tests and benchmarks.
    :param wall_clock: seconds since the epoch, for ``expires`` (tests pass their own).
    :param kwargs: passed to the core ``State`` (``defaults``, ``max_recursion``, ``clock``).
    """

    def __init__(
        self,
        manifest_dir: str | os.PathLike[str] | Manifest,
        client: CommandsMixin,
        clients: Mapping[str, Any] | None = None,
        load_timeout: float = 30.0,
        *,
        wait_timeout: float | None = None,
        single_flight: bool = True,
        wall_clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        """See the class.

        :raises ValueError: *load_timeout* is not positive, or *clients* has ``InMemory``.
        :raises ManifestError: the manifests do not parse (the core ``State``).
        """
        if not load_timeout > 0:
            raise ValueError(f"load_timeout must be positive, not {load_timeout!r}")
        given = dict(clients or {})
        if "InMemory" in given:
            raise ValueError("InMemory is the server's arena here; do not pass an InMemory client")
        self.client = client
        self.store = ArenaStore(client, wall_clock)
        self.load_timeout = float(load_timeout)
        self.wait_timeout = (
            2 * self.load_timeout + 1.0 if wait_timeout is None else float(wait_timeout)
        )
        self.single_flight = single_flight
        #: Counters beyond the core's: ``leases`` taken, ``takeovers`` of dead or failed
        #: leases, ``waits`` for another worker's load.
        self.flight_stats: dict[str, int] = {"leases": 0, "takeovers": 0, "waits": 0}
        manifests = manifest_dir if isinstance(manifest_dir, Manifest) else os.fspath(manifest_dir)
        super().__init__(manifests, {**given, "InMemory": self.store}, **kwargs)

    def __repr__(self) -> str:
        return f"client.State({self.manifest!r}, {self.client!r})"

    def __enter__(self) -> State:
        return self

    # Each public call starts and ends with no pinned versions: within one call a key
    # read once keeps that version; across calls every cache hit asks the arena.

    def get(self, path: str) -> Any:
        """The value at *path* (the core ``State.get``, loads single-flighted).

        :raises KeyNotDefined: :raises ManifestError: :raises LoadError: as the core.
        :raises LoadTimeout: another worker's load gave no result within ``wait_timeout``.
        :raises ServerUnavailable: the server did not answer.
        """
        self.store.clear_pins()
        try:
            return super().get(path)
        finally:
            self.store.clear_pins()

    def set(self, path: str, value: Any, ttl: float | None = None) -> bool:
        """Store *value* at *path* (the core ``State.set``).

        :raises StoreError: :raises StateTypeMismatch: as the core.
        :raises ServerUnavailable: the server did not answer.
        """
        self.store.clear_pins()
        try:
            return super().set(path, value, ttl)
        finally:
            self.store.clear_pins()

    def delete(self, path: str) -> bool:
        """Delete the value at *path* (the core ``State.delete``).

        :raises StoreError: as the core. :raises ServerUnavailable: no answer.
        """
        self.store.clear_pins()
        try:
            return super().delete(path)
        finally:
            self.store.clear_pins()

    def exists(self, path: str) -> bool:
        """Whether *path* holds a value now (the core ``State.exists``).

        :raises KeyNotDefined: :raises StoreError: as the core.
        :raises ServerUnavailable: the server did not answer.
        """
        self.store.clear_pins()
        try:
            return super().exists(path)
        finally:
            self.store.clear_pins()

    def _get_node(self, node: Node) -> Any:
        key = self._flight_key(node) if self.single_flight else None
        if key is None:
            return super()._get_node(node)
        value = self._peek(node)
        if value is not MISS:
            return value
        return self._single_flight(node, key)

    def _flight_key(self, node: Node) -> str | None:
        """The arena key whose misses are single-flighted, or None (loads per process)."""
        if self._is_reference(node) or self._container(node) is not None:
            return None
        if not node.load or not node.load.get("client"):
            return None
        target = self._target(node, "store")
        if target is None or target.client != "InMemory":
            return None
        return target.key

    def _single_flight(self, node: Node, key: str) -> Any:
        deadline = time.monotonic() + self.wait_timeout
        delay = _POLL_MIN
        waited_on: int | None = None  # the _version of a lease this worker waited on
        while True:
            if time.monotonic() >= deadline:
                owner = record.get("owner") if (record := self.store.record(key)) else None
                raise LoadTimeout(
                    f"{node.path}: no result for {key!r} within {self.wait_timeout} s"
                    f" (being loaded by {owner}; load_timeout {self.load_timeout} s)"
                )
            record = self.store.record(key)
            if record is None:
                if self.store.take_lease(key, None, self.load_timeout) is not None:
                    self.flight_stats["leases"] += 1
                    return self._hold(node, key)
                continue  # someone else created it first: look again
            status = record.get("status")
            if status == READY and self.store.live(record):
                value = self._peek(node)
                if value is not MISS:
                    return value
                continue  # deleted or expired between the two reads
            if status == ERROR and waited_on is not None:
                # The load this worker waited for failed: the holder's error, as raised.
                raise from_wire(record.get("value") or {"type": "LoadError", "message": ""})
            if status != LOADING or self.store.expired(record, self.store.wall_clock()):
                # An error from before this get, an expired value, or a dead lease.
                if self.store.take_lease(key, record, self.load_timeout) is not None:
                    self.flight_stats["leases"] += 1
                    if status == LOADING:
                        self.flight_stats["takeovers"] += 1
                    return self._hold(node, key)
                continue  # another worker won the takeover
            if waited_on is None:
                self.flight_stats["waits"] += 1
            waited_on = record["_version"]
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def _hold(self, node: Node, key: str) -> Any:
        """Run the load under this process's lease; its ``set`` replaces the lease."""
        try:
            value = super()._get_node(node)
        except StateEngineError as exc:
            self.store.fail_lease(key, exc)
            raise
        except BaseException:
            self.store.release_lease(key)
            raise
        # Nothing stored (the load gave nothing, or a static default): drop the lease.
        self.store.release_lease(key)
        return value


__all__ = ["ERROR", "LOADING", "READY", "SCHEMA", "TABLE", "ArenaStore", "LoadTimeout", "State"]
