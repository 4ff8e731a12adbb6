"""A real ``stateengine serve --http`` subprocess and a real HTTP client (httpx)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gwutil import Gateway, client, start


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One server + gateway per test module (tests use their own table names)."""
    server, info = start(tmp_path_factory.mktemp("gw"))
    try:
        with client(info) as http:
            yield Gateway(server, info, http)
    finally:
        assert server.stop() == 0, server.output()
        server.cleanup()
        # The gateway stopped cleanly on SIGTERM (a kill -9 fallback would leave it).
        assert not (server.data_dir / "http.json").exists(), server.output()
        assert "killed" not in server.output()
