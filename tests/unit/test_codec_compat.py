"""The msgspec codec (issue 17) against the ``msgpack`` package: the same bytes out of the
encoder, the same values out of the decoder, so the wire and the arena stay msgpack.

The server decodes requests with msgspec (``protocol.decode_request``) and encodes
records and table infos for the arena with it (``shm.codec.record_encoder``); clients,
readers, the log and other tools use ``msgpack``. Every case is checked both ways:
``encode(v) == msgpack.packb(v, use_bin_type=True)`` and
``decode(packb(v)) == unpackb(packb(v), raw=False, strict_map_key=False)``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateengine import protocol
from stateengine.errors import BadRequest
from stateengine.shm.codec import record_encoder

encode = record_encoder()
decode = protocol._decode_msgpack


def reference(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and floats told from ints and -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


INT_EDGES = [
    0, 1, -1, 127, 128, 255, 256, -32, -33, -128, -129, 65535, 65536, -32768, -32769,
    2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 - 1, 2**32,
    2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) + 1,
]  # fmt: skip
FLOATS = [
    0.0, -0.0, 1.5, -2.25, 1e300, -1e-300, 5e-324, 0.1, 1.0, 2.0**53,
    float("nan"), float("inf"), float("-inf"),
    struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0],  # a NaN with a payload
]  # fmt: skip
STRINGS = ["", "a", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "x" * 65535, "x" * 65536, "é ☃ 𝄞"]
BLOBS = [b"", b"\x00\xff", b"b" * 255, b"b" * 256, b"b" * 65535, b"b" * 65536]
CASES: list[Any] = [
    None,
    True,
    False,
    *INT_EDGES,
    *FLOATS,
    *STRINGS,
    *BLOBS,
    [],
    list(range(15)),
    list(range(16)),
    list(range(65536)),
    {},
    {str(i): i for i in range(15)},
    {str(i): i for i in range(16)},
    {i: str(i) for i in range(65536)},
    {1: "int key", -5: "negative", 2**63 - 1: "edge", "s": "str key"},
    {"a": {"b": {"c": [1, {"d": [b"x", 1.5, None, True]}]}}},
    {"id": 1, "name": "user000000", "score": 0.0, "tags": ["a", "b"], "blob": b"\x01"},
]


@pytest.mark.parametrize("value", CASES, ids=lambda v: f"{type(v).__name__}:{str(v)[:24]}")
def test_encoder_and_decoder_agree_with_msgpack(value: Any) -> None:
    packed = reference(value)
    assert encode(value) == packed
    assert protocol.encode_valid(value) == packed  # the server's encoder of replies
    expected = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    assert same(decode(packed), expected)


def test_floats_travel_as_float64_and_bytes_as_bin() -> None:
    assert encode(1.5)[:1] == b"\xcb"  # float 64, never float 32
    assert encode(float("nan")) == b"\xcb" + struct.pack(">d", float("nan"))
    assert encode(b"xy") == b"\xc4\x02xy"  # bin 8, not str
    assert encode("xy") == b"\xa2xy"
    assert type(decode(b"\xca\x3f\xc0\x00\x00")) is float  # a float 32 from another client


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.text(max_size=8) | st.integers(-(2**63), 2**63 - 1), children, max_size=6
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_any_msgpack_value_encodes_and_decodes_as_msgpack_does(value: Any) -> None:
    packed = reference(value)
    assert encode(value) == packed
    assert protocol.encode_valid(value) == packed
    assert same(decode(packed), msgpack.unpackb(packed, raw=False, strict_map_key=False))


def test_out_of_range_ints_raise_what_msgpack_raises() -> None:
    for value in (2**64, -(2**63) - 1):
        with pytest.raises(OverflowError):
            reference(value)
        with pytest.raises(OverflowError):
            encode(value)


def test_a_set_is_refused_by_the_clients_packer_even_though_msgspec_takes_it() -> None:
    """Why the clients keep msgpack: msgspec encodes a set as an array where msgpack
    raises TypeError, which ``pack_request`` turns into a BadRequest naming the field.
    The record encoder sees validated values only (check_value refuses a set)."""
    assert encode({1, 2}) == b"\x92\x01\x02"  # what the record encoder would do
    pack = msgpack.Packer(use_bin_type=True).pack
    with pytest.raises(BadRequest, match=r"request\.record\.tags: a set"):
        protocol.pack_request(pack, {"record": {"tags": {1, 2}}})
    with pytest.raises(BadRequest, match="a set is not a msgpack value"):
        protocol.check_value({1, 2}, "tags")


@pytest.mark.parametrize(
    "body",
    [
        b"\x81\xa1v\xdd\xff\xff\xff\xff",  # an array of 2³²-1 items declared, none given
        b"\xdf\xff\xff\xff\xff",  # the same for a map
        b"\x81\xa1v\xdb\xff\xff\xff\xff",  # a str of 4 GiB declared
        b"\x81\xa1v\xc6\xff\xff\xff\xff",  # a bin of 4 GiB declared
        b"\x81\xa1a\x01\x00",  # trailing data
        b"\x81\xa3\xff\xfe\xfd\x01",  # a key that is not UTF-8
        b"\x81\xa1v" + b"\x91" * 200_000 + b"\xc0",  # nested past any stack
        b"\x81\x80\x01",  # a map as a map key (unhashable)
        b"\x81\xc1\x01",  # 0xc1 is never used
    ],
)
def test_malformed_requests_are_bad_requests_not_msgspec_errors(body: bytes) -> None:
    with pytest.raises(Exception) as raw:  # what msgpack itself says: refused too
        msgpack.unpackb(body, raw=False, strict_map_key=False)
    assert not isinstance(raw.value, BadRequest)
    with pytest.raises(BadRequest, match="invalid msgpack request"):
        protocol.decode_request(body)


def test_malformed_reply_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="malformed reply"):
        protocol.decode_reply(b"\x82\xa2ok")


def test_plain_values_only_out_of_the_decoder() -> None:
    """What msgpack would decode to an ExtType or Timestamp comes out as msgspec's own
    types; either way the engine's check_value refuses it, naming the field."""
    for packed in (reference(msgpack.ExtType(5, b"ab")), b"\xd6\xff\x00\x00\x00\x01"):
        body = b"\x81\xa1v" + packed
        value = protocol.decode_request(body)[0]["v"]
        with pytest.raises(BadRequest, match="is not a msgpack value"):
            protocol.check_value(value, "v")


def test_control_the_comparison_sees_a_float32_or_a_raw_str_codec() -> None:
    """Control: a codec that packed floats as float 32 or bytes as raw str would fail the
    comparisons above."""
    assert msgpack.packb(0.1, use_single_float=True) != encode(0.1)
    assert msgpack.packb(b"x", use_bin_type=False) != encode(b"x")
    assert not same(msgpack.unpackb(msgpack.packb(0.1, use_single_float=True)), 0.1)
