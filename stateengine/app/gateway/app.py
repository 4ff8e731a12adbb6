"""The gateway's application: JSON over HTTP for the commands, SSE for the change feed.

Here: the HTTP statuses of errors, request parsing, the :class:`Gateway` state and
:func:`create_app`; the routes themselves are in ``routers.py``, the SSE fan-out in
``feed.py``, the token middleware in ``auth.py``.

Every route is a thin translation: reads go through :class:`AsyncClient` (the arena
first, the socket for what only the writer can judge) and writes through the writer's
queue, so an HTTP request can do nothing a worker cannot. Errors keep the wire's typed
body, ``{"error": {"type": T, "message": M}}``, with an HTTP status (:func:`status_for`).

Bodies are parsed here, not by pydantic: the engine already validates every argument
and names the offending field, and the error must be the same typed error a worker
gets. The OpenAPI description still shows each body (``openapi_extra``).

Status rule of thumb: a body or query parameter that does not parse (not JSON, not an
integer) is 400 ``BadRequest``; a request that parses but that the command refuses gets
the command's error and its status (``BadRequest`` 422, ``SchemaError`` 422, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, unquote_to_bytes

import zmq
import zmq.asyncio
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from stateengine import __version__, defaults, jsoncodec

# Re-exported: these lived here before the middleware moved to auth.py and the feed hub
# to feed.py.
from stateengine.app.gateway.auth import TOKEN_COOKIE as TOKEN_COOKIE
from stateengine.app.gateway.auth import (
    GuardMiddleware,
    check_token,
    error_body,
)
from stateengine.app.gateway.auth import cookie_name as cookie_name
from stateengine.app.gateway.feed import SSE_QUEUE as SSE_QUEUE
from stateengine.app.gateway.feed import FeedHub
from stateengine.app.gateway.feed import Listener as Listener
from stateengine.client.aio import AsyncClient
from stateengine.client.view import arena_info
from stateengine.errors import (
    BadRequest,
    CapacityError,
    DuplicateId,
    ImmutableId,
    KeyNotDefined,
    LoadError,
    PayloadTooLarge,
    RecordNotFound,
    SchemaError,
    ServerUnavailable,
    SnapshotExpired,
    StateEngineError,
    StateExists,
    StateNotFound,
    StorageUnavailable,
    StoreError,
    VersionConflict,
)
from stateengine.limits import MAX_REQUEST_BYTES
from stateengine.protocol import decode_request, encode_reply, is_json, reply_outcome
from stateengine.runtime import discovery as paths
from stateengine.runtime.feed import feed_endpoint

log = logging.getLogger("stateengine.gateway")

MANIFEST_TABLE = "$manifest"  # stateengine.client.state.TABLE, without importing the manifests
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000

# --- errors and statuses ----------------------------------------------------------------

#: Checked in order with isinstance, so a subclass listed first wins (PayloadTooLarge
#: before BadRequest). Anything else is 500.
STATUS_BY_ERROR: tuple[tuple[type[StateEngineError], int], ...] = (
    (PayloadTooLarge, 413),
    (BadRequest, 422),  # UnknownCommand too
    (StateNotFound, 404),
    (RecordNotFound, 404),
    (KeyNotDefined, 404),  # ManifestFileNotFound too
    (VersionConflict, 409),
    (StateExists, 409),
    (DuplicateId, 409),
    (SchemaError, 422),  # StateTypeMismatch too
    (ImmutableId, 422),
    (CapacityError, 507),  # a table at max_length, or the arena full: no room
    (ServerUnavailable, 503),
    (SnapshotExpired, 503),  # retry
    (StorageUnavailable, 507),  # the server's disk is full: writes refused, reads work
    (LoadError, 502),
    (StoreError, 502),
)


def status_for(exc: StateEngineError) -> int:
    """The HTTP status of a stateengine error (README "HTTP gateway and dashboard")."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


class WireJSONResponse(Response):
    """JSON with the wire's conventions: bytes as ``{"$b64": ...}``."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode_reply(content, as_json=True) if isinstance(content, dict) else b"null"


class HTTPError(Exception):
    """An error answered with an explicit status (a parse failure: 400, a 415, ...)."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def malformed(message: str) -> HTTPError:
    return HTTPError(400, BadRequest.type, message)


# --- request parsing --------------------------------------------------------------------

_INT_ID = re.compile(r"-?(0|[1-9][0-9]*)")


def parse_id(segment: str, id_type: str = "auto") -> int | str:
    """A record id from a path segment: canonical decimal digits are an int, else a string.

    ``id_type=str`` keeps digits a string (a record whose id is the string ``"42"``);
    ``id_type=int`` insists on an int (400 otherwise).
    """
    if id_type == "str":
        return segment
    if _INT_ID.fullmatch(segment):
        return int(segment)
    if id_type == "int":
        raise malformed(f"id {segment!r} is not an integer")
    return segment


def parse_json_param(name: str, raw: str | None) -> Any:
    """A query parameter that carries JSON (``where``, ``if_match``); 400 when it does not parse."""
    if raw is None:
        return None
    try:
        return jsoncodec.loads(raw)  # the wire's escapes: {"$b64": ...} is bytes, ...
    except BadRequest as exc:
        raise malformed(f"query parameter {name}: {exc.message}") from None


def parse_order_by(raw: str | None) -> str | list[str] | None:
    """``order_by=a,-b`` (or a JSON list) → the command's ``order_by``."""
    if raw is None or raw == "":
        return None
    if raw.startswith("["):
        value = parse_json_param("order_by", raw)
        return value if isinstance(value, list) else [raw]
    parts = [p.strip() for p in raw.split(",")]
    return parts[0] if len(parts) == 1 else parts


def parse_tables(raw: str | None) -> frozenset[str] | None:
    """``tables=a,b`` (or a JSON list, for names holding a comma) → the names; None: all."""
    if not raw:
        return None
    if raw.startswith("["):
        names = parse_json_param("tables", raw)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise malformed("query parameter tables: a JSON list must hold table names")
        return frozenset(names)
    return frozenset(t for t in raw.split(",") if t)


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object body, the wire's escapes undone (bytes, NaN, int keys).

    :raises HTTPError: 415 when not ``application/json``, 400 when not a JSON object.
    :raises PayloadTooLarge: over *limit* bytes (checked before reading when the
        client sent a Content-Length, and while reading otherwise).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise HTTPError(
            415, "UnsupportedMediaType", "the body must be JSON (Content-Type: application/json)"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body of {declared} bytes exceeds the gateway's limit of {limit} (--max-body-bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the gateway's limit of {limit} (--max-body-bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise malformed("a JSON object body is required")
    if not is_json(body):
        raise malformed("the body must be a JSON object")
    try:
        decoded, _ = decode_request(body, limit)  # the wire's JSON decoding: $b64, depth
    except PayloadTooLarge:
        raise
    except BadRequest as exc:
        raise malformed(exc.message) from None
    return decoded


def reject_keys(body: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key in body:
            raise BadRequest(f"{key!r} is given by the path ({where}), not the body")


# --- the gateway's state ---------------------------------------------------------------


@dataclass
class GatewayConfig:
    """What the gateway process was started with."""

    data_dir: Path
    endpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    #: Required (:func:`stateengine.app.gateway.auth.resolve_token` makes one).
    token: str | None = None
    max_body_bytes: int = MAX_REQUEST_BYTES
    timeout: float = defaults.CLIENT_TIMEOUT
    #: Called when the server this gateway serves has stopped (the process then exits).
    on_server_gone: Callable[[], None] | None = None
    #: Called once the gateway is ready to answer (the process writes ``http.json``).
    on_ready: Callable[[], None] | None = None
    watch_interval: float = 0.5


class Gateway:
    """The client, the feed hub and the server watchdog of one gateway process."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        info = paths.read_server_file(config.data_dir)
        self.server_pid = info.get("pid")
        self.server_start_time = info.get("start_time")
        self.endpoint = config.endpoint or str(info["endpoint"])
        self.zmq_context = zmq.asyncio.Context()
        self.client = AsyncClient(self.endpoint, config.data_dir, timeout=config.timeout)
        feed = str(info.get("feed") or feed_endpoint(self.endpoint))
        self.hub = FeedHub(feed, self)
        self._watchdog: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_server())

    async def close(self) -> None:
        self.hub.close()
        await self.hub.wait_closed()  # a SUB socket left open would block term() forever
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.client.close()
        self.zmq_context.destroy(linger=0)

    def server_running(self) -> bool:
        """Whether the server this gateway was started for still runs (same pid)."""
        try:
            info = paths.read_server_file(self.config.data_dir)
        except StateEngineError:
            return False
        if info.get("pid") != self.server_pid or not isinstance(self.server_pid, int):
            return False
        return paths.pid_alive(self.server_pid, self.server_start_time)

    async def _watch_server(self) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval)
            if not self.server_running():
                log.warning("the server (pid %s) stopped; the gateway stops", self.server_pid)
                self.hub.close()
                if self.config.on_server_gone is not None:
                    self.config.on_server_gone()
                return

    def arena_table_info(self, table: str) -> dict[str, Any] | None:
        """A table's info from the arena now (None: no arena, or no such table)."""
        reader = self.client.arena_reader()
        return arena_info(reader, table) if reader is not None else None

    async def write(self, request: dict[str, Any]) -> tuple[Any, dict[str, str]]:
        """Send a write (or a server-judged read) through the queue; result and headers.

        :raises StateEngineError: the command's error, as the writer typed it.
        """
        reply = await self.client.execute(request)
        # The clients' own reply step: seen_seq is read-your-writes for the next arena read.
        result, self.client.seen_seq = reply_outcome(reply, self.client.seen_seq)
        headers = {"X-Stateengine-Seq": str(reply.get("seq"))}
        if reply.get("version") is not None:
            headers["X-Stateengine-Version"] = str(reply["version"])
        return result, headers


# --- path segments ----------------------------------------------------------------------


class PathSegmentsMiddleware:
    """Path segments are percent-decoded *after* the path is split on ``/`` (RFC 3986).

    So a table named ``a/b`` is ``/api/states/a%2Fb`` and a record id ``50%`` is
    ``.../records/50%25``, on every route: a name or an id may hold any character.
    (Servers hand the application a path already decoded, where ``a%2Fb`` has become
    two segments; this rebuilds it from the raw path with every segment re-quoted, and
    :data:`Segment` parameters unquote their own segment.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            raw: bytes | None = scope.get("raw_path")
            try:
                parts = (
                    [unquote_to_bytes(p).decode() for p in raw.split(b"/")]
                    if raw is not None
                    else scope["path"].split("/")
                )
            except UnicodeDecodeError:
                body = encode_reply(error_body(BadRequest.type, "the path is not UTF-8"), True)
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            scope = {**scope, "path": "/".join(quote(p, safe="") for p in parts)}
        await self.app(scope, receive, send)


#: A table name, record id or manifest key taken from one path segment (see
#: :class:`PathSegmentsMiddleware`).
Segment = Annotated[str, AfterValidator(unquote)]


# --- the application --------------------------------------------------------------------


def _body_schema(description: str, example: Any) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }


def create_app(config: GatewayConfig) -> FastAPI:
    """The gateway's ASGI application for *config* (the server must be running).

    :raises ValueError: no token, or one :func:`check_token` refuses.
    """
    if not config.token:
        raise ValueError("the gateway needs a token (every address: loopback is not private)")
    check_token(config.token)
    holder: dict[str, Gateway] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        gateway = Gateway(config)
        holder["gw"] = gateway
        app.state.gateway = gateway  # for the process's signal handler (end the streams)
        gateway.start()
        if config.on_ready is not None:
            config.on_ready()
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(
        title="stateengine HTTP gateway",
        version=__version__,
        description=(
            "JSON endpoints mirroring the stateengine commands, a server-sent-events change "
            "feed and a live dashboard. Reads come from the shared-memory arena, writes go "
            'through the writer\'s queue. Errors: `{"error": {"type", "message"}}` with '
            "the wire's stable type names."
        ),
        lifespan=lifespan,
        default_response_class=WireJSONResponse,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: none offline. /docs
        # is served from the package's copy of swagger-ui-dist instead; no ReDoc.
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/docs", include_in_schema=False, response_model=None)
    async def docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    app.add_middleware(PathSegmentsMiddleware)
    app.add_middleware(GuardMiddleware, token=config.token, host=config.host, port=config.port)

    def gw() -> Gateway:
        return holder["gw"]

    limit = config.max_body_bytes

    @app.exception_handler(StateEngineError)
    async def _engine_error(_request: Request, exc: StateEngineError) -> Response:
        return WireJSONResponse(error_body(exc.type, exc.message), status_for(exc))

    @app.exception_handler(HTTPError)
    async def _http_error(_request: Request, exc: HTTPError) -> Response:
        return WireJSONResponse(error_body(exc.type, exc.message), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return WireJSONResponse(error_body(BadRequest.type, problems), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_request: Request, exc: StarletteHTTPException) -> Response:
        names = {404: "NotFound", 405: "MethodNotAllowed"}
        return WireJSONResponse(
            error_body(names.get(exc.status_code, "HTTPError"), str(exc.detail)),
            exc.status_code,
            headers=exc.headers,
        )

    def preconditions(
        expected_version: int | None = Query(None, description="the table's version"),
        if_version: int | None = Query(None, description="the record's _version"),
        if_match: str | None = Query(None, description="JSON {field: value} that must hold"),
        if_match_header: str | None = Header(
            None, alias="If-Match", description='the record\'s _version, as "N" (= if_version)'
        ),
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if expected_version is not None:
            out["expected_version"] = expected_version
        if if_version is not None:
            out["if_version"] = if_version
        if if_match_header is not None:
            tag = if_match_header.strip().removeprefix("W/").strip('"')
            if not _INT_ID.fullmatch(tag):
                raise malformed(f"If-Match {if_match_header!r} is not a record _version")
            out["if_version"] = int(tag)
        if if_match is not None:
            out["if_match"] = parse_json_param("if_match", if_match)
        return out

    Pre = Depends(preconditions)
    IdType = Query(
        "auto", description="auto: canonical digits are an int id; str: always a string id"
    )

    # Handlers return responses, never bare dicts: FastAPI's jsonable_encoder would turn
    # bytes into text; WireJSONResponse writes them as {"$b64": ...} like the wire.
    def answer(
        result: Any, headers: dict[str, str] | None = None, status: int = 200
    ) -> WireJSONResponse:
        body = result if isinstance(result, dict) else {"result": result}
        return WireJSONResponse(body, status, headers=headers)

    # The routes, in this order (FastAPI matches in registration order): routers.py.
    from stateengine.app.gateway import routers  # here: routers.py imports this module

    kit = routers.RouteKit(gw, limit, Pre, IdType, answer, config)
    routers.dashboard_routes(app, kit)
    routers.table_routes(app, kit)
    routers.call_routes(app, kit)
    routers.manifest_routes(app, kit)
    routers.feed_routes(app, kit)
    return app
