"""Who may talk to the gateway: whoever holds its token, on every address.

Loopback is not private: any local user can connect to 127.0.0.1, while the ipc socket
(in the 0700 run directory) and the arena (0600) refuse other users. So the gateway
requires a token everywhere (issue 14 item 8), handed out the way Jupyter does: the
URL ``http://HOST:PORT/?token=T`` printed at start and written to ``DIR/http.json``
(0600, in the 0700 data directory), exchanged by the browser for a cookie.

Kept apart from the routes (no FastAPI import), so that ``stateengine serve --http``
settles the token, and makes the token file, before it starts anything. The ASGI
middleware that enforces it, :class:`GuardMiddleware`, is here too (plain ASGI).
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
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from stateengine.protocol import encode_reply

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("stateengine.gateway")

TOKEN_FILE = "http.token"
"""The gateway's token when none is given, in the (0700) data directory, mode 0600."""
TOKEN_ENV = "STATEENGINE_HTTP_TOKEN"
TOKEN_COOKIE = "stateengine_token"
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


# --- the middleware -------------------------------------------------------------------


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message}}


class GuardMiddleware:
    """The token on every request, and a Host check on a loopback gateway.

    A request is let through when it carries the token as ``Authorization: Bearer T`` or
    in the gateway's cookie. A GET or HEAD with ``?token=T`` (the login URL printed at
    start) is answered with that cookie (HttpOnly, SameSite=Strict) and a redirect to the
    same URL without the token, so that the dashboard's ``fetch`` and ``EventSource``
    carry it and it stays out of the address bar, history and logs. A wrong token, or
    ``?token=`` on another method, is 401. Bound to loopback, a request must also name a
    loopback host in ``Host`` (403 otherwise): a web page of another site that rebinds
    its DNS name to 127.0.0.1 is refused before the token is even looked at.
    """

    def __init__(self, app: ASGIApp, token: str, host: str, port: int) -> None:
        self.app = app
        self.token = token
        #: Per port: cookies are not isolated by port, and two gateways on one host
        #: must not overwrite each other's.
        self.cookie = cookie_name(port)
        self.allowed_hosts = (
            {"127.0.0.1", "localhost", "::1", "[::1]", host.lower()} if is_loopback(host) else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.allowed_hosts is not None:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.lower() not in self.allowed_hosts:
                await self._refuse(send, 403, "Forbidden", f"Host {host!r} is not loopback")
                return
        query = scope.get("query_string", b"")
        given = [unquote_to_bytes(v) for k, v in _query_pairs(query) if k == b"token"]
        if given:
            if scope["method"] in ("GET", "HEAD") and all(
                token_matches(t, self.token) for t in given
            ):
                await self._login(scope, send, query)
            else:  # a wrong token, or a write: tokens in URLs only log a browser in
                why = "wrong token" if scope["method"] in ("GET", "HEAD") else "?token= is for GET"
                await self._refuse(send, 401, "Unauthorized", why)
            return
        if not self._authorized(headers):
            await self._refuse(
                send,
                401,
                "Unauthorized",
                "the gateway needs its token: open the login URL it printed at start"
                " (login_url in DIR/http.json), or send Authorization: Bearer TOKEN",
            )
            return
        await self.app(scope, receive, send)

    def _authorized(self, headers: dict[str, str]) -> bool:
        candidates: list[bytes] = []
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            candidates.append(auth[7:].strip().encode("latin-1"))
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie:
                candidates.append(value.strip('"').encode("latin-1"))
        # Every candidate is compared (no early exit): the time taken does not say which.
        return sum(token_matches(c, self.token) for c in candidates) > 0

    async def _login(self, scope: Scope, send: Send, query: bytes) -> None:
        path = scope.get("raw_path") or scope["path"].encode()
        rest = b"&".join(p for p in query.split(b"&") if p and p.split(b"=", 1)[0] != b"token")
        location = path + (b"?" + rest if rest else b"")
        cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location),
                    (b"set-cookie", cookie.encode()),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _refuse(send: Send, status: int, type_: str, message: str) -> None:
        body = encode_reply(error_body(type_, message), as_json=True)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="stateengine"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def cookie_name(port: int) -> str:
    """The cookie that holds the token of the gateway on *port*."""
    return f"{TOKEN_COOKIE}_{port}"


def _query_pairs(query: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        pairs.append((unquote_to_bytes(name), value))  # a "+" is a "+": tokens may hold one
    return pairs
