"""Who may talk to the gateway: whoever holds its token, on every address.

Loopback is not private: any local user can connect to 127.0.0.1, while the ipc socket
(in the 0700 run directory) and the arena (0600) refuse other users. So the gateway
requires a token everywhere (issue 14 item 8), handed out the way Jupyter does: the
URL ``http://HOST:PORT/?token=T`` printed at start and written to ``DIR/http.json``
(0600, in the 0700 data directory), exchanged by the browser for a cookie.

Kept apart from the routes (no FastAPI import), so that ``stateengine serve --http``
settles the token, and makes the token file, before it starts anything.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
import stat
from pathlib import Path

log = logging.getLogger("stateengine.gateway")

TOKEN_FILE = "http.token"
"""The gateway's token when none is given, in the (0700) data directory, mode 0600."""
TOKEN_ENV = "STATEENGINE_HTTP_TOKEN"
MIN_TOKEN = 16
#: What a token may hold: it travels in a header, a cookie and a URL unescaped.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")


def is_loopback(host: str) -> bool:
    """Whether binding *host* keeps the gateway on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_token(token: str) -> None:
    """Refuse a guessable token, or one that a cookie or a URL could not carry as it is.

    :raises ValueError: with the reason; ``stateengine serve``/``http`` exit 1 with it.
    """
    if len(token) < MIN_TOKEN:
        raise ValueError(f"the HTTP token must be at least {MIN_TOKEN} characters")
    if not _TOKEN_CHARS.fullmatch(token):
        raise ValueError("the HTTP token may hold only letters, digits and . _ ~ + / = -")


def token_matches(candidate: bytes, token: str) -> bool:
    """Whether *candidate* is the token, in time independent of where they differ
    (``hmac.compare_digest``: a timing attack learns nothing but the length)."""
    return hmac.compare_digest(candidate, token.encode())


def _read_private(path: Path, what: str) -> str:
    """A secret from a file that only its owner may read (stripped of surrounding space).

    :raises ValueError: the file is readable or writable by others, or empty.
    :raises OSError: it cannot be read (FileNotFoundError included).
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"{what} {path} is open to others (mode {mode:o}): chmod 600 {path}")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{what} {path} is empty")
    return token


def resolve_token(
    given: str | None, data_dir: Path | None, token_file: str | Path | None = None
) -> str:
    """The gateway's token, from the first of:

    1. *token_file* (``--http-token-file PATH``): a file only its owner may read;
    2. *given* (``--http-token T``): shown to every local user by ``ps``, so this
       logs a warning;
    3. ``$STATEENGINE_HTTP_TOKEN``;
    4. ``DIR/http.token``, made (random, mode 0600) at the first start and reused, so a
       dashboard's cookie survives a restart (delete the file to change the token);
       without a data directory, a random token for this process only.

    :raises ValueError: two sources given at once, a token file open to others, or a
        token :func:`check_token` refuses.
    :raises OSError: *token_file* cannot be read.
    """
    if token_file is not None and given:
        raise ValueError("give --http-token-file or --http-token, not both")
    if token_file is not None:
        token = _read_private(Path(token_file), "--http-token-file")
    elif given:
        log.warning(
            "--http-token on the command line is visible to every local user (ps);"
            " use --http-token-file PATH or $%s instead",
            TOKEN_ENV,
        )
        token = given
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV]
    elif data_dir is not None:
        path = data_dir / TOKEN_FILE
        try:
            token = _read_private(path, "the token file")
        except FileNotFoundError:
            token = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
    else:
        token = secrets.token_urlsafe(32)
    check_token(token)
    return token


def login_url(url: str, token: str) -> str:
    """The URL that logs a browser in: ``url?token=T`` (the token needs no escaping)."""
    return f"{url}?token={token}"
