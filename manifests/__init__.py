"""Manifest state: YAML-declared keys that store to and auto-load from env, files,
databases, key-value stores and HTTP (SPEC §4, seed 003).

* :mod:`.parser` — manifest files → nodes (qualified placeholders, inherited metadata).
* :mod:`.state` — :class:`State`: ``get``/``set``/``delete``/``exists``, transport-free.
* :mod:`.types` — ``_state.type`` validation and casting.
* one module per client: :mod:`.env_client`, :mod:`.file_client`, :mod:`.db_client`,
  :mod:`.kvs_client`, :mod:`.memory_client`, :mod:`.http_client`, each with its
  adapter; the adapter base class, the registry and the interfaces in :mod:`.clients`.
"""

from stateengine.manifests.clients import ClientAdapter, default_clients, register_client
from stateengine.manifests.db_client import DbClient
from stateengine.manifests.env_client import EnvClient
from stateengine.manifests.file_client import FileClient
from stateengine.manifests.http_client import HttpClient
from stateengine.manifests.kvs_client import RedisKVS
from stateengine.manifests.memory_client import InMemoryClient
from stateengine.manifests.parser import Manifest, Node
from stateengine.manifests.state import State
from stateengine.manifests.types import cast_value

__all__ = [
    "ClientAdapter",
    "DbClient",
    "EnvClient",
    "FileClient",
    "HttpClient",
    "InMemoryClient",
    "Manifest",
    "Node",
    "RedisKVS",
    "State",
    "cast_value",
    "default_clients",
    "register_client",
]
