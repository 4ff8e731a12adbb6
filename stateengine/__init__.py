"""stateengine: a local state server for Python processes.

The public API, re-exported from the subpackages where each concept lives.

Names are imported lazily (PEP 562 ``__getattr__``, as :mod:`stateengine.testing` does):
``import stateengine.shm`` or loading the pytest plugin must not import the client stack
(ZeroMQ, asyncio, YAML). ``import stateengine; stateengine.connect`` imports the client on
first use of the name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stateengine import errors
    from stateengine.client.aio import AsyncClient, connect_async
    from stateengine.client.client import Client, connect
    from stateengine.client.engine import Engine
    from stateengine.client.state import State
    from stateengine.errors import StateEngineError

__all__ = [
    "AsyncClient",
    "Client",
    "Engine",
    "State",
    "StateEngineError",
    "connect",
    "connect_async",
    "errors",
]
__version__ = "0.1.0"

_HOMES = {
    "AsyncClient": "stateengine.client.aio",
    "connect_async": "stateengine.client.aio",
    "Client": "stateengine.client.client",
    "connect": "stateengine.client.client",
    "Engine": "stateengine.client.engine",
    "State": "stateengine.client.state",
    "StateEngineError": "stateengine.errors",
}


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("stateengine.errors")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'stateengine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
