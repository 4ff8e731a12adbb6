"""``Env``: load from environment variables (load only)."""

from __future__ import annotations

import os
from collections.abc import Mapping


class EnvClient:
    """Reads ``os.environ`` (or the mapping given, for tests) at each call."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def __repr__(self) -> str:
        return "EnvClient()"  # never the values: they are often secrets

    def get(self, name: str) -> str | None:
        env = os.environ if self._environ is None else self._environ
        return env.get(name)
