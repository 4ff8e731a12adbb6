"""The HTTP gateway: JSON endpoints, a server-sent-events change feed and a dashboard.

An optional extra (``pip install -e '.[http]'`` from the checkout): the core install stays small.
The gateway is one more *client* of the writer, in its own process: it reads through
the shared-memory arena like any worker and writes through the ZeroMQ queue, so it adds
no second path into the state and never runs inside the writer's loop.

Why FastAPI on uvicorn (``loop="uvloop"``): the seed names FastAPI; it is a well-kept
asyncio framework whose OpenAPI description comes from the routes themselves, and
uvicorn runs it on uvloop, the loop the writer already uses. aiohttp would have needed
a hand-written OpenAPI document, Starlette alone too.

Run it with ``stateengine serve --http 127.0.0.1:PORT`` (started as a child process
once the server is up, stopped with it) or attach it to a running server with
``stateengine http --data-dir DIR --bind 127.0.0.1:PORT`` (= ``python -m
stateengine.app.gateway``). Every request needs the gateway's token, on every
address (``auth``); :func:`gateway_info` reads it, with the URLs, from ``DIR/http.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HTTP_FILE = "http.json"
"""Written into the data directory by a running gateway (mode 0600: it holds the token):
``{pid, url, bind, token, login_url}``."""
__all__ = ["HTTP_FILE", "GatewayInfo", "gateway_info"]


@dataclass(frozen=True)
class GatewayInfo:
    """A running gateway, as its ``DIR/http.json`` describes it."""

    pid: int
    url: str
    """The base URL (``http://127.0.0.1:8080/``)."""
    token: str
    login_url: str
    """``url?token=T``: opened in a browser, it leaves the token in a cookie."""

    @property
    def headers(self) -> dict[str, str]:
        """What an API client sends: ``{"Authorization": "Bearer T"}``."""
        return {"Authorization": f"Bearer {self.token}"}


def gateway_info(
    data_dir: Path, timeout: float = 30.0, running: Callable[[], bool] | None = None
) -> GatewayInfo:
    """The gateway of *data_dir*, from ``DIR/http.json``, waiting (bounded) for it to listen.

    ``serve --http`` announces the server before its gateway is up, so readers wait here.
    Only the data directory's owner can read the file (the directory is 0700).

    :param running: checked while waiting; False stops the wait (what started it died).
    :raises TimeoutError: no gateway within *timeout*, or *running* said False.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = json.loads((data_dir / HTTP_FILE).read_text())
            return GatewayInfo(
                int(info["pid"]), str(info["url"]), str(info["token"]), str(info["login_url"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            if running is not None and not running():
                raise TimeoutError("the process that starts the gateway is gone") from None
            time.sleep(0.05)
    raise TimeoutError(f"no HTTP gateway in {data_dir} within {timeout} s")
