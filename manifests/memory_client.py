"""``InMemory``: a process-local key → value store with TTLs and per-key versions.

This is the stand-in for the shared-memory arena (SPEC §4: in the product, ``InMemory``
means the arena, visible to every worker). It keeps the interface the arena must offer:
``get``/``set``/``delete`` plus ``version_of``, which the State's instance cache checks
so that a ``set``/``delete`` through another handle is seen at once.

Values are validated as msgpack values and copied on the way in and out, so a caller
mutating a dict it stored or got cannot reach into the store. Thread-safe (one lock);
not shared across processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from stateengine.errors import BadRequest, StoreSerializeError
from stateengine.manifests.clients import ABSENT, ClientAdapter, Slot
from stateengine.protocol import check_value, copy_value

__all__ = [
    "ADAPTER",
    "InMemoryAdapter",
    "InMemoryClient",
]


class InMemoryClient:
    """A dict with TTLs and versions.

    :param clock: monotonic seconds; tests pass a controllable one to expire TTLs.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[Any, float | None, int]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryClient(keys={len(self._data)})"

    def _live(self, key: str) -> tuple[Any, float | None, int] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and self._clock() >= entry[1]:
            del self._data[key]
            return None
        return entry

    def get(self, key: str) -> Any:
        """The value at *key*, or None when absent or expired."""
        with self._lock:
            entry = self._live(key)
            return None if entry is None else copy_value(entry[0])

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store *value*; *ttl* seconds from now, or None to keep the current expiry.

        :raises StoreSerializeError: *value* is not a msgpack value.
        """
        try:
            value = check_value(value, key)
        except BadRequest as exc:
            raise StoreSerializeError(f"InMemory store: {exc.message}") from None
        with self._lock:
            entry = self._live(key)
            if ttl is not None:
                expires: float | None = self._clock() + ttl
            else:
                expires = entry[1] if entry is not None else None
            self._seq += 1
            self._data[key] = (value, expires, self._seq)
            return True

    def delete(self, key: str) -> bool:
        """Remove *key*; True when it was there."""
        with self._lock:
            entry = self._live(key)
            if entry is None:
                return False
            del self._data[key]
            self._seq += 1
            return True

    def ttl(self, key: str) -> float | None:
        """Seconds left before *key* expires, None when it has no expiry or is absent."""
        with self._lock:
            entry = self._live(key)
            if entry is None or entry[1] is None:
                return None
            return entry[1] - self._clock()

    def version_of(self, key: str) -> int | None:
        """The version *key* was last written at, None when absent or expired."""
        with self._lock:
            entry = self._live(key)
            return None if entry is None else entry[2]


class InMemoryAdapter(ClientAdapter):
    """``InMemory``: values as they are (msgpack values), with TTLs and versions."""

    name = "InMemory"

    @classmethod
    def default(cls) -> InMemoryClient:
        return InMemoryClient()

    def get(self, slot: Slot) -> Any:
        value = self.client.get(slot.key)
        return ABSENT if value is None else value

    def set(self, slot: Slot, value: Any, ttl: float | None) -> bool:
        return bool(self.client.set(slot.key, value, ttl))

    def delete(self, slot: Slot) -> bool:
        return bool(self.client.delete(slot.key))


ADAPTER = InMemoryAdapter
