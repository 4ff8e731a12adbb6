"""``Env``: load from environment variables (load only)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from stateengine.manifests.clients import ClientAdapter, LoadRequest

__all__ = [
    "ADAPTER",
    "EnvAdapter",
    "EnvClient",
]


class EnvClient:
    """Reads ``os.environ`` (or the mapping given, for tests) at each call."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def __repr__(self) -> str:
        return "EnvClient()"  # never the values: they are often secrets

    def get(self, name: str) -> str | None:
        env = os.environ if self._environ is None else self._environ
        return env.get(name)


class EnvAdapter(ClientAdapter):
    """``_load.client: Env``: ``key`` names a variable, or ``map`` names one per field."""

    name = "Env"
    stores = False
    maps_itself = True

    @classmethod
    def default(cls) -> EnvClient:
        return EnvClient()

    def load(self, request: LoadRequest) -> Any:
        mapping = request.config.get("map")
        if mapping:
            get = self.client.get
            found = {k: v for k, var in mapping.items() if (v := get(var)) is not None}
            return found or None
        return self.client.get(str(request.need("key")))


ADAPTER = EnvAdapter
