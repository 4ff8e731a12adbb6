"""Lossless JSON (issue 14 item 10), end to end: what a msgpack client stores, a JSON
client reads back exactly, over the ZeroMQ wire's JSON bodies and through the HTTP
gateway, and the other way round; and names and ids holding ``/`` work on every route.

Replies are parsed as *strict* JSON (a bare ``NaN`` fails, as in the dashboard's
``JSON.parse``), then the README's escapes are undone with ``stateengine.jsoncodec``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import zmq
from gwutil import Gateway
from hypothesis import HealthCheck, given, settings

from stateengine import jsoncodec
from stateengine.testing.strategies import identical, json_hard_values

TABLE = "json/rt 50%"  # a slash and a percent sign in the name, on purpose
PATH = f"/api/states/{quote(TABLE, safe='')}/records"
J = {"content-type": "application/json"}
_ids = itertools.count()


def strict(text: str | bytes) -> Any:
    """JSON text as ``JSON.parse`` takes it (no NaN/Infinity), escapes undone."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"not strict JSON: bare {constant}")

    json.loads(text, parse_constant=refuse)
    return jsoncodec.loads(text)


def first_change(http: httpx.Client, params: dict[str, str], write: Callable[[], None]) -> Any:
    """The first ``change`` event of a feed stream opened with *params*, strictly parsed.

    *write* runs every 0.1 s (in a thread) until the event arrives: a new subscription
    takes a moment to reach the writer, and events before that are not replayed.
    """
    stop = threading.Event()

    def writer() -> None:
        while not stop.wait(0.1):
            write()

    thread = threading.Thread(target=writer)
    try:
        with http.stream("GET", "/api/feed", params=params) as feed:
            lines = feed.iter_lines()
            assert next(lines) == "event: hello"
            thread.start()
            deadline = time.monotonic() + 15
            event = "hello"
            for line in lines:
                assert time.monotonic() < deadline, "no change event within 15 s"
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "change":
                    return strict(line[6:])
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(15)
    raise AssertionError("the feed ended without a change event")


class JsonWire:
    """A plain ZeroMQ REQ socket speaking JSON, as a client in another language would."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def call(self, request: dict[str, Any]) -> Any:
        self.sock.send(jsoncodec.dumps(request))
        reply = strict(self.sock.recv())
        assert reply["ok"], reply
        return reply["result"]

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def wire(gateway: Gateway) -> Any:
    w = JsonWire(gateway.server.endpoint)
    try:
        yield w
    finally:
        w.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=json_hard_values())
def test_what_any_client_stores_a_json_client_reads_back_exactly(
    gateway: Gateway, wire: JsonWire, value: Any
) -> None:
    http = gateway.http
    with gateway.server.connect() as msgpack_client:
        # Stored with msgpack: read over the JSON wire and through the gateway.
        rid = f"m{next(_ids)}"
        stored = msgpack_client.create_record(TABLE, {"id": rid, "v": value})["v"]
        assert identical(stored, value)
        got = wire.call({"command": "GET_RECORD", "state": TABLE, "id": rid})
        assert identical(got["v"], value)
        r = http.get(f"{PATH}/{rid}")
        assert r.status_code == 200, r.text
        assert identical(strict(r.content)["v"], value)
        # Written as JSON (wire and gateway): a msgpack client reads the same value.
        wid, hid = f"w{next(_ids)}", f"h{next(_ids)}"
        wire.call({"command": "CREATE_RECORD", "state": TABLE, "record": {"id": wid, "v": value}})
        r = http.post(PATH, content=jsoncodec.dumps({"id": hid, "v": value}), headers=J)
        assert r.status_code == 201, r.text
        assert identical(strict(r.content)["v"], value)  # the reply echoes it exactly
        for written in (wid, hid):
            assert identical(msgpack_client.get_record(TABLE, written)["v"], value)


def test_the_issue_cases_by_name(gateway: Gateway, wire: JsonWire) -> None:
    """NaN/±inf, a stored ``{"$b64": ...}`` map, int keys: each came back changed."""
    nan = float("nan")
    cases = {
        "floats": [nan, float("inf"), -float("inf"), -0.0],
        "lookalike": {"$b64": "AAAA"},
        "intkeys": {1: "one", 2: {3: b"\x00"}},
        "bytes": b"\x00\xff",
    }
    with gateway.server.connect() as c:
        c.create_record("json_cases", {"id": 1, **cases})
    for text in (
        gateway.http.get("/api/states/json_cases/records/1").content,
        jsoncodec.dumps(wire.call({"command": "GET_RECORD", "state": "json_cases", "id": 1})),
        gateway.http.get("/api/states/json_cases/records").content,
    ):
        assert b"NaN" not in text and b"Infinity" not in text
        decoded = strict(text)
        record = decoded["records"][0] if "records" in decoded else decoded
        for field, value in cases.items():
            assert identical(record[field], value), (field, record[field])
    # where= takes the escapes too: bytes and a look-alike map are matched exactly.
    where = jsoncodec.dumps({"bytes": b"\x00\xff", "lookalike": {"$b64": "AAAA"}}).decode()
    page = gateway.http.get("/api/states/json_cases/records", params={"where": where}).json()
    assert [r["id"] for r in page["records"]] == [1]


def test_names_and_ids_with_a_slash_work_on_every_route(gateway: Gateway) -> None:
    """One rule: a path segment is percent-decoded after the path is split on ``/``
    (``a/b`` is ``a%2Fb``); names and ids may hold any character."""
    http = gateway.http
    name, rid = "a/b %2F?#é", "x/y%"
    base = f"/api/states/{quote(name, safe='')}"
    one = f"{base}/records/{quote(rid, safe='')}"
    assert http.post("/api/states", json={"state": name}).status_code == 201
    assert http.get(base).json()["name"] == name
    r = http.post(f"{base}/records", json={"id": rid, "n": 1, "s": "new"})
    assert r.status_code == 201 and r.json()["id"] == rid
    assert http.get(f"{base}/schema").json() == {"schema": ["id", "n", "s"]}
    assert http.get(one).json()["n"] == 1
    assert http.patch(one, json={"n": 2}).json()["n"] == 2
    assert http.put(one, json={"n": 3, "s": "new"}).json()["n"] == 3
    assert http.post(f"{one}/increment", json={"field": "n"}).json() == {"value": 4}
    r = http.post(f"{base}/claim", json={"where": {"s": "new"}, "fields": {"s": "taken"}})
    assert r.json()["record"]["id"] == rid
    assert [x["id"] for x in http.get(f"{base}/records").json()["records"]] == [rid]
    assert http.patch(base, json={"add": {"t": {"default": None}}}).status_code == 200
    assert http.put(f"{base}/records", json={"records": [{"id": rid, "n": 0, "s": "a", "t": 1}]})
    names = [s["name"] for s in http.get("/api/states").json()["states"]]
    assert name in names
    # The feed filters by such names too (a JSON list, since a name may hold a comma).
    with httpx.Client(base_url=gateway.url, headers=gateway.info.headers, timeout=10) as other:
        event = first_change(
            http,
            {"tables": json.dumps([name])},
            lambda: other.post(f"{one}/increment", json={"field": "n"}).raise_for_status(),
        )
    assert event["table"] == name and event["put_ids"] == [rid]
    assert http.delete(one).json() == {"deleted": rid}
    assert http.get(one).status_code == 404
    assert http.delete(base).json() == {"deleted": name}
    assert http.get(base).status_code == 404
    # Bad percent-encoding (not UTF-8) is a clear 400, not a crash.
    r = http.get("/api/states/%ff")
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequest"


def test_a_feed_event_with_nan_is_strict_json(gateway: Gateway) -> None:
    http = gateway.http
    assert http.post("/api/states", json={"state": "json_feed"}).status_code == 201
    with gateway.server.connect() as c:
        event = first_change(
            http,
            {"tables": "json_feed", "records": "true"},
            lambda: c.create_record("json_feed", {"v": float("nan"), "k": {1: b"\x00"}}),
        )
    assert identical(event["puts"][0]["v"], float("nan"))
    assert identical(event["puts"][0]["k"], {1: b"\x00"})


def test_stateengine_call_reads_what_it_prints(gateway: Gateway) -> None:
    """``stateengine call`` prints replies with the escapes; its arguments and stdin
    lines take them too, so its own output can be fed back."""
    value = {"b": b"\x00", "f": float("inf"), "m": {1: 2}, "l": {"$b64": "AAAA"}}
    text = jsoncodec.dumps(value).decode()
    cmd = [sys.executable, "-m", "stateengine", "call", "--data-dir", str(gateway.data_dir)]
    out = subprocess.run(
        [*cmd, "create_record", "state=json_call", f"record={text}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert identical(strict(out.stdout)["result"]["l"], value["l"])
    line = jsoncodec.dumps({"command": "CREATE_RECORD", "state": "json_call", "record": value})
    out = subprocess.run(
        [*cmd, "-"], input=line.decode() + "\n", capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    with gateway.server.connect() as c:
        for record in c.list_records("json_call"):
            assert identical({k: record[k] for k in value}, value)
    out = subprocess.run(
        [*cmd, "get_record", "state=json_call", 'id={"$b64": 5}'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "$b64" in out.stderr
