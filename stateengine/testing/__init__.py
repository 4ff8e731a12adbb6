"""The stress-test kit: check that a concurrent workload on stateengine did the right thing.

* :class:`ServerProcess` (``stateengine.testing.server``): a private server subprocess.
* ``stateengine.testing.fixtures``: the pytest plugin (``stateengine_server``, ...), loaded
  by the ``pytest11`` entry point when stateengine is installed.
* ``stateengine.testing.strategies``: hypothesis strategies for records and requests.
* ``stateengine.testing.machine``: :class:`~stateengine.testing.machine.WorkerStateMachine`,
  rules run by worker processes, checked against the in-process ``Engine``.
* ``stateengine.testing.history`` and ``.checker``: recorded histories (the client's
  ``history=`` option) and their linearizability checker.
* ``stateengine.testing.nemesis``: faults (server and worker kills and pauses) on a
  schedule beside a workload, recorded in its history; ``.invariants``: the workload's own
  guarantees, checked over the same history (:func:`~stateengine.testing.invariants.verify`).

Names are imported lazily, so that the pytest plugin costs nothing to load: hypothesis,
ZeroMQ and msgpack are imported only by the modules that need them. See docs/testing.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stateengine.client.history import recorded
    from stateengine.testing.server import ServerProcess

__all__ = ["ServerProcess", "recorded"]

_HOMES = {
    "ServerProcess": "stateengine.testing.server",
    "recorded": "stateengine.client.history",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'stateengine.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
