"""The HTTP gateway: JSON endpoints, a server-sent-events change feed and a dashboard.

An optional extra (``pip install 'stateengine[http]'``): the core install stays small.
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
stateengine.app.gateway``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

HTTP_FILE = "http.json"
"""Written into the data directory by a running gateway: ``{pid, url, bind}``."""
__all__ = ["HTTP_FILE", "gateway_url"]


def gateway_url(
    data_dir: Path, timeout: float = 30.0, running: Callable[[], bool] | None = None
) -> str:
    """The URL from ``DIR/http.json``, waiting (bounded) for the gateway to listen.

    ``serve --http`` announces the server before its gateway is up, so readers wait here.

    :param running: checked while waiting; False stops the wait (what started it died).
    :raises TimeoutError: no gateway within *timeout*, or *running* said False.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return str(json.loads((data_dir / HTTP_FILE).read_text())["url"])
        except (OSError, ValueError, KeyError):
            if running is not None and not running():
                raise TimeoutError("the process that starts the gateway is gone") from None
            time.sleep(0.05)
    raise TimeoutError(f"no HTTP gateway in {data_dir} within {timeout} s")
