"""A kit for testing code that uses stateengine, starting with a private server process.

See :class:`ServerProcess` (``stateengine.testing.server``) for an example.
"""

from stateengine.testing.server import ServerProcess

__all__ = ["ServerProcess"]
