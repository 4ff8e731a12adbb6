from __future__ import annotations

from collections.abc import Callable

import pytest

from stateengine.testing import ServerProcess


@pytest.fixture
def server(stateengine_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A real ``stateengine serve`` subprocess on a private data directory, with the
    embedded defaults (the kit's ``stateengine_server`` runs ``--fsync no``)."""
    return stateengine_server_factory()
