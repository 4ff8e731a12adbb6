"""Helpers of the HTTP gateway tests: a ``serve --http`` subprocess and its URL."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from stateengine.app.gateway import GatewayInfo, gateway_info
from stateengine.testing import ServerProcess


def wait_for_gateway(data_dir: Path, server: ServerProcess, timeout: float = 30.0) -> GatewayInfo:
    """The gateway's URL and token from ``DIR/http.json`` (``serve`` writes it before it
    is ready)."""

    def running() -> bool:
        return server.proc is not None and server.proc.poll() is None

    try:
        return gateway_info(data_dir, timeout, running=running)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}:\n{server.output()}") from None


@dataclass
class Gateway:
    server: ServerProcess
    info: GatewayInfo
    http: httpx.Client
    """Sends the token (``Authorization: Bearer``) with every request."""

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir


def start(
    tmp: Path, *extra: str, bind: str = "127.0.0.1:0", env: dict[str, str] | None = None
) -> tuple[ServerProcess, GatewayInfo]:
    """``serve --http BIND`` on ``tmp/data``; the server and its gateway (URL, token)."""
    server = ServerProcess(tmp / "data", "--http", bind, *extra, env=env).start()
    try:
        return server, wait_for_gateway(server.data_dir, server)
    except BaseException:
        server.stop()
        server.cleanup()
        raise


def client(info: GatewayInfo) -> httpx.Client:
    """An httpx client of the gateway that sends its token."""
    return httpx.Client(base_url=info.url, headers=info.headers, timeout=10.0)


def wait_output(server: ServerProcess, text: str, timeout: float = 10.0) -> str:
    """The server's output once it contains *text* (bounded)."""
    deadline = time.monotonic() + timeout
    while text not in (out := server.output()):
        assert time.monotonic() < deadline, f"{text!r} not printed within {timeout} s:\n{out}"
        time.sleep(0.05)
    return out
