"""``KVS``: a key-value store of strings, Redis through redis-py.

The client's adapter (:class:`KVSAdapter`) serialises values to JSON before they reach
this client and parses them after (seed 003), so Redis holds plain JSON text any other
program can read.

TTL: ``set(key, value, ttl)`` with ``ttl`` seconds sets the expiry (``PX`` in
milliseconds, so fractions work); ``ttl=None`` keeps the key's current TTL (``KEEPTTL``,
Redis ≥ 6), which is the seed's "no ttl argument, no ``_store.ttl``: keep current".

redis-py is imported when the client is created (``pip install redis``). The client is
safe to share across threads (redis-py pools connections); after ``fork`` redis-py
reconnects by itself. The URL's password is never shown in ``repr`` or errors.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from stateengine.errors import LoadParseError
from stateengine.manifests.clients import JsonTextAdapter, LoadRequest
from stateengine.manifests.redact import redact_text

__all__ = [
    "ADAPTER",
    "KVSAdapter",
    "RedisKVS",
]


class RedisKVS:
    """A ``KVS`` client over Redis.

    :param url: ``redis://[:password@]host:port/db``.
    :param prefix: prepended to every key (namespaces tests and tenants).
    :param client: an existing ``redis.Redis`` to use instead of *url*.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        client: Any = None,
        socket_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        if client is None:
            try:
                redis = importlib.import_module("redis")
            except ImportError as exc:
                raise ImportError(
                    "the KVS client needs redis-py: pip install -e '.[redis]' (from the checkout)"
                ) from exc
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
            )
        self._redis = client

    def __repr__(self) -> str:
        return f"RedisKVS({redact_text(self.url)!r}, prefix={self.prefix!r})"

    @property
    def redis(self) -> Any:
        """The underlying ``redis.Redis`` (tests read ``PTTL`` through it)."""
        return self._redis

    def get(self, key: str) -> str | None:
        value = self._redis.get(self.prefix + key)
        if value is None:
            return None
        return value if isinstance(value, str) else bytes(value).decode("utf-8")

    def set(self, key: str, value: str, ttl: float | None) -> bool:
        if ttl is None:
            return bool(self._redis.set(self.prefix + key, value, keepttl=True))
        return bool(self._redis.set(self.prefix + key, value, px=max(1, round(ttl * 1000))))

    def delete(self, key: str) -> bool:
        return bool(self._redis.delete(self.prefix + key))

    def close(self) -> None:
        self._redis.close()


class KVSAdapter(JsonTextAdapter):
    """``KVS``: JSON text in Redis, loaded and stored alike."""

    name = "KVS"

    def load(self, request: LoadRequest) -> Any:
        key = str(request.need("key"))
        text = self.client.get(key)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise LoadParseError(f"{request.path}: KVS value at {key!r} is not JSON") from None


ADAPTER = KVSAdapter
