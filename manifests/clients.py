"""The manifest clients: one adapter per client name, a registry, and the client interfaces.

:class:`~stateengine.manifests.state.State` resolves a key's ``_load``/``_store`` block
(placeholders, the URL policy, the TTL rules, the instance cache) and hands the rest to
the block's client through its :class:`ClientAdapter`: the adapter owns the client's
load, ``get``/``set``/``delete`` *and its serialisation* (as diskcache's ``Disk`` owns
its own): ``KVS`` and ``File`` hold JSON text, ``InMemory`` and ``Http`` take values as
they are, ``File`` loads a ``.json`` file as JSON and any other file as text.

The built-ins are ``Env``, ``File``, ``Db``, ``KVS``, ``InMemory`` and ``Http`` (each in
its own module, with the client object it adapts); ``State`` in a ``_load`` block is not
a client but a reference to another key. A third party adds a client with
:func:`register_client` in-process, or from an installed package through the entry
point group ``stateengine.manifest_clients`` (``NAME = module:AdapterClass``); manifests
can then name it in ``_store.client`` / ``_load.client``. docs/extending.md walks
through one.

``State(clients={NAME: obj})`` passes the client object the adapter wraps (a ``File``
root, a ``KVS`` URL); :func:`default_clients` makes the ones that need no configuration.
Optional drivers (redis-py, psycopg) are imported only when a client that needs them is
created or first used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

from stateengine.errors import StoreSerializeError, UnsupportedClient
from stateengine.manifests.redact import redact_text

__all__ = [
    "ABSENT",
    "ENTRY_POINT_GROUP",
    "REFERENCE",
    "ClientAdapter",
    "JsonTextAdapter",
    "LoadRequest",
    "Slot",
    "canonical_client",
    "client_adapters",
    "default_clients",
    "get_client_adapter",
    "load_client_names",
    "register_client",
    "store_client_names",
    "unregister_client",
]

log = logging.getLogger("stateengine.manifests")

ENTRY_POINT_GROUP: Final = "stateengine.manifest_clients"
#: ``_load.client: State``: a reference to another key, resolved by State itself
REFERENCE: Final = "State"


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


#: what :meth:`ClientAdapter.get` returns when the slot holds nothing (None is a value)
ABSENT: Final = _Absent()


@dataclass(frozen=True)
class Slot:
    """A resolved ``_store`` location: what ``get``/``set``/``delete`` act on.

    :param path: the manifest key (for messages).
    :param client: the client's name.
    :param key: the resolved key (``location`` field: a URL for ``Http``).
    :param headers: resolved ``_store.headers``, if any.
    :param ttl: the manifest's ``_store.ttl``, if any.
    """

    path: str
    client: str
    key: str
    headers: Mapping[str, str] | None = None
    ttl: float | None = None


class LoadRequest(Protocol):
    """A ``_load`` block as State hands it to :meth:`ClientAdapter.load`."""

    #: the manifest key being loaded, and ``file:line`` of its definition
    path: str
    where: str
    #: the block as written (placeholders unresolved; use :meth:`need`)
    config: Mapping[str, Any]

    def need(self, field: str) -> Any:
        """The field with its placeholders resolved.

        :raises LoadConfigMissing: the block lacks it, or a placeholder resolved to nothing.
        """
        ...

    def headers(self) -> dict[str, str] | None:
        """``headers`` resolved, or None."""
        ...

    def url(self) -> str:
        """``url`` resolved and checked against ``allow_hosts`` (the Http policy).

        :raises LoadError: missing, or outside the policy.
        """
        ...

    def sql_where(self) -> tuple[str | None, list[Any]]:
        """``where`` as SQL with the ``{?}`` marker per bound parameter, and the parameters."""
        ...


class ClientAdapter:
    """How State uses one kind of client. Subclass, name it, register it.

    Class attributes say what the client can do; the parser checks manifests against
    them (``_store.client`` must :attr:`stores`, ``_store.ttl`` needs :attr:`ttl`):

    * ``name`` — what ``_store.client`` / ``_load.client`` say (any case in manifests).
    * ``loads``, ``stores`` — whether it serves ``_load`` and ``_store`` blocks.
    * ``ttl`` — whether a stored value can expire (``_store.ttl``, ``set(..., ttl)``).
    * ``location`` — the field naming the slot: ``key``, or ``url`` for an HTTP(S) URL
      that the destination policy (``allow_hosts``) checks.
    * ``maps_itself`` — :meth:`load` applies ``_load.map`` itself (State otherwise picks
      the mapped fields out of the mapping it returns).

    :param client: the client object from ``State(clients=...)`` (or :meth:`default`).
    """

    name: ClassVar[str] = ""
    loads: ClassVar[bool] = True
    stores: ClassVar[bool] = True
    ttl: ClassVar[bool] = True
    location: ClassVar[str] = "key"
    maps_itself: ClassVar[bool] = False

    def __init__(self, client: Any) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"

    @classmethod
    def default(cls) -> Any:
        """The client object State uses when none is passed; None: it needs configuring."""
        return None

    def load(self, request: LoadRequest) -> Any:
        """The loaded value, or None when the source has nothing (``LoadNotFound``).

        The default reads the slot :meth:`get` would, at the block's ``location``.

        :raises LoadError: a subclass naming the case; any other exception becomes a
            ``LoadError`` naming the key and the client (credentials redacted).
        """
        slot = Slot(request.path, self.name, str(request.need(self.location)))
        value = self.get(slot)
        return None if value is ABSENT else value

    def get(self, slot: Slot) -> Any:
        """The value stored at *slot*, or :data:`ABSENT`.

        :raises StoreError: a subclass naming the case (``StoreSerializeError``); any
            other exception becomes a ``StoreError`` naming the key and the client.
        """
        raise UnsupportedClient(f"{slot.path}: {self.name} is not a store client")

    def set(self, slot: Slot, value: Any, ttl: float | None) -> bool:
        """Store *value* (already cast to the key's type); *ttl* seconds, or None to keep
        the current expiry. True when stored.

        :raises StoreSerializeError: *value* cannot be written in this client's format.
        """
        raise UnsupportedClient(f"{slot.path}: {self.name} is not a store client")

    def delete(self, slot: Slot) -> bool:
        """Remove *slot*; True when something was there."""
        raise UnsupportedClient(f"{slot.path}: {self.name} is not a store client")


class JsonTextAdapter(ClientAdapter):
    """A store of strings (``KVS``, ``File``): values go in and out as JSON text, so any
    other program can read them."""

    def get(self, slot: Slot) -> Any:
        text = self.client.get(slot.key)
        if text is None:
            return ABSENT
        try:
            return json.loads(text)
        except ValueError:
            raise StoreSerializeError(
                f"{slot.path}: {slot.client} value at {redact_text(slot.key)!r} is not JSON"
            ) from None

    def set(self, slot: Slot, value: Any, ttl: float | None) -> bool:
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StoreSerializeError(
                f"{slot.path}: cannot serialise for {slot.client}: {exc}"
            ) from None
        return self.write(slot, text, ttl)

    def write(self, slot: Slot, text: str, ttl: float | None) -> bool:
        """Store the JSON *text* (with the TTL where the client has them)."""
        return bool(
            self.client.set(slot.key, text, ttl) if self.ttl else self.client.set(slot.key, text)
        )

    def delete(self, slot: Slot) -> bool:
        return bool(self.client.delete(slot.key))


# --- the registry -------------------------------------------------------------------------

_BUILTIN_MODULES: Final = (
    "stateengine.manifests.env_client",
    "stateengine.manifests.file_client",
    "stateengine.manifests.db_client",
    "stateengine.manifests.kvs_client",
    "stateengine.manifests.memory_client",
    "stateengine.manifests.http_client",
)
_registered: dict[str, type[ClientAdapter]] = {}
_builtin_names: set[str] = set()
_broken: dict[str, str] = {}
_ready = False


def _load_registry() -> None:
    """The built-ins (each module's ``ADAPTER``), then the installed entry points; once."""
    global _ready
    if _ready:
        return
    _ready = True
    for module in _BUILTIN_MODULES:
        adapter: type[ClientAdapter] = import_module(module).ADAPTER
        _registered[adapter.name] = adapter
        _builtin_names.add(adapter.name)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if canonical_client(ep.name) is not None or ep.name.lower() == REFERENCE.lower():
            log.warning(
                "manifest client entry point %s (%s) ignored: the name is taken", ep.name, ep.value
            )
            continue
        try:
            loaded = ep.load()
            if not (isinstance(loaded, type) and issubclass(loaded, ClientAdapter)):
                raise TypeError(f"{ep.value} is not a ClientAdapter subclass")
            if loaded.name != ep.name:
                raise ValueError(f"{ep.value} is named {loaded.name!r}, not {ep.name!r}")
        except Exception as exc:  # a plugin's own import error: any type
            _broken[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning(
                "manifest client entry point %s (%s) did not load: %s", ep.name, ep.value, exc
            )
            continue
        _registered[ep.name] = loaded


def register_client(adapter: type[ClientAdapter], *, replace: bool = False) -> None:
    """Make *adapter*'s client name usable in manifests parsed from now on, in this process.

    :raises ValueError: the name is empty, ``State``, or taken (unless *replace*; the
        built-ins cannot be replaced).
    """
    _load_registry()
    name = adapter.name
    if not name or name.lower() == REFERENCE.lower():
        raise ValueError(f"{name!r} cannot name a manifest client")
    taken = canonical_client(name)
    if taken is not None and (not replace or taken in _builtin_names):
        raise ValueError(f"a manifest client named {taken!r} is already registered")
    if taken is not None:
        del _registered[taken]
    _registered[name] = adapter
    _broken.pop(name, None)


def unregister_client(name: str) -> None:
    """Forget a client added with :func:`register_client` (tests, docs snippets).

    :raises ValueError: *name* is a built-in.
    """
    _load_registry()
    if name in _builtin_names:
        raise ValueError(f"{name!r} is a built-in manifest client")
    _registered.pop(name, None)


def client_adapters() -> dict[str, type[ClientAdapter]]:
    """Every registered client by its canonical name: the built-ins first."""
    _load_registry()
    return dict(_registered)


def canonical_client(name: str) -> str | None:
    """The registered name *name* spells in any case (``http`` → ``Http``), or None."""
    _load_registry()
    lowered = name.lower()
    return next((n for n in _registered if n.lower() == lowered), None)


def get_client_adapter(name: str) -> type[ClientAdapter]:
    """The adapter of the client called *name* (canonical spelling).

    :raises UnsupportedClient: no client has that name, or its entry point did not load.
    """
    _load_registry()
    adapter = _registered.get(name)
    if adapter is None:
        why = f": its entry point did not load: {_broken[name]}" if name in _broken else ""
        raise UnsupportedClient(f"no manifest client named {name!r}{why}")
    return adapter


def store_client_names() -> tuple[str, ...]:
    """The names a ``_store.client`` may take."""
    return tuple(n for n, a in client_adapters().items() if a.stores)


def load_client_names() -> tuple[str, ...]:
    """The names a ``_load.client`` may take (``State``: a reference to another key)."""
    return (*(n for n, a in client_adapters().items() if a.loads), REFERENCE)


def default_clients() -> dict[str, Any]:
    """The clients that need no configuration: ``Env``, ``InMemory`` (process-local),
    ``Db`` (SQLite built in, PostgreSQL when psycopg is installed), ``Http``, and any
    registered client whose :meth:`ClientAdapter.default` makes one.

    ``File`` needs a root directory and ``KVS`` a Redis URL: pass them in ``clients``.
    """
    out: dict[str, Any] = {}
    for name, adapter in client_adapters().items():
        client = adapter.default()
        if client is not None:
            out[name] = client
    return out


# --- the client objects' interfaces (what each built-in adapter calls) -------------------


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
