"""The load and store client interfaces (seed 003) and the default set.

:class:`~stateengine.manifests.state.State` takes a ``clients`` mapping from client name
(``Env``, ``File``, ``Db``, ``KVS``, ``InMemory``, ``Http``) to an object with the
interface below; the same object serves ``_load`` and ``_store`` where both apply.
``State`` itself is not a client: ``_load.client: State`` references another key.

Each backend lives in its own module; optional drivers (redis-py, psycopg) are imported
only when a client that needs them is created or first used.

Values: ``KVS`` and ``File`` handle strings only; the State layer serialises every value
to JSON and back (seed 003). ``InMemory`` and ``Http`` take values as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class EnvClientProtocol(Protocol):
    def get(self, name: str) -> str | None: ...


@runtime_checkable
class FileClientProtocol(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> bool: ...
    def delete(self, key: str) -> bool: ...


@runtime_checkable
class KVSClientProtocol(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str, ttl: float | None) -> bool:
        """Store *value*; ``ttl`` seconds from now, or None to keep the key's current TTL."""
        ...

    def delete(self, key: str) -> bool: ...


@runtime_checkable
class InMemoryClientProtocol(Protocol):
    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any, ttl: float | None) -> bool: ...
    def delete(self, key: str) -> bool: ...


@runtime_checkable
class VersionedProtocol(Protocol):
    def version_of(self, key: str) -> int | None:
        """The key's current version, None when absent (or expired). See ``State``."""
        ...


@runtime_checkable
class DbClientProtocol(Protocol):
    def get(
        self,
        connection: Any,
        table: str,
        columns: Sequence[str],
        where: str | None,
        params: Sequence[Any],
    ) -> list[dict[str, Any]] | None:
        """Rows of *table* (only *columns*; all when empty) matching *where*.

        *where* is SQL text whose placeholders were replaced by the driver-neutral
        marker ``{?}``, one per entry of *params*, bound as parameters, never
        interpolated.
        """
        ...


@runtime_checkable
class HttpClientProtocol(Protocol):
    def get(self, url: str, headers: Mapping[str, str] | None) -> Any: ...
    def set(self, url: str, body: Any, headers: Mapping[str, str] | None) -> bool: ...
    def delete(self, url: str, headers: Mapping[str, str] | None) -> bool: ...


def default_clients() -> dict[str, Any]:
    """The clients that need no configuration: ``Env``, ``InMemory`` (process-local),
    ``Db`` (SQLite built in, PostgreSQL when psycopg is installed) and ``Http``.

    ``File`` needs a root directory and ``KVS`` a Redis URL: pass them in ``clients``.
    """
    from stateengine.manifests.db_client import DbClient
    from stateengine.manifests.env_client import EnvClient
    from stateengine.manifests.http_client import HttpClient
    from stateengine.manifests.memory_client import InMemoryClient

    return {
        "Env": EnvClient(),
        "InMemory": InMemoryClient(),
        "Db": DbClient(),
        "Http": HttpClient(),
    }
