"""``python -m stateengine.app.gateway``: run the HTTP gateway for a running server.

    python -m stateengine.app.gateway --data-dir DIR --bind 127.0.0.1:8080

``stateengine serve --http HOST:PORT`` starts this as a child process; ``stateengine
http`` runs it in the foreground against a server already running. The process binds
its socket itself (port 0: any free port), writes ``DIR/http.json`` (``{pid, url,
bind, token, login_url}``, mode 0600) once it listens, prints the login URL, and
exits when the server it serves stops, on SIGTERM/SIGINT, removing that file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from stateengine import defaults
from stateengine.app.gateway import HTTP_FILE
from stateengine.app.gateway.auth import TOKEN_ENV, TOKEN_FILE, login_url, resolve_token
from stateengine.errors import StateEngineError
from stateengine.limits import MAX_REQUEST_BYTES
from stateengine.runtime import discovery as paths


def split_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → ``(host, port)``.

    :raises ValueError: not of that shape.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stateengine http", description="HTTP gateway and dashboard for a running server"
    )
    p.add_argument("--data-dir", help="the server's data directory (default as `serve`)")
    p.add_argument("--endpoint", help="the server's endpoint (default: from server.json)")
    p.add_argument("--bind", default=defaults.HTTP_BIND, metavar="HOST:PORT", help="port 0: any")
    p.add_argument(
        "--http-token-file",
        metavar="PATH",
        help=f"read the token from PATH (mode 0600; default: ${TOKEN_ENV}, else DIR/{TOKEN_FILE})",
    )
    p.add_argument("--http-token", help="the token itself (shown by ps: prefer the file)")
    p.add_argument("--max-body-bytes", type=int, default=MAX_REQUEST_BYTES)
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def gateway_file(data_dir: Path, pid: int) -> Path:
    """Where the gateway of process *pid* is described when ``http.json`` names another,
    running gateway: ``DIR/http.<pid>.json``."""
    return data_dir / f"http.{pid}.json"


def claim_info_file(data_dir: Path, tmp: Path) -> Path:
    """Put the gateway's description (*tmp*) in place; return where it went.

    ``DIR/http.json`` if free (absent, or naming a gateway that is gone), else
    ``DIR/http.<pid>.json``: a second gateway must not take the first one's file, or the
    gateway ``serve --http`` started would be named nowhere once the second one stops.
    ``os.link`` claims the name atomically (two gateways starting at once).
    """
    target = data_dir / HTTP_FILE
    for _ in range(3):
        try:
            os.link(tmp, target)
        except FileExistsError:
            try:
                other = json.loads(target.read_text())
            except (OSError, ValueError):
                other = {}
            pid = other.get("pid")
            if isinstance(pid, int) and paths.pid_alive(pid, other.get("start_time")):
                own = gateway_file(data_dir, os.getpid())
                os.replace(tmp, own)
                return own
            with contextlib.suppress(FileNotFoundError):
                target.unlink()  # a dead gateway's: ours now
            continue
        tmp.unlink()
        return target
    os.replace(tmp, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvicorn

        from stateengine.app.gateway.app import GatewayConfig, create_app
    except ImportError as exc:
        print(
            f"stateengine http: the gateway needs the 'http' extra ({exc});"
            " pip install -e '.[http]' (from the checkout)",
            file=sys.stderr,
        )
        return 1
    data_dir = paths.resolve_data_dir(args.data_dir)
    try:
        host, port = split_bind(args.bind)
        token = resolve_token(args.http_token, data_dir, args.http_token_file)
        paths.read_server_file(data_dir)  # a clear error when no server runs there
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
    except (ValueError, OSError, StateEngineError) as exc:
        print(f"stateengine http: {exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    url = url_for(host, port)
    holder: dict[str, Any] = {}
    info_path = data_dir / HTTP_FILE

    def server_gone() -> None:
        holder["uvicorn"].should_exit = True  # the streams were ended by the watchdog

    def ready() -> None:
        pid = os.getpid()
        info = {"pid": pid, "url": url, "bind": f"{host}:{port}", "token": token}
        info["login_url"] = login_url(url, token)
        info["start_time"] = paths.process_start_time(pid)
        tmp = data_dir / f".{HTTP_FILE}.{pid}.tmp"
        # 0600 from the start: it holds the token (the data directory is 0700 too).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info))
        holder["info_path"] = claim_info_file(data_dir, tmp)
        print(f"stateengine http: serving {info['login_url']}", flush=True)

    config = GatewayConfig(
        data_dir=data_dir,
        endpoint=args.endpoint,
        host=host,
        port=port,
        token=token,
        max_body_bytes=args.max_body_bytes,
        on_server_gone=server_gone,
        on_ready=ready,
    )
    app = create_app(config)

    class GatewayServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # End the SSE streams first: uvicorn would otherwise wait for them (up to
            # the graceful timeout) and then cut them mid-message.
            gateway = getattr(app.state, "gateway", None)
            if gateway is not None and gateway.loop is not None:
                gateway.loop.call_soon_threadsafe(gateway.hub.close)
            super().handle_exit(sig, frame)

    server = GatewayServer(
        uvicorn.Config(
            app,
            loop="uvloop",
            log_level="info" if args.verbose else "warning",
            access_log=args.verbose > 1,
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
    )
    holder["uvicorn"] = server
    # uvicorn re-raises the signal that stopped it once it has shut down, with the
    # handler it found installed: make that one a no-op, so that the cleanup below runs
    # and the process exits 0 (SIG_DFL would kill it mid-way, leaving http.json behind).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        mine = holder.get("info_path", info_path)
        with contextlib.suppress(FileNotFoundError):
            if json.loads(mine.read_text()).get("pid") == os.getpid():
                mine.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
