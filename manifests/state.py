"""The manifest ``State``: get/set/delete/exists on manifest keys, independent of transport.

The flow of :meth:`State.get` is the seed's (003): the recursion guard, the manifest
file (parsed on first access), the instance cache, then the ``_store``, then an
auto-load through ``_load`` on a miss, saving what was loaded to the store and the
cache. ``_load.client: State`` returns the referenced key's value directly.

**Nodes and fields.** A node that sets its own store location (``_store.client``,
``key`` or ``url``, or ``_store: null``) is *standalone*: it has its own slot in its
store. A node that does not (``cache.user.org_id`` under ``cache.user``) is a *field*
of its nearest ancestor that declares ``_store`` or ``_load`` (its *container*): its
value is ``get(container)[name]``, ``set`` patches that field and writes the container
back, ``delete`` removes the field. A field with its own ``_load`` is loaded when the
container's value lacks it, and written into the container.

**Types.** ``_state.type`` is enforced: every value loaded, read from a store or set
is validated and cast (:func:`~stateengine.manifests.types.cast_value`); a mapping is
also checked field by field against its children's types.

**TTL** (seed 003): ``set(path, value, ttl)`` uses *ttl*; without it, ``_store.ttl``
from the manifest; without both, the key keeps its current TTL. Values saved after a
load use ``_store.ttl`` (or none).

**Instance cache** (seed's ``state_values``): entries are validated on every hit
against ``version_of(store_key)`` of the ``InMemory`` store (the arena, in the
product), so a ``set``/``delete`` through another handle is seen at once, and an entry
saved with a TTL expires with it. Stores without versions (KVS, File, Http) are trusted
for the State's lifetime, bounded by the manifest's ``_store.ttl`` when there is one.

**Clients.** Each ``_store``/``_load`` block is resolved here (placeholders, the URL
policy, TTLs) and handed to the block client's adapter (:mod:`.clients`: a registry by
name), which owns the client's load, get/set/delete and serialisation.

**Errors.** Client failures become :class:`LoadError`/:class:`StoreError` subclasses
naming the key and the client, with credentials redacted.

Thread safety: one re-entrant lock serialises the public methods of one State. A
State belongs to one process; after ``fork`` create a new one (clients such as
``DbClient`` re-open their connections, the instance cache is per process anyway).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from stateengine.errors import (
    KeyNotDefined,
    LoadClientNotConfigured,
    LoadConfigMissing,
    LoadError,
    LoadNotFound,
    LoadParseError,
    RecursionLimitExceeded,
    StateEngineError,
    StoreClientNotConfigured,
    StoreConfigMissing,
    StoreError,
    UnsupportedClient,
)
from stateengine.manifests.clients import (
    ABSENT,
    ClientAdapter,
    Slot,
    default_clients,
    get_client_adapter,
)
from stateengine.manifests.db_client import MARKER
from stateengine.manifests.http_client import (
    HttpPolicyError,
    check_destination,
    render_url,
    url_host,
)
from stateengine.manifests.parser import Manifest, Node, Ref, Template
from stateengine.manifests.redact import redact_text
from stateengine.manifests.types import cast_value
from stateengine.protocol import copy_value

MAX_RECURSION: Final = 20


MISS: Final = ABSENT  # nothing stored, nothing loaded (None is a value)
_UNVERSIONED: Final = -1


@dataclass
class _Entry:
    value: Any
    client: str | None
    key: str | None
    version: int | None
    expires: float | None


class _LoadRequest:
    """One ``_load`` block of one node, as a client adapter sees it (``LoadRequest``)."""

    def __init__(self, state: State, node: Node, config: Mapping[str, Any]) -> None:
        self._state = state
        self._node = node
        self.path = node.path
        self.where = node.where
        self.config = config

    def need(self, field: str) -> Any:
        return self._state._need(self._node, self.config, field)

    def headers(self) -> dict[str, str] | None:
        return self._state._headers(self._node, self.config, "load")

    def url(self) -> str:
        return self._state._http_url(self._node, self.config, "load")

    def sql_where(self) -> tuple[str | None, list[Any]]:
        where = self.config.get("where")
        if isinstance(where, Template):
            return self._state._render_sql(self._node, where)
        return None, []


class State:
    """Manifest state over injected load/store clients.

    :param manifests: the manifest directory, or a :class:`Manifest`.
    :param clients: client name → client object (``Env``, ``File``, ``Db``, ``KVS``,
        ``InMemory``, ``Http``); merged over :func:`default_clients` unless
        ``defaults=False``. Clients passed in are not closed by :meth:`close`.
    :param version_of: ``version_of(store_key) -> int | None`` for ``InMemory`` store
        keys, checked on every cache hit (defaults to the InMemory client's own
        ``version_of``). None means the key is absent.
    :param max_recursion: the nesting limit for placeholder resolution (seed: 20).
    :param clock: monotonic seconds, for cache expiry (tests pass their own).
    """

    def __init__(
        self,
        manifests: str | Manifest | Any,
        clients: Mapping[str, Any] | None = None,
        *,
        defaults: bool = True,
        version_of: Callable[[str], int | None] | None = None,
        max_recursion: int = MAX_RECURSION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = manifests if isinstance(manifests, Manifest) else Manifest(manifests)
        self._owned: dict[str, Any] = default_clients() if defaults else {}
        given = dict(clients or {})
        for name in given:
            self._owned.pop(name, None)
        self._owned_ids = {id(c) for c in self._owned.values()}
        self.clients: dict[str, Any] = {**self._owned, **given}
        self._version_hook = version_of
        self.max_recursion = max_recursion
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._adapters: dict[str, ClientAdapter] = {}  # by client name, for self.clients[name]
        self._stack: list[str] = []
        self._lock = threading.RLock()
        #: Counters: ``loads`` (client loads run), ``store_reads``, ``cache_hits``.
        self.stats: dict[str, int] = {"loads": 0, "store_reads": 0, "cache_hits": 0}

    def __repr__(self) -> str:
        return f"State({self.manifest!r}, clients={sorted(self.clients)})"

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the default clients this State created (Db connections); idempotent."""
        for client in self._owned.values():
            close = getattr(client, "close", None)
            if callable(close):
                close()

    # --- public API ------------------------------------------------------------------

    def get(self, path: str) -> Any:
        """The value of *path*: instance cache, then the store, then an auto-load.

        :return: the value (a copy), or None when nothing is stored and nothing loads.
        :raises KeyNotDefined: no manifest defines *path*.
        :raises ManifestError: the manifest file is missing, ambiguous or broken.
        :raises LoadError: the auto-load failed (a subclass names the case).
        :raises StoreError: the store failed.
        :raises StateTypeMismatch: the value does not match ``_state.type``.
        :raises RecursionLimitExceeded: placeholders nest deeper than 20 keys or cycle.
        """
        with self._lock:
            value = self._get(path)
            return None if value is MISS else copy_value(value)

    def set(self, path: str, value: Any, ttl: float | None = None) -> bool:
        """Store *value* at *path* (validated and cast to ``_state.type``); never loads.

        TTL: *ttl* seconds when given; else the manifest's ``_store.ttl``; else the
        key keeps its current TTL.

        :return: True when a store accepted it; False when *path* has no ``_store``
            (the value is then kept in this State's instance cache only).
        :raises StoreError: the store failed, or *path* references another key.
        :raises StateTypeMismatch: *value* does not match ``_state.type``.
        """
        if ttl is not None and (type(ttl) not in (int, float) or not ttl > 0):
            raise StoreError(f"{path}: ttl must be a positive number of seconds, not {ttl!r}")
        with self._lock:
            node = self.manifest.node(path)
            if self._is_reference(node):
                raise StoreError(
                    f"{path} references another key (_load.client: State); set that key"
                )
            value = self._conform(node, value, "set")
            container = self._container(node)
            if container is None:
                return self._put(node, value, ttl)
            cnode = self.manifest.node(container)
            current = self._peek(cnode)
            updated = _with_field(
                {} if current is MISS or current is None else current,
                _rel(container, path),
                value,
                path,
            )
            return self._put(cnode, updated, ttl)

    def delete(self, path: str) -> bool:
        """Remove *path* from its store and the instance cache; the next ``get`` misses.

        :return: True when something was removed.
        """
        with self._lock:
            node = self.manifest.node(path)
            if self._is_reference(node):
                raise StoreError(
                    f"{path} references another key (_load.client: State); delete that key"
                )
            container = self._container(node)
            if container is not None:
                cnode = self.manifest.node(container)
                current = self._peek(cnode)
                rel = _rel(container, path)
                if not isinstance(current, dict) or _dig(current, rel) is MISS:
                    return False
                return self._put(cnode, _without_field(current, rel), None) or True
            had = self._cache.pop(path, None) is not None
            target = self._target(node, "store")
            if target is None:
                return had
            return self._store_delete(node, target) or had

    def exists(self, path: str) -> bool:
        """Whether *path* has a value in the instance cache or its store. Never loads.

        (Placeholders in the store key are resolved through ``get``, which may load
        *those* keys.) A reference (``_load.client: State``) exists when its target does.
        """
        with self._lock:
            node = self.manifest.node(path)
            if self._is_reference(node):
                ref = self._reference_path(node)
                return self.exists(ref) if ref is not None else False
            container = self._container(node)
            if container is not None:
                current = self._peek(self.manifest.node(container))
                return (
                    isinstance(current, dict) and _dig(current, _rel(container, path)) is not MISS
                )
            return self._peek(node) is not MISS

    # --- the get flow ----------------------------------------------------------------

    def _get(self, path: str) -> Any:
        if path in self._stack:
            cycle = [*self._stack[self._stack.index(path) :], path]
            raise RecursionLimitExceeded(f"placeholder cycle: {' -> '.join(cycle)}")
        if len(self._stack) >= self.max_recursion:
            raise RecursionLimitExceeded(
                f"more than {self.max_recursion} nested keys: {' -> '.join([*self._stack, path])}"
            )
        self._stack.append(path)
        try:
            return self._get_node(self.manifest.node(path))
        finally:
            self._stack.pop()

    def _get_node(self, node: Node) -> Any:
        if self._is_reference(node):
            return self._conform(node, self._follow(node), "referenced")
        container = self._container(node)
        if container is not None:
            return self._get_field(node, container)
        value = self._peek(node)
        if value is not MISS:
            return value
        loaded = self._load(node)
        if loaded is MISS:
            return node.static if node.has_static else MISS
        value = self._conform(node, _fill_static(self.manifest, node, loaded), "loaded")
        self._put(node, value, None, after_load=True)
        return value

    def _get_field(self, node: Node, container: str) -> Any:
        rel = _rel(container, node.path)
        parent = self._get(container)
        value = _dig(parent, rel) if isinstance(parent, dict) else MISS
        if value is not MISS:
            return self._conform(node, value, "stored")
        if node.own_load and node.load is not None and node.load.get("client"):
            loaded = self._load(node)
            if loaded is not MISS:
                value = self._conform(node, _fill_static(self.manifest, node, loaded), "loaded")
                cnode = self.manifest.node(container)
                base = parent if isinstance(parent, dict) else {}
                self._put(cnode, _with_field(base, rel, value, node.path), None, after_load=True)
                return value
        return node.static if node.has_static else MISS

    def _peek(self, node: Node) -> Any:
        """Cache, then store; never loads. MISS when neither has it."""
        target = self._target(node, "store")
        entry = self._cache.get(node.path)
        if entry is not None:
            # An entry is for one resolved store key: "user:${session.user_id}" names
            # another slot once session.user_id changes (likewise a store-less node's
            # resolved load config).
            if target is not None:
                same = entry.client == target.client and entry.key == target.key
            else:
                same = entry.client is None and entry.key == self._fingerprint(node)
            if same and self._valid(entry):
                self.stats["cache_hits"] += 1
                return entry.value
            del self._cache[node.path]
        if target is None:
            return MISS
        raw = self._store_get(node, target)
        if raw is MISS:
            return MISS
        value = self._conform(node, raw, f"stored in {target.client}")
        expires = None
        if target.ttl is not None and self._version(target) == _UNVERSIONED:
            expires = self._clock() + target.ttl
        self._remember(node.path, value, target, expires)
        return value

    # --- the instance cache ----------------------------------------------------------

    def _version(self, target: Slot) -> int | None:
        if target.client == "InMemory" and self._version_hook is not None:
            return self._version_hook(target.key)
        fn = getattr(self.clients.get(target.client), "version_of", None)
        if callable(fn):
            result = fn(target.key)
            return result if result is None else int(result)
        return _UNVERSIONED

    def _fingerprint(self, node: Node) -> str:
        """The current values of the placeholders in a store-less node's ``_load``."""
        refs: list[str] = []

        def collect(value: Any) -> None:
            if isinstance(value, Template):
                refs.extend(r.path for r in value.refs)
            elif isinstance(value, dict):
                for v in value.values():
                    collect(v)

        collect(dict(node.load or {}))
        if not refs:
            return ""
        return repr([self._get(r) for r in refs])

    def _valid(self, entry: _Entry) -> bool:
        if entry.expires is not None and self._clock() >= entry.expires:
            return False
        if entry.client is None or entry.key is None or entry.version == _UNVERSIONED:
            return True
        current = self._version(Slot("", entry.client, entry.key))
        return current is not None and current == entry.version

    def _remember(self, path: str, value: Any, target: Slot | None, expires: float | None) -> None:
        if target is None:
            fingerprint = self._fingerprint(self.manifest.node(path))
            self._cache[path] = _Entry(value, None, fingerprint, None, expires)
            return
        version = self._version(target)
        if version is None:
            self._cache.pop(path, None)  # gone already (expired, deleted by another)
            return
        self._cache[path] = _Entry(value, target.client, target.key, version, expires)

    def _put(self, node: Node, value: Any, ttl: float | None, after_load: bool = False) -> bool:
        """Write a standalone node's value to its store and the cache (TTL rules)."""
        target = self._target(node, "store")
        if target is None:
            self._remember(node.path, value, None, None)
            return False
        effective = ttl if ttl is not None else target.ttl
        ok = self._store_set(node, target, value, effective)
        old = self._cache.get(node.path)
        if effective is not None:
            expires: float | None = self._clock() + effective
        else:
            expires = old.expires if old is not None and not after_load else None
        if ok:
            self._remember(node.path, value, target, expires)
        else:
            self._cache.pop(node.path, None)
        return ok

    # --- structure ---------------------------------------------------------------------

    def _container(self, node: Node) -> str | None:
        """The ancestor whose value holds *node* as a field, or None when standalone."""
        if node.own_store:
            return None
        parent = node.parent
        while parent is not None:
            pnode = self.manifest.node(parent)
            if pnode.own_store or pnode.own_load:
                return parent
            parent = pnode.parent
        return None

    @staticmethod
    def _is_reference(node: Node) -> bool:
        return node.load is not None and node.load.get("client") == "State"

    def _reference_path(self, node: Node) -> str | None:
        key = node.load.get("key") if node.load else None
        if isinstance(key, Template) and key.single is not None:
            return key.single.path
        return None

    def _follow(self, node: Node) -> Any:
        key = node.load.get("key") if node.load else None
        if not isinstance(key, Template):
            raise LoadConfigMissing(f"{node.path}: _load.client State needs _load.key")
        if key.single is not None:
            return self._get(key.single.path)
        # A template key names the referenced path: "cache.${which}" → get(that path).
        return self._get(self._render(node, key, "load", "key"))

    def _conform(self, node: Node, value: Any, origin: str) -> Any:
        if value is MISS or (value is None and node.type is None):
            return value
        value = cast_value(value, node.type, node.path, origin)
        if isinstance(value, dict) and node.children:
            out = dict(value)
            for name in node.children:
                if name in out:
                    child = self.manifest.node(f"{node.path}.{name}")
                    if child.type is not None or child.children:
                        out[name] = self._conform(child, out[name], origin)
            return out
        return value

    # --- config resolution -------------------------------------------------------------

    def _config_error(self, block: str, message: str) -> StateEngineError:
        return LoadConfigMissing(message) if block == "load" else StoreConfigMissing(message)

    def _resolve(self, node: Node, value: Any, block: str, field: str) -> Any:
        """A config value with its placeholders resolved (a lone one keeps its type)."""
        if isinstance(value, Template):
            if value.single is not None:
                resolved = self._get(value.single.path)
                if resolved is MISS or resolved is None:
                    raise self._config_error(
                        block,
                        f"{node.path}: _{block}.{field} placeholder ${{{value.single.path}}}"
                        " resolved to nothing",
                    )
                return resolved
            return self._render(node, value, block, field)
        if isinstance(value, dict):
            return {k: self._resolve(node, v, block, f"{field}.{k}") for k, v in value.items()}
        return value

    def _scalar(self, node: Node, ref: Ref, block: str, field: str) -> Any:
        value = self._get(ref.path)
        if value is MISS or value is None:
            raise self._config_error(
                block,
                f"{node.path}: _{block}.{field} placeholder ${{{ref.path}}} resolved to nothing",
            )
        if isinstance(value, (dict, list, bytes)):
            raise self._config_error(
                block,
                f"{node.path}: _{block}.{field} placeholder ${{{ref.path}}} is a"
                f" {type(value).__name__}; only scalars fill a template",
            )
        return value

    def _render(self, node: Node, template: Template, block: str, field: str) -> str:
        out = []
        for part in template.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            out.append(_text(self._scalar(node, part, block, field)))
        return "".join(out)

    def _http_url(self, node: Node, config: Mapping[str, Any], block: str) -> str:
        """The URL of an Http ``_load``/``_store``: placeholders encoded where they stand,
        the result inside the block's ``allow_hosts`` (default: the template's own host).

        :raises LoadError, StoreError: the URL is missing or outside the policy.
        """
        template = config.get("url")
        if not isinstance(template, Template):
            raise self._config_error(
                block, f"{node.path}: a Http _{block} needs url ({node.where})"
            )
        fail = LoadError if block == "load" else StoreError
        allow = config.get("allow_hosts") or [
            h for h in (url_host(template.parts),) if h is not None
        ]
        try:
            url = render_url(
                template.parts,
                lambda ref: _text(self._scalar(node, ref, block, "url")),  # type: ignore[arg-type]
            )
            check_destination(url, allow)
        except HttpPolicyError as exc:
            raise fail(f"{node.path}: _{block}.url refused: {exc} ({node.where})") from None
        return url

    def _render_sql(self, node: Node, template: Template) -> tuple[str, list[Any]]:
        """``where`` with each placeholder as a bound parameter marker."""
        sql: list[str] = []
        params: list[Any] = []
        parts = list(template.parts)
        for i, part in enumerate(parts):
            if isinstance(part, str):
                sql.append(part)
                continue
            params.append(self._scalar(node, part, "load", "where"))
            # 'x=${id}' written with quotes: the parameter replaces the quoted literal.
            after = parts[i + 1] if i + 1 < len(parts) else None
            if sql and sql[-1].endswith("'") and isinstance(after, str) and after.startswith("'"):
                sql[-1] = sql[-1][:-1]
                parts[i + 1] = after[1:]
            sql.append(MARKER)
        return "".join(sql), params

    def _target(self, node: Node, block: str) -> Slot | None:
        store = node.store
        if store is None:
            return None
        client = store.get("client")
        if client is None:
            raise StoreConfigMissing(f"{node.path}: _store has no client ({node.where})")
        field = get_client_adapter(client).location
        raw = store.get(field)
        if raw is None:
            raise StoreConfigMissing(f"{node.path}: a {client} _store needs {field} ({node.where})")
        if field == "url":
            key = self._http_url(node, store, "store")
        elif isinstance(raw, Template):
            key = self._render(node, raw, "store", field)
        else:
            key = str(raw)
        return Slot(node.path, client, key, self._headers(node, store, "store"), store.get("ttl"))

    def _headers(self, node: Node, config: Mapping[str, Any], block: str) -> dict[str, str] | None:
        """A block's ``headers`` with their placeholders resolved, or None."""
        if not config.get("headers"):
            return None
        return {
            k: str(self._resolve(node, v, block, f"headers.{k}"))
            for k, v in config["headers"].items()
        }

    def _client(self, name: str, node: Node, block: str) -> Any:
        client = self.clients.get(name)
        if client is None:
            cls = LoadClientNotConfigured if block == "load" else StoreClientNotConfigured
            raise cls(
                f"{node.path}: _{block}.client is {name} but this State has no {name} client;"
                f" pass clients={{{name!r}: ...}}"
            )
        return client

    def _adapter(self, name: str, node: Node, block: str) -> ClientAdapter:
        """The adapter around ``self.clients[name]`` (made again when that object changes)."""
        client = self._client(name, node, block)
        adapter = self._adapters.get(name)
        if adapter is None or adapter.client is not client:
            adapter = self._adapters[name] = get_client_adapter(name)(client)
        return adapter

    # --- store operations ---------------------------------------------------------------

    def _store_fail(self, node: Node, target: Slot, op: str, exc: Exception) -> StoreError:
        return StoreError(
            f"{node.path}: {target.client} store {op} of {redact_text(target.key)!r} failed:"
            f" {redact_text(str(exc))}"
        )

    def _store_get(self, node: Node, target: Slot) -> Any:
        adapter = self._adapter(target.client, node, "store")
        self.stats["store_reads"] += 1
        try:
            return adapter.get(target)
        except StateEngineError:
            raise
        except Exception as exc:
            raise self._store_fail(node, target, "read", exc) from None

    def _store_set(self, node: Node, target: Slot, value: Any, ttl: float | None) -> bool:
        adapter = self._adapter(target.client, node, "store")
        if ttl is not None and not adapter.ttl:
            raise UnsupportedClient(f"{node.path}: a {target.client} store has no TTL")
        try:
            return bool(adapter.set(target, value, ttl))
        except StateEngineError:
            raise
        except Exception as exc:
            raise self._store_fail(node, target, "write", exc) from None

    def _store_delete(self, node: Node, target: Slot) -> bool:
        adapter = self._adapter(target.client, node, "store")
        try:
            return bool(adapter.delete(target))
        except StateEngineError:
            raise
        except Exception as exc:
            raise self._store_fail(node, target, "delete", exc) from None

    # --- loads ---------------------------------------------------------------------------

    def _load(self, node: Node) -> Any:
        load = node.load
        if not load or not load.get("client"):
            return MISS  # seed: no _load / no client → no auto-load
        name = load["client"]
        adapter = self._adapter(name, node, "load")
        self.stats["loads"] += 1
        try:
            value = adapter.load(_LoadRequest(self, node, load))
        except StateEngineError:
            raise
        except Exception as exc:
            raise LoadError(
                f"{node.path}: {name} load failed: {redact_text(str(exc))} ({node.where})"
            ) from None
        if value is None or value is MISS:
            raise LoadNotFound(f"{node.path}: the {name} load found no data")
        mapping = load.get("map")
        if mapping and not adapter.maps_itself:
            if not isinstance(value, dict):
                raise LoadParseError(
                    f"{node.path}: _load.map needs a mapping from {name}, got"
                    f" {type(value).__name__}"
                )
            value = {k: value[src] for k, src in mapping.items() if src in value}
        return value

    def _need(self, node: Node, load: Mapping[str, Any], field: str) -> Any:
        raw = load.get(field)
        if raw is None:
            raise LoadConfigMissing(
                f"{node.path}: a {load['client']} _load needs {field} ({node.where})"
            )
        return self._resolve(node, raw, "load", field)


# --- helpers ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A scalar as it fills a template (booleans as ``true``/``false``)."""
    return ("true" if value else "false") if type(value) is bool else str(value)


def _rel(container: str, path: str) -> list[str]:
    return path[len(container) + 1 :].split(".")


def _dig(value: Any, rel: list[str]) -> Any:
    for name in rel:
        if not isinstance(value, dict) or name not in value:
            return MISS
        value = value[name]
    return value


def _with_field(base: Any, rel: list[str], value: Any, path: str) -> dict[str, Any]:
    if not isinstance(base, dict):
        raise StoreError(f"{path}: its container holds a {type(base).__name__}, not a mapping")
    out = dict(base)
    head, rest = rel[0], rel[1:]
    out[head] = _with_field(out.get(head) or {}, rest, value, path) if rest else value
    return out


def _without_field(base: dict[str, Any], rel: list[str]) -> dict[str, Any]:
    out = dict(base)
    if len(rel) == 1:
        out.pop(rel[0], None)
    elif isinstance(out.get(rel[0]), dict):
        out[rel[0]] = _without_field(out[rel[0]], rel[1:])
    return out


def _fill_static(manifest: Manifest, node: Node, value: Any) -> Any:
    """Add the node's constant children (``driver: postgres``) a loaded map lacks."""
    if not isinstance(value, dict) or not node.children:
        return value
    out = dict(value)
    for name in node.children:
        if name not in out:
            child = manifest.node(f"{node.path}.{name}")
            if child.has_static:
                out[name] = copy_value(child.static)
    return out


__all__ = ["MAX_RECURSION", "KeyNotDefined", "State"]
