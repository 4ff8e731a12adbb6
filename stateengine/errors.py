"""Every exception stateengine raises, and the stable wire name of each.

One home for errors, shared by the engine, the server, both clients and the
manifest layer (as redis-py keeps `redis/exceptions.py`). A reply with
``ok: false`` carries ``error: {type, message}``; :func:`from_wire` turns it back
into the same class on the client, so ``except stateengine.errors.SchemaError``
works the same in process and across the socket.

Where an error has a fix the user can apply, its message names it (as py-lmdb's
``MapFullError`` names ``map_size``).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ERROR_TYPES",
    "AmbiguousFile",
    "BadRequest",
    "CapacityError",
    "ConnectionRefused",
    "DuplicateId",
    "ImmutableId",
    "InternalError",
    "InvalidManifest",
    "KeyNotDefined",
    "LoadClientNotConfigured",
    "LoadConfigMissing",
    "LoadError",
    "LoadNotFound",
    "LoadParseError",
    "ManifestError",
    "ManifestFileNotFound",
    "ManifestParseError",
    "PayloadTooLarge",
    "RecordNotFound",
    "RecursionLimitExceeded",
    "SchemaError",
    "ServerUnavailable",
    "SnapshotExpired",
    "StateEngineError",
    "StateExists",
    "StateNotFound",
    "StateTypeMismatch",
    "StorageUnavailable",
    "StoreClientNotConfigured",
    "StoreConfigMissing",
    "StoreError",
    "StoreSerializeError",
    "UnknownCommand",
    "UnsupportedClient",
    "VersionConflict",
    "from_wire",
]


class StateEngineError(Exception):
    """Base class of every stateengine error. ``type`` is the stable wire name."""

    type: ClassVar[str] = "StateEngineError"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message}


# --- request and table errors (SPEC §5) -----------------------------------------------


class BadRequest(StateEngineError, ValueError):
    """The request is malformed: not a map, a missing or wrongly typed argument."""

    type = "BadRequest"


class UnknownCommand(BadRequest):
    """``command`` names no action this server knows."""

    type = "UnknownCommand"


class PayloadTooLarge(BadRequest):
    """A request or reply exceeds the size limit; page with ``offset``/``limit``."""

    type = "PayloadTooLarge"


class StateNotFound(StateEngineError, KeyError):
    """The named table does not exist."""

    type = "StateNotFound"

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class StateExists(StateEngineError):
    """``CREATE_STATE`` on a name that is taken."""

    type = "StateExists"


class RecordNotFound(StateEngineError, KeyError):
    """No record with that id in the table."""

    type = "RecordNotFound"

    def __str__(self) -> str:
        return self.message


class DuplicateId(StateEngineError):
    """An explicit id that the table (or the same ``SET_STATE`` input) already holds."""

    type = "DuplicateId"


class ImmutableId(StateEngineError):
    """A write tried to change a record's id."""

    type = "ImmutableId"


class SchemaError(StateEngineError, ValueError):
    """A record or field violates the table's schema; the message names the field."""

    type = "SchemaError"


class CapacityError(StateEngineError):
    """A table is at its ``max_length``, or the arena is full (the message names the setting)."""

    type = "CapacityError"


class VersionConflict(StateEngineError):
    """A precondition (``expected_version``, ``if_version``, ``if_match``) did not hold."""

    type = "VersionConflict"


class ServerUnavailable(StateEngineError, ConnectionError):
    """The writer did not answer within the client's timeout, or is gone."""

    type = "ServerUnavailable"


class ConnectionRefused(ServerUnavailable):
    """A remote server refused this client's connection; the message names the cause
    (a key not allowed in, a wrong server key, no CurveZMQ). Raised without waiting for
    the timeout: retrying the same keys cannot help."""

    type = "ConnectionRefused"


class SnapshotExpired(StateEngineError):
    """A pinned snapshot was held past its expiry, or could not be validated; retry."""

    type = "SnapshotExpired"


class StorageUnavailable(StateEngineError):
    """The server cannot make writes durable now (disk full, I/O error, database gone).

    The write had no effect: the pass that could not be stored was undone, and writes
    are refused until the store takes writes again (the server checks about once a
    second); reads go on. Free space (or fix the store), then retry the write.
    """

    type = "StorageUnavailable"


# --- manifest errors (SPEC §4, seed 003) -----------------------------------------------


class ManifestError(StateEngineError):
    """A manifest file is missing, ambiguous or cannot be parsed."""

    type = "ManifestError"


class KeyNotDefined(ManifestError, KeyError):
    """No manifest defines the requested path."""

    type = "KeyNotDefined"

    def __str__(self) -> str:
        return self.message


class LoadError(StateEngineError):
    """Auto-load through ``_load`` failed (client not configured, config missing, ...)."""

    type = "LoadError"


class StoreError(StateEngineError):
    """Storing through ``_store`` failed (client not configured, serialize error, ...)."""

    type = "StoreError"


class RecursionLimitExceeded(StateEngineError, RecursionError):
    """Placeholder resolution went deeper than 20 keys or met a cycle (named)."""

    type = "RecursionLimitExceeded"


class ManifestFileNotFound(KeyNotDefined):
    """No ``<file>.yml`` or ``<file>.yaml`` in the manifest directory for a path's first segment.

    A subclass of :class:`KeyNotDefined` too: a key in a missing file is a key no manifest defines.
    """

    type = "ManifestFileNotFound"


class _LocatedManifestError(ManifestError):
    """A manifest error that can name the file and line it was found at."""

    def __init__(
        self, message: str = "", *, file: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class AmbiguousFile(_LocatedManifestError):
    """Both ``<file>.yml`` and ``<file>.yaml`` exist; paths ignore extensions, so pick one."""

    type = "AmbiguousFile"


class ManifestParseError(_LocatedManifestError):
    """A manifest file is not valid YAML, holds several documents, or is too large."""

    type = "ManifestParseError"


class InvalidManifest(_LocatedManifestError):
    """A manifest parses as YAML but breaks a rule: a bad node name, metadata of the wrong
    shape, an unknown client, type or placeholder. The message names file and line."""

    type = "InvalidManifest"


class LoadClientNotConfigured(LoadError):
    """``_load.client`` names a client this State was not given (pass it in ``clients``)."""

    type = "LoadClientNotConfigured"


class LoadConfigMissing(LoadError):
    """A config key the load client needs (key/url/table/map/connection) is missing or
    resolved to nothing."""

    type = "LoadConfigMissing"


class LoadNotFound(LoadError):
    """The load client answered, but with no data for the key."""

    type = "LoadNotFound"


class LoadParseError(LoadError):
    """The load client's answer could not be decoded (bad JSON, ...)."""

    type = "LoadParseError"


class StoreClientNotConfigured(StoreError):
    """``_store.client`` names a client this State was not given (pass it in ``clients``)."""

    type = "StoreClientNotConfigured"


class StoreConfigMissing(StoreError):
    """A config key the store client needs (key/url/client) is missing or resolved to nothing."""

    type = "StoreConfigMissing"


class StoreSerializeError(StoreError):
    """A value cannot be serialised for its store (JSON for KVS/File/Http; msgpack types)."""

    type = "StoreSerializeError"


class UnsupportedClient(StoreError):
    """The store client cannot do what was asked (a TTL on a File store, ...)."""

    type = "UnsupportedClient"


class StateTypeMismatch(SchemaError):
    """A value loaded or set for a manifest key does not match (and cannot be cast to) its
    ``_state.type``; the message names the key and the type."""

    type = "StateTypeMismatch"


class InternalError(StateEngineError):
    """A bug in stateengine; the request had no effect. Please report it."""

    type = "InternalError"


ERROR_TYPES: dict[str, type[StateEngineError]] = {
    cls.type: cls
    for cls in (
        BadRequest,
        UnknownCommand,
        PayloadTooLarge,
        StateNotFound,
        StateExists,
        RecordNotFound,
        DuplicateId,
        ImmutableId,
        SchemaError,
        CapacityError,
        VersionConflict,
        ServerUnavailable,
        ConnectionRefused,
        SnapshotExpired,
        StorageUnavailable,
        ManifestError,
        KeyNotDefined,
        LoadError,
        StoreError,
        RecursionLimitExceeded,
        InternalError,
        ManifestFileNotFound,
        AmbiguousFile,
        ManifestParseError,
        InvalidManifest,
        LoadClientNotConfigured,
        LoadConfigMissing,
        LoadNotFound,
        LoadParseError,
        StoreClientNotConfigured,
        StoreConfigMissing,
        StoreSerializeError,
        UnsupportedClient,
        StateTypeMismatch,
    )
}


def from_wire(error: Any) -> StateEngineError:
    """Rebuild the exception a reply's ``error`` map describes.

    An unknown type name (a newer server) becomes the base class, keeping the message.
    """
    if not isinstance(error, dict):
        return StateEngineError(f"malformed error in reply: {error!r}")
    name = error.get("type")
    message = str(error.get("message", ""))
    cls = ERROR_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        return StateEngineError(f"{name}: {message}")
    return cls(message)
