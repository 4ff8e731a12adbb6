"""Bad input over HTTP (hypothesis): the right status and type, and the state unchanged.

The digest is the server's ``seq`` (it advances on every commit, and only then) plus
every record of every table, read from the arena through a worker client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from gwutil import Gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.client.client import Client

J = {"content-type": "application/json"}
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def seeded(gateway: Gateway) -> Iterator[tuple[Gateway, Client]]:
    r = gateway.http.post(
        "/api/states", json={"state": "b_t", "schema": {"title": "string", "n": "integer"}}
    )
    assert r.status_code == 201, r.text
    for i in range(3):
        r = gateway.http.post("/api/states/b_t/records", json={"title": f"t{i}", "n": i})
        assert r.status_code == 201
    with gateway.server.connect() as client:
        yield gateway, client


def digest(client: Client) -> str:
    stats = client.execute({"command": "STATS"})["result"]
    state: dict[str, Any] = {"seq": stats["seq"]}
    for name in client.list_states():
        state[name] = client.list_records(name)
    return hashlib.sha256(msgpack.packb(state, use_bin_type=True)).hexdigest()


def not_a_json_object(raw: bytes) -> bool:
    try:
        return not isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return True


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
NOT_STRINGS = JSON_VALUES.filter(lambda v: not isinstance(v, str))
NOT_INTEGERS = JSON_VALUES.filter(lambda v: type(v) is not int)
UNKNOWN = st.text("abcdefghij_", min_size=1, max_size=12).map(lambda s: "nope_" + s)


@SETTINGS
@given(body=st.binary(max_size=64).filter(not_a_json_object))
def test_malformed_bodies_are_400(seeded: tuple[Gateway, Client], body: bytes) -> None:
    gateway, client = seeded
    before = digest(client)
    for method, path in (
        ("POST", "/api/states/b_t/records"),
        ("PATCH", "/api/states/b_t/records/1"),
        ("PUT", "/api/states/b_t/records"),
        ("POST", "/api/batch"),
    ):
        r = gateway.http.request(method, path, content=body, headers=J)
        assert r.status_code == 400, (method, path, body, r.text)
        assert r.json()["error"]["type"] == "BadRequest"
    assert digest(client) == before


@SETTINGS
@given(title=NOT_STRINGS, n=NOT_INTEGERS, which=st.sampled_from(["title", "n", "both"]))
def test_wrong_field_types_are_422(
    seeded: tuple[Gateway, Client], title: Any, n: Any, which: str
) -> None:
    gateway, client = seeded
    record = {"title": "ok" if which == "n" else title, "n": 1 if which == "title" else n}
    before = digest(client)
    for method, path in (
        ("POST", "/api/states/b_t/records"),
        ("PUT", "/api/states/b_t/records/1"),
        ("PATCH", "/api/states/b_t/records/2"),
    ):
        r = gateway.http.request(method, path, json=record)
        assert r.status_code == 422, (method, record, r.text)
        assert r.json()["error"]["type"] in ("SchemaError", "BadRequest")
    r = gateway.http.put("/api/states/b_t/records", json={"records": [record]})
    assert r.status_code == 422
    assert digest(client) == before


@SETTINGS
@given(
    where=NOT_STRINGS.filter(lambda v: v is not None and not isinstance(v, dict)),
    limit=st.text(min_size=1, max_size=6).filter(lambda s: not s.strip().lstrip("+-").isdigit()),
    by=JSON_VALUES.filter(lambda v: type(v) not in (int, float)),
)
def test_wrong_argument_types(
    seeded: tuple[Gateway, Client], where: Any, limit: str, by: Any
) -> None:
    gateway, client = seeded
    http = gateway.http
    before = digest(client)
    r = http.post("/api/states/b_t/claim", json={"where": where, "fields": {"n": 0}})
    assert r.status_code == 422 and r.json()["error"]["type"] == "BadRequest", r.text
    r = http.post("/api/states/b_t/records/1/increment", json={"field": "n", "by": by})
    assert r.status_code == 422, r.text
    r = http.get("/api/states/b_t/records", params={"limit": limit})
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequest", r.text
    r = http.post("/api/batch", json={"commands": [where]})
    assert r.status_code == 422, r.text
    assert digest(client) == before


@SETTINGS
@given(table=UNKNOWN, rid=st.integers(1, 10) | st.text("xyz", min_size=1, max_size=4))
def test_unknown_tables_are_404(seeded: tuple[Gateway, Client], table: str, rid: Any) -> None:
    gateway, client = seeded
    http = gateway.http
    before = digest(client)
    for method, path, body in (
        ("GET", f"/api/states/{table}", None),
        ("PATCH", f"/api/states/{table}", {"drop": ["x"]}),
        ("DELETE", f"/api/states/{table}", None),
        ("GET", f"/api/states/{table}/records", None),
        ("GET", f"/api/states/{table}/records/{rid}", None),
        ("PUT", f"/api/states/{table}/records/{rid}", {"x": 1}),
        ("PATCH", f"/api/states/{table}/records/{rid}", {"x": 1}),
        ("DELETE", f"/api/states/{table}/records/{rid}", None),
        ("POST", f"/api/states/{table}/records/{rid}/increment", {"field": "x"}),
        ("POST", f"/api/states/{table}/claim", {"where": {}, "fields": {}}),
    ):
        r = http.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["type"] == "StateNotFound"
    assert digest(client) == before
