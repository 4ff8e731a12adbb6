"""The asyncio client's command mixin is generated from the blocking one (issue 15)."""

from __future__ import annotations

import inspect

from stateengine.client import _gen_async
from stateengine.client.aio import AsyncClient
from stateengine.client.commands import CommandsMixin
from stateengine.client.commands_async import AsyncCommandsMixin


def _methods(cls: type) -> dict[str, object]:
    return {n: f for n, f in vars(cls).items() if inspect.isfunction(f)}


def test_generated_async_mixin_is_current() -> None:
    """Regenerate and compare: fails when commands.py changed and nobody re-ran
    ``python -m stateengine.client._gen_async``."""
    assert _gen_async.OUTPUT.read_text() == _gen_async.generate(), (
        "client/commands_async.py is stale: run python -m stateengine.client._gen_async"
    )


def test_a_changed_command_makes_the_generated_file_differ() -> None:
    """The comparison above can fail: a new argument in commands.py changes the output."""
    source = _gen_async.SOURCE.read_text()
    changed = source.replace("def list_states(self)", "def list_states(self, prefix: str = '')")
    assert changed != source
    assert _gen_async.generate(changed) != _gen_async.OUTPUT.read_text()


def test_async_mixin_has_every_sync_method_with_its_signature() -> None:
    sync, aio = _methods(CommandsMixin), _methods(AsyncCommandsMixin)
    assert sync.keys() == aio.keys()
    for name, method in aio.items():
        assert inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == inspect.signature(sync[name]), name  # type: ignore[arg-type]
        assert method.__doc__ == sync[name].__doc__, name  # type: ignore[attr-defined]


def test_async_client_methods_are_coroutines() -> None:
    for name in _methods(CommandsMixin):
        if not name.startswith("_"):
            assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
