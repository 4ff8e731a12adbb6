"""Who may talk to the gateway: loopback stays open, anything else needs a bearer token.

Kept apart from the routes (no FastAPI import), so that ``stateengine serve --http``
checks the token rule, and makes the token file, before it starts anything.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from pathlib import Path

TOKEN_FILE = "http.token"
"""The bearer token of a gateway bound off loopback, in the (0700) data directory, 0600."""
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """Whether binding *host* keeps the gateway on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_token(token: str | None, host: str) -> None:
    """Refuse to serve off loopback without a bearer token (or with a guessable one).

    :raises ValueError: with the reason; ``stateengine serve``/``http`` exit 1 with it.
    """
    if token is not None and len(token) < MIN_TOKEN:
        raise ValueError(f"--http-token must be at least {MIN_TOKEN} characters")
    if not token and not is_loopback(host):
        raise ValueError(
            f"refusing to serve HTTP on {host} (not loopback) without a bearer token:"
            " give --http-token (or $STATEENGINE_HTTP_TOKEN), or a data directory to keep one in"
        )


def resolve_token(given: str | None, host: str, data_dir: Path | None) -> str | None:
    """The bearer token: *given*, else ``$STATEENGINE_HTTP_TOKEN``, else (off loopback
    only) the one kept in ``DIR/http.token`` (mode 0600), made at the first start.

    :raises ValueError: off loopback without a usable token, or a token file that
        others can read.
    """
    token = given or os.environ.get("STATEENGINE_HTTP_TOKEN") or None
    if token is None and not is_loopback(host) and data_dir is not None:
        path = data_dir / TOKEN_FILE
        try:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                raise ValueError(f"{path} is readable by others: chmod 600 it, or delete it")
            token = path.read_text().strip() or None
        except FileNotFoundError:
            token = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
    check_token(token, host)
    return token
