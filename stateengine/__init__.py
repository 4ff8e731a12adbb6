"""stateengine: a local state server for Python processes.

The public API, re-exported from the subpackages where each concept lives.
"""

from stateengine import errors
from stateengine.client.client import Client, connect
from stateengine.client.engine import Engine
from stateengine.errors import StateEngineError

__all__ = ["Client", "Engine", "StateEngineError", "connect", "errors"]
__version__ = "0.1.0"
