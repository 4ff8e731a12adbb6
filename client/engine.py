"""``stateengine.Engine``: the whole command API in one process, no server.

Useful for scripts, tests and as the model a multi-process run is checked against. It
wraps the writer's :class:`~stateengine.server.engine.TableEngine`, so it behaves exactly
as the server does, minus persistence and the arena.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stateengine.client.commands import CommandsMixin
from stateengine.server.engine import TableEngine


class Engine(CommandsMixin):
    """The table engine behind the command methods. Not thread-safe.

    :param clock: wall-clock seconds used for lease deadlines; tests pass a fake.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._engine = TableEngine(clock=clock)

    @property
    def seq(self) -> int:
        """The global commit sequence: one per committed write request."""
        return self._engine.seq

    def execute(self, request: Any) -> dict[str, Any]:
        """Apply one request map and return the reply map, as on the wire; never raises."""
        return self._engine.execute(request)

    def _call(self, request: dict[str, Any]) -> Any:
        result, _ = self._engine.apply(request)
        return result

    def __repr__(self) -> str:
        return f"<Engine tables={len(self._engine.tables)} seq={self._engine.seq}>"
