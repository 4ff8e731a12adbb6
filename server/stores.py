"""The store registry: every durable backend by name, with how to detect, check and configure it.

One :class:`StoreBackend` entry per backend replaces the if-chains over names that used
to sit in ``open_store``, ``detect_backend``, ``check`` and the command line: the entry
says how to open the store, how to recognise its files in a data directory, how
``stateengine check`` verifies it (read only), whether ``stateengine repair`` knows it,
and which ``serve`` options (``--pg-dsn``, ``--snapshot-bytes``, ...) it takes.

The built-ins are ``log`` (the default), ``sqlite``, ``postgres`` and ``json``. A third
party adds one with :func:`register_store` in-process, or from an installed package
through the entry point group ``stateengine.stores`` (``NAME = module:BACKEND``, where
``BACKEND`` is a :class:`StoreBackend`); ``stateengine serve --store NAME`` then selects
it. docs/extending.md walks through one.

Entry points are read once per process, on first use; one that fails to load is logged
and left out (so that one broken plugin does not stop every server), and naming it
raises :class:`~stateengine.server.persist_base.PersistenceError` with the cause.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from stateengine import defaults
from stateengine.server.engine import TableEngine
from stateengine.server.persist_base import CorruptStore, PersistenceError
from stateengine.server.persist_json import JSON_NAME, JsonStore, load_json
from stateengine.server.persist_log import (
    SNAPSHOT_NAME,
    SNAPSHOT_PREV,
    LogStore,
    check_log,
    list_segments,
)
from stateengine.server.persist_sql import SQLITE_NAME, PostgresStore, SqliteStore

if TYPE_CHECKING:
    from stateengine.server.persistence import Store

__all__ = [
    "DEFAULT_STORE",
    "ENTRY_POINT_GROUP",
    "StoreBackend",
    "StoreOption",
    "get_store",
    "name_of",
    "register_store",
    "store_backends",
    "store_names",
    "unregister_store",
]

log = logging.getLogger("stateengine.persistence")

ENTRY_POINT_GROUP: Final = "stateengine.stores"
DEFAULT_STORE: Final = defaults.STORE


@dataclass(frozen=True)
class StoreOption:
    """One ``serve`` option of a backend: ``--pg-dsn`` becomes the keyword ``dsn``.

    :param flag: the command-line flag (``--pg-dsn``); unique across all backends.
    :param name: the keyword argument of the backend's factory (``dsn``).
    :param type: converts the command-line text (``int`` for sizes).
    :param default: also what the factory gets when the flag is not given.
    """

    flag: str
    name: str
    type: Callable[[str], Any] = str
    default: Any = None
    help: str = ""

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value under (``pg_dsn``)."""
        return self.flag.lstrip("-").replace("-", "_")


def _open_recover_check(
    backend: StoreBackend, data_dir: Path, report: dict[str, Any], options: Mapping[str, Any]
) -> None:
    """The generic check: open the store (fsync ``no``), recover into a scratch engine."""
    store = backend.factory(data_dir, "no", **options)
    try:
        engine = TableEngine()
        store.recover(engine)
    finally:
        store.close()
    report["seq"] = engine.seq
    report["records"] = sum(len(t.records) for t in engine.tables.values())


@dataclass(frozen=True)
class StoreBackend:
    """A durable store as the server, ``check``, ``repair`` and the CLI see it.

    :param name: what ``--store`` and ``open_store(backend=...)`` take.
    :param factory: ``factory(data_dir, fsync, **options) -> Store`` (a class works).
    :param detect: whether a data directory holds this backend's files, so that a server
        asked for another backend refuses instead of starting empty. None: it leaves no
        files there (``postgres``).
    :param check: ``check(data_dir, report, options)`` fills ``report`` (``seq``,
        ``records``, anything else) and appends to ``report["problems"]``; read only. None:
        open the store with fsync ``no`` and recover into a scratch engine.
    :param repair: ``repair(data_dir) -> report`` for ``stateengine repair``; None: the
        backend has none (use the database's own tools).
    :param options: its ``serve`` options; their defaults are the factory's defaults.
    """

    name: str
    factory: Callable[..., Store]
    detect: Callable[[Path], bool] | None = None
    check: Callable[[Path, dict[str, Any], Mapping[str, Any]], None] | None = None
    repair: Callable[[Path], dict[str, Any]] | None = None
    options: tuple[StoreOption, ...] = ()
    summary: str = ""

    def open(self, data_dir: Path, fsync: str, **options: Any) -> Store:
        """The store, with every option not given at its :class:`StoreOption` default."""
        given = {o.name: o.default for o in self.options}
        given.update(options)
        return self.factory(data_dir, fsync, **given)

    def run_check(self, data_dir: Path, report: dict[str, Any], options: Mapping[str, Any]) -> None:
        """Fill *report* for ``stateengine check`` (see *check*); damage is a problem.

        :raises PersistenceError: the store cannot be opened (not damage: unreachable).
        """
        try:
            if self.check is not None:
                self.check(data_dir, report, options)
            else:
                _open_recover_check(self, data_dir, report, options)
        except CorruptStore as exc:
            report["problems"].append(str(exc))


# --- the built-ins -----------------------------------------------------------------------------


def _log_detect(data_dir: Path) -> bool:
    snapshots = [data_dir / SNAPSHOT_NAME, data_dir / SNAPSHOT_PREV]
    if any(p.exists() for p in snapshots):
        return True
    return data_dir.is_dir() and bool(list_segments(data_dir))


def _log_check(data_dir: Path, report: dict[str, Any], options: Mapping[str, Any]) -> None:
    check_log(data_dir, report)


def _log_repair(data_dir: Path) -> dict[str, Any]:
    from stateengine.server.persistence import repair_log  # the module that imports this one

    return repair_log(data_dir)


def _json_check(data_dir: Path, report: dict[str, Any], options: Mapping[str, Any]) -> None:
    """Parse ``state.json`` without opening the store (which would clear a stray .tmp)."""
    engine = TableEngine()
    path = data_dir / JSON_NAME
    if path.exists():
        load_json(path.read_text(encoding="utf-8"), engine)
    report["seq"] = engine.seq
    report["records"] = sum(len(t.records) for t in engine.tables.values())


_BUILTINS: Final = (
    StoreBackend(
        "log",
        LogStore,
        detect=_log_detect,
        check=_log_check,
        repair=_log_repair,
        options=(
            StoreOption(
                "--snapshot-bytes",
                "snapshot_bytes",
                int,
                defaults.SNAPSHOT_BYTES,
                "log size that triggers a snapshot (log store)",
            ),
        ),
        summary="write-ahead log + snapshots in the data dir (the default)",
    ),
    StoreBackend(
        "sqlite",
        SqliteStore,
        detect=lambda d: (d / SQLITE_NAME).exists(),
        summary=f"DATA_DIR/{SQLITE_NAME}",
    ),
    StoreBackend(
        "postgres",
        PostgresStore,
        options=(
            StoreOption(
                "--pg-dsn",
                "dsn",
                str,
                defaults.PG_DSN,
                "libpq connection string (postgres store; default: empty, libpq's own "
                "defaults and $PGHOST, $PGDATABASE, $PGUSER, ...)",
            ),
            StoreOption(
                "--pg-schema",
                "schema",
                str,
                defaults.PG_SCHEMA,
                "the schema holding the tables (postgres store)",
            ),
        ),
        summary="three tables in a PostgreSQL schema (psycopg 3)",
    ),
    StoreBackend(
        "json",
        JsonStore,
        detect=lambda d: (d / JSON_NAME).exists(),
        check=_json_check,
        summary=f"DATA_DIR/{JSON_NAME}, human-readable, for small states",
    ),
)

_registered: dict[str, StoreBackend] = {b.name: b for b in _BUILTINS}
_broken: dict[str, str] = {}  # entry point name → why it did not load
_entry_points_read = False


def _read_entry_points() -> None:
    """Add the backends installed packages declare (once per process)."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registered:
            log.warning(
                "store entry point %s (%s) ignored: a store named %r is already registered",
                ep.name,
                ep.value,
                ep.name,
            )
            continue
        try:
            backend = ep.load()
            if not isinstance(backend, StoreBackend):
                raise TypeError(f"{ep.value} is a {type(backend).__name__}, not a StoreBackend")
            if backend.name != ep.name:
                raise ValueError(f"{ep.value} is named {backend.name!r}, not {ep.name!r}")
        except Exception as exc:  # a plugin's own import error: any type
            _broken[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("store entry point %s (%s) did not load: %s", ep.name, ep.value, exc)
            continue
        _registered[ep.name] = backend


def register_store(backend: StoreBackend, *, replace: bool = False) -> None:
    """Make *backend* available by its name in this process (``open_store``, ``check``).

    :raises ValueError: a backend of that name exists and *replace* is False, or the name
        is ``none`` (``--store none``: memory only).
    """
    _read_entry_points()
    if backend.name == "none" or not backend.name:
        raise ValueError(f"{backend.name!r} cannot name a store")
    if backend.name in _registered and not replace:
        raise ValueError(f"a store named {backend.name!r} is already registered")
    _registered[backend.name] = backend
    _broken.pop(backend.name, None)


def unregister_store(name: str) -> None:
    """Forget a store registered with :func:`register_store` (tests, docs snippets).

    :raises ValueError: *name* is a built-in.
    """
    if name in {b.name for b in _BUILTINS}:
        raise ValueError(f"{name!r} is a built-in store")
    _registered.pop(name, None)


def store_backends() -> dict[str, StoreBackend]:
    """Every usable backend by name: the built-ins first, then registered and installed."""
    _read_entry_points()
    return dict(_registered)


def store_names() -> tuple[str, ...]:
    """The names ``--store`` accepts (besides ``none``)."""
    return tuple(store_backends())


def get_store(name: str) -> StoreBackend:
    """The backend called *name*.

    :raises ValueError: no backend has that name.
    :raises PersistenceError: an installed entry point of that name failed to load.
    """
    backends = store_backends()
    if name in backends:
        return backends[name]
    if name in _broken:
        raise PersistenceError(f"the store {name!r} did not load: {_broken[name]}")
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(backends)}")


def name_of(store: object) -> str:
    """The ``--store`` name of an open store (``log``, ``sqlite``, ...): the registered
    backend whose factory made it; else its class name (a store made by hand)."""
    for backend in store_backends().values():
        if backend.factory is type(store):
            return backend.name
    return type(store).__name__
