"""stateengine: a local state server for Python processes.

The public API, re-exported from the subpackages where each concept lives.
"""

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
