"""The gateway's routes, by group, registered on the app by :func:`~.app.create_app`.

Each group is a function of the app and a :class:`RouteKit` (what the routes share: the
running :class:`~.app.Gateway`, the body limit, the precondition dependency, the reply
helper); ``create_app`` calls them in a fixed order, since FastAPI matches routes in the
order they were added. Moved out of ``create_app`` unchanged (issue 15).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from stateengine import __version__, command_table
from stateengine.app.gateway.app import (
    DEFAULT_LIMIT,
    MANIFEST_TABLE,
    MAX_LIMIT,
    Gateway,
    GatewayConfig,
    Segment,
    WireJSONResponse,
    _body_schema,
    parse_id,
    parse_json_param,
    parse_order_by,
    parse_tables,
    read_body,
    reject_keys,
)

# Re-exported: these lived here before the middleware moved to auth.py and the feed hub
# to feed.py.
from stateengine.app.gateway.auth import TOKEN_COOKIE as TOKEN_COOKIE
from stateengine.app.gateway.auth import cookie_name as cookie_name
from stateengine.app.gateway.feed import SSE_PING_SECONDS, sse
from stateengine.app.gateway.feed import SSE_QUEUE as SSE_QUEUE
from stateengine.app.gateway.feed import Listener as Listener
from stateengine.errors import (
    KeyNotDefined,
    RecordNotFound,
    StateNotFound,
)

__all__ = [
    "RouteKit",
    "call_routes",
    "dashboard_routes",
    "feed_routes",
    "manifest_routes",
    "table_routes",
]

log = logging.getLogger("stateengine.gateway")


@dataclass(frozen=True)
class RouteKit:
    """What every route group shares, made once per app by ``create_app``."""

    gw: Callable[[], Gateway]
    limit: int
    Pre: Any  # Depends(preconditions): expected_version, if_version, if_match, If-Match
    IdType: Any  # Query("auto"): how a path id is read
    answer: Callable[..., WireJSONResponse]
    config: GatewayConfig


def dashboard_routes(app: FastAPI, kit: RouteKit) -> None:
    """The dashboard page, its static files and the health and stats routes."""
    gw, answer = kit.gw, kit.answer
    # --- dashboard and health -----------------------------------------------------------

    static = resources.files("stateengine.app.gateway").joinpath("static")

    @app.get("/", include_in_schema=False, response_model=None)
    async def dashboard() -> Response:  # ?token=T: GuardMiddleware's login redirect
        return Response(static.joinpath("dashboard.html").read_bytes(), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/api/health", tags=["server"], summary="the gateway and its server, no round trip")
    async def health() -> Response:
        g = gw()
        reader = g.client.arena_reader()
        return answer(
            {
                "ok": g.server_running(),
                "seq": reader.version if reader is not None else None,
                "server_pid": g.server_pid,
                "endpoint": g.endpoint,
                "version": __version__,
            }
        )

    @app.get("/api/stats", tags=["server"], summary="STATS: tables, queue, store, arena")
    async def stats() -> Response:
        g = gw()
        result, headers = await g.write({"command": "STATS"})
        result["gateway"] = {
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - g.started, 3),
            "sse_clients": len(g.hub.listeners),
            "feed_events": g.hub.events,
            "feed_gaps": g.hub.upstream_gaps,
        }
        return answer(result, headers)

    @app.get(
        "/metrics",
        tags=["server"],
        summary="STATS in Prometheus's text format (prometheus_client)",
        response_model=None,
    )
    async def metrics() -> Response:
        from stateengine.app.metrics import CONTENT_TYPE, render

        result, _headers = await gw().write({"command": "STATS"})
        return Response(render(result), media_type=CONTENT_TYPE)


def table_routes(app: FastAPI, kit: RouteKit) -> None:
    """The table and record routes: one per command of README "Wire protocol"."""
    gw, limit, Pre, IdType, answer = kit.gw, kit.limit, kit.Pre, kit.IdType, kit.answer
    # --- tables ---------------------------------------------------------------------------

    @app.get("/api/states", tags=["tables"], summary="LIST_STATES, with each table's info")
    async def list_states() -> Response:
        g = gw()
        out = []
        for name in await g.client.list_states():
            try:
                out.append(await g.client.get_state_info(name))
            except StateNotFound:
                continue  # dropped between the two reads
        return answer({"states": out})

    @app.post(
        "/api/states",
        tags=["tables"],
        summary="CREATE_STATE",
        status_code=201,
        openapi_extra=_body_schema(
            "`state` (or `name`), `max_length`?, `schema`? (field → type name)",
            {"state": "tasks", "schema": {"title": "string", "done": "boolean"}},
        ),
    )
    async def create_state(request: Request) -> Response:
        body = await read_body(request, limit)
        if "name" in body and "state" not in body:
            body["state"] = body.pop("name")
        reject_keys(body, ("command",), "POST /api/states")
        result, headers = await gw().write({**body, "command": "CREATE_STATE"})
        return answer(result, headers, 201)

    @app.get("/api/states/{state}", tags=["tables"], summary="GET_STATE_INFO")
    async def get_state(state: Segment) -> Response:
        return answer(await gw().client.get_state_info(state))

    @app.get("/api/states/{state}/schema", tags=["tables"], summary="GET_SCHEMA")
    async def get_schema(state: Segment) -> Response:
        return answer({"schema": await gw().client.get_schema(state)})

    @app.patch(
        "/api/states/{state}",
        tags=["tables"],
        summary="ALTER_STATE",
        openapi_extra=_body_schema(
            "`add`? ({field: {type?, default?}}), `drop`? (list), `expected_version`?",
            {"add": {"owner": {"type": "string?", "default": None}}},
        ),
    )
    async def alter_state(state: Segment, request: Request) -> Response:
        body = await read_body(request, limit)
        reject_keys(body, ("command", "state"), "PATCH /api/states/{state}")
        result, headers = await gw().write({**body, "command": "ALTER_STATE", "state": state})
        return answer(result, headers)

    @app.delete("/api/states/{state}", tags=["tables"], summary="DELETE_STATE")
    async def delete_state(state: Segment) -> Response:
        _, headers = await gw().write({"command": "DELETE_STATE", "state": state})
        return answer({"deleted": state}, headers)

    @app.put(
        "/api/states/{state}/records",
        tags=["records"],
        summary="SET_STATE: replace every record atomically",
        openapi_extra=_body_schema(
            "`records` (list), `expected_version`?", {"records": [{"title": "a", "done": False}]}
        ),
    )
    async def set_state(state: Segment, request: Request) -> Response:
        body = await read_body(request, limit)
        reject_keys(body, ("command", "state"), "PUT /api/states/{state}/records")
        result, headers = await gw().write({**body, "command": "SET_STATE", "state": state})
        return answer({"kept": result}, headers)

    @app.get("/api/states/{state}/records", tags=["records"], summary="LIST_RECORDS, paged")
    async def list_records(
        state: Segment,
        where: str | None = Query(
            None, description='JSON {field: value or {"$gt": ...}}: README LIST_RECORDS'
        ),
        order_by: str | None = Query(None, description="field, -field, or a,-b"),
        offset: int = Query(0, ge=0),
        limit_: int = Query(DEFAULT_LIMIT, ge=0, le=MAX_LIMIT, alias="limit"),
    ) -> Response:
        g = gw()
        where_map = parse_json_param("where", where)
        order = parse_order_by(order_by)
        records = await g.client.list_records(state, where_map, order, offset, limit_)
        info = await g.client.get_state_info(state)
        return answer(
            {
                "state": state,
                "records": records,
                "offset": offset,
                "limit": limit_,
                "size": info["size"],
                "version": info["version"],
            }
        )

    @app.post(
        "/api/states/{state}/records",
        tags=["records"],
        summary="CREATE_RECORD (an `id` in the body is explicit)",
        status_code=201,
        openapi_extra=_body_schema("the record", {"title": "load orders.csv", "done": False}),
    )
    async def create_record(
        state: Segment,
        request: Request,
        expected_version: int | None = Query(None),
        ttl: float | None = Query(None, description="delete the record after this many seconds"),
    ) -> Response:
        record = await read_body(request, limit)
        req: dict[str, Any] = {"command": "CREATE_RECORD", "state": state, "record": record}
        if expected_version is not None:
            req["expected_version"] = expected_version
        if ttl is not None:
            req["ttl"] = ttl
        result, headers = await gw().write(req)
        return answer(result, headers, 201)

    @app.get("/api/states/{state}/records/{id}", tags=["records"], summary="GET_RECORD")
    async def get_record(
        state: Segment, id: Segment, id_type: Literal["auto", "str", "int"] = IdType
    ) -> Response:
        return answer(await gw().client.get_record(state, parse_id(id, id_type)))

    @app.put(
        "/api/states/{state}/records/{id}",
        tags=["records"],
        summary="SET_RECORD: replace one record",
        openapi_extra=_body_schema("the whole record", {"title": "x", "done": True}),
    )
    async def set_record(
        state: Segment,
        id: Segment,
        request: Request,
        id_type: Literal["auto", "str", "int"] = IdType,
        ttl: float | None = Query(None, description="a TTL (without, the record has none)"),
        pre: dict[str, Any] = Pre,
    ) -> Response:
        record = await read_body(request, limit)
        req: dict[str, Any] = {"command": "SET_RECORD", "state": state, "id": parse_id(id, id_type)}
        if ttl is not None:
            req["ttl"] = ttl
        result, headers = await gw().write({**req, "record": record, **pre})
        return answer(result, headers)

    @app.patch(
        "/api/states/{state}/records/{id}",
        tags=["records"],
        summary="PATCH_RECORD: change some fields",
        openapi_extra=_body_schema("the fields to change", {"done": True}),
    )
    async def patch_record(
        state: Segment,
        id: Segment,
        request: Request,
        id_type: Literal["auto", "str", "int"] = IdType,
        lease_seconds: float | None = Query(None, description="renew the record's lease"),
        ttl: float | None = Query(None, description="set the record's TTL (seconds)"),
        pre: dict[str, Any] = Pre,
    ) -> Response:
        fields = await read_body(request, limit)
        req: dict[str, Any] = {
            "command": "PATCH_RECORD",
            "state": state,
            "id": parse_id(id, id_type),
        }
        if lease_seconds is not None:
            req["lease_seconds"] = lease_seconds
        if ttl is not None:
            req["ttl"] = ttl
        result, headers = await gw().write({**req, "fields": fields, **pre})
        return answer(result, headers)

    @app.delete("/api/states/{state}/records/{id}", tags=["records"], summary="DELETE_RECORD")
    async def delete_record(
        state: Segment,
        id: Segment,
        id_type: Literal["auto", "str", "int"] = IdType,
        pre: dict[str, Any] = Pre,
    ) -> Response:
        rid = parse_id(id, id_type)
        req = {"command": "DELETE_RECORD", "state": state, "id": rid, **pre}
        _, headers = await gw().write(req)
        return answer({"deleted": rid}, headers)

    @app.post(
        "/api/states/{state}/records/{id}/increment",
        tags=["records"],
        summary="INCREMENT a numeric field",
        openapi_extra=_body_schema(
            "`field`, `by`? (default 1), preconditions?", {"field": "n", "by": 5}
        ),
    )
    async def increment(
        state: Segment,
        id: Segment,
        request: Request,
        id_type: Literal["auto", "str", "int"] = IdType,
        pre: dict[str, Any] = Pre,
    ) -> Response:
        body = await read_body(request, limit)
        reject_keys(body, ("command", "state", "id"), "POST .../records/{id}/increment")
        req = {**body, **pre, "command": "INCREMENT", "state": state, "id": parse_id(id, id_type)}
        result, headers = await gw().write(req)
        return answer({"value": result}, headers)

    @app.post(
        "/api/states/{state}/claim",
        tags=["records"],
        summary="CLAIM_RECORD: take the first matching record, optionally under a lease",
        openapi_extra=_body_schema(
            "`where`, `fields`, `order_by`?, `lease_seconds`?, `expected_version`?, `wait`?, "
            "`max_attempts`? + `dead_letter`? "
            "(or `?wait=SECONDS`: hold the request until a record is claimable)",
            {"where": {"status": "pending"}, "fields": {"status": "running"}, "lease_seconds": 30},
        ),
    )
    async def claim(
        state: Segment,
        request: Request,
        wait: float | None = Query(None, description="seconds to wait for a claimable record"),
    ) -> Response:
        body = await read_body(request, limit)
        reject_keys(body, ("command", "state"), "POST /api/states/{state}/claim")
        if wait is not None:
            body["wait"] = wait
        result, headers = await gw().write({**body, "command": "CLAIM_RECORD", "state": state})
        return answer({"record": result}, headers)

    @app.post(
        "/api/batch",
        tags=["records"],
        summary="BATCH: requests applied all-or-nothing, as one commit",
        openapi_extra=_body_schema(
            "`commands`: a list of wire requests",
            {"commands": [{"command": "CREATE_RECORD", "state": "t", "record": {"x": 1}}]},
        ),
    )
    async def batch(request: Request) -> Response:
        body = await read_body(request, limit)
        reject_keys(body, ("command",), "POST /api/batch")
        result, headers = await gw().write({**body, "command": "BATCH"})
        return answer({"results": result}, headers)


def call_routes(app: FastAPI, kit: RouteKit) -> None:
    """``POST /api/call/{COMMAND}``: every command of the command table, generated."""
    gw, limit = kit.gw, kit.limit
    # --- any command of the command table: POST /api/call/{COMMAND} ---------------------

    def call_route(spec: command_table.CommandSpec) -> Callable[[Request], Awaitable[Response]]:
        async def call(request: Request) -> Response:
            empty = request.headers.get("content-length") == "0" or (
                "content-length" not in request.headers
                and "transfer-encoding" not in request.headers
            )
            args = {} if empty else await read_body(request, limit)
            reject_keys(args, ("command", "req_id"), f"POST /api/call/{spec.name}")
            result, headers = await gw().write({**args, "command": spec.name})
            return WireJSONResponse({"result": result}, 200, headers=headers)

        return call

    # Generated from the table when the app is made: a command registered after that (a
    # test's dummy) is not routed; one added to the table is, with no edit here.
    for spec in command_table.COMMANDS.values():
        arguments = [*spec.required, *(f"{a}?" for a in spec.optional)]
        app.add_api_route(
            f"/api/call/{spec.name}",
            call_route(spec),
            methods=["POST"],
            tags=["commands"],
            summary=f"{spec.name}: {spec.doc}",
            description=(
                f"The wire command `{spec.name}` ({'writes' if spec.writes else 'reads'}, "
                f"{spec.scope} scope), answered by the writer; the body is its arguments "
                f"(`{'`, `'.join(arguments) or 'none: no body'}`), the reply "
                '`{"result": ...}` with the `X-Stateengine-Seq` header.'
            ),
            openapi_extra={
                "requestBody": {
                    "required": bool(spec.required),
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": list(spec.required),
                                "properties": {a: {} for a in (*spec.required, *spec.optional)},
                                "additionalProperties": False,
                            }
                        }
                    },
                }
            },
            response_model=None,
        )


def manifest_routes(app: FastAPI, kit: RouteKit) -> None:
    """The manifest keys, read-only."""
    gw, answer = kit.gw, kit.answer
    # --- manifest keys (read-only: the $manifest table of InMemory values) ---------------

    @app.get("/api/manifest", tags=["manifest"], summary="manifest keys stored in the server")
    async def manifest_keys() -> Response:
        g = gw()
        try:
            records = await g.client.list_records(MANIFEST_TABLE, order_by="id", limit=MAX_LIMIT)
        except StateNotFound:
            records = []
        keys = [{k: v for k, v in r.items() if k != "value"} for r in records]
        return answer({"keys": keys})

    @app.get("/api/manifest/{key}", tags=["manifest"], summary="one manifest key's record")
    async def manifest_key(key: Segment) -> Response:
        g = gw()
        try:
            record = await g.client.get_record(MANIFEST_TABLE, key)
        except (StateNotFound, RecordNotFound):
            raise KeyNotDefined(f"no value stored for manifest key {key!r}") from None
        expires = record.get("expires")
        record["live"] = record.get("status") == "ready" and (
            expires is None or expires > time.time()
        )
        return answer(record)


def feed_routes(app: FastAPI, kit: RouteKit) -> None:
    """``GET /api/feed``: the change feed as server-sent events."""
    gw = kit.gw
    # --- the change feed ------------------------------------------------------------------

    @app.get(
        "/api/feed",
        tags=["feed"],
        summary="the change feed as server-sent events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def feed(
        tables: str | None = Query(
            None, description='a,b or a JSON list (["a,b", "c"]); default: every table'
        ),
        records: bool = Query(False, description="include the stored records (puts)"),
    ) -> StreamingResponse:
        g = gw()
        names = parse_tables(tables)
        listener = g.hub.add(names, records)
        reader = g.client.arena_reader()
        hello = sse("hello", {"seq": reader.version if reader is not None else None})

        async def stream() -> AsyncIterator[str]:
            try:
                yield hello
                while True:
                    try:
                        item = await asyncio.wait_for(listener.queue.get(), SSE_PING_SECONDS)
                    except TimeoutError:
                        yield ": ping\n\n"
                        continue
                    if item is None:
                        return
                    yield item
            finally:
                g.hub.remove(listener)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
