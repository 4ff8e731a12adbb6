"""JSON round trips are lossless (issue 14 item 10): the escapes of ``stateengine.jsoncodec``.

Every msgpack value -> strict JSON text (no bare NaN: what ``JSON.parse`` accepts) -> the
same value, NaN included; and the wire's JSON bodies use exactly that rule.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateengine import jsoncodec, protocol
from stateengine.errors import BadRequest
from stateengine.testing.strategies import identical, json_hard_values


@settings(max_examples=400)
@given(json_hard_values())
def test_every_msgpack_value_survives_strict_json(value: Any) -> None:
    # The value as a msgpack client would store it (what the server holds).
    stored = msgpack.unpackb(msgpack.packb(value, use_bin_type=True), strict_map_key=False)
    text = json.dumps(jsoncodec.to_json(stored), allow_nan=False)  # strict: raises on NaN
    json.loads(text, parse_constant=pytest.fail)  # no bare NaN/Infinity in it
    assert identical(jsoncodec.loads(text), stored)
    # The wire's encoder is that rule too, both ways.
    reply = protocol.decode_reply(protocol.encode_reply({"ok": True, "result": stored}, True))
    assert identical(reply["result"], stored)
    request, as_json = protocol.decode_request(jsoncodec.dumps({"record": {"v": stored}}))
    assert as_json and identical(request["record"]["v"], stored)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"\x00\xff", '{"$b64": "AP8="}'),
        (math.nan, '{"$float": "nan"}'),
        (math.inf, '{"$float": "inf"}'),
        (-math.inf, '{"$float": "-inf"}'),
        ({1: "a", "b": 2}, '{"$map": [[1, "a"], ["b", 2]]}'),
        ({"$b64": "AAAA"}, '{"$lit": {"$b64": "AAAA"}}'),
        ({"$x": b"\x01"}, '{"$lit": {"$x": {"$b64": "AQ=="}}}'),
        ({"$a": 1, "$b": 2}, '{"$a": 1, "$b": 2}'),  # two keys: never an escape
        ([-0.0, 2**64 - 1, -(2**63)], "[-0.0, 18446744073709551615, -9223372036854775808]"),
    ],
)
def test_the_escape_table(value: Any, text: str) -> None:
    assert jsoncodec.dumps(value).decode() == text
    assert identical(jsoncodec.loads(text), value)


def test_bare_nan_and_unknown_dollar_keys_are_accepted_on_input() -> None:
    assert identical(jsoncodec.loads("[NaN, Infinity, -Infinity]"), [math.nan, math.inf, -math.inf])
    assert jsoncodec.loads('{"$x": 1}') == {"$x": 1}


@pytest.mark.parametrize(
    "text",
    [
        '{"$b64": 5}',
        '{"$b64": "!!"}',
        '{"$float": "NaN"}',
        '{"$float": 1.5}',
        '{"$map": {"a": 1}}',
        '{"$map": [[1]]}',
        '{"$map": [[1.5, 1]]}',
        '{"$map": [[[1], 1]]}',
        '{"$lit": [1]}',
        "[" * 100_000,
    ],
)
def test_malformed_escapes_are_bad_requests(text: str) -> None:
    with pytest.raises(BadRequest):
        jsoncodec.loads(text)
    with pytest.raises(BadRequest):
        protocol.decode_request(b'{"command": "X", "v": ' + text.encode() + b"}")


@given(st.recursive(st.integers(), lambda c: st.lists(c, max_size=3), max_leaves=5))
def test_plain_json_is_unchanged(value: Any) -> None:
    assert jsoncodec.to_json(value) == value


def test_what_the_json_store_wrote_before_still_decodes() -> None:
    """The JSON store now uses this codec; its older files wrote a look-alike map as
    ``$map`` with string keys, and ``$float`` as ``repr``: both still decode."""
    old = '{"a": {"$map": [["$b64", "x"]]}, "f": {"$float": "-inf"}, "m": {"$map": [[1, 2]]}}'
    assert identical(jsoncodec.loads(old), {"a": {"$b64": "x"}, "f": -math.inf, "m": {1: 2}})
