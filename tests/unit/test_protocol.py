"""Body decoding (SPEC §5): JSON vs msgpack by first byte, $b64 bytes, clear errors."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateengine import jsoncodec, protocol
from stateengine.errors import BadRequest, PayloadTooLarge


def test_json_and_msgpack_requests_decode_to_the_same_map() -> None:
    req = {"command": "GET_RECORD", "state": "t", "id": 1}
    assert protocol.decode_request(b' {"command": "GET_RECORD", "state": "t", "id": 1}') == (
        req,
        True,
    )
    assert protocol.decode_request(msgpack.packb(req)) == (req, False)


def test_bytes_travel_in_json_as_b64() -> None:
    body = protocol.encode_reply({"ok": True, "result": b"\x00\xff"}, as_json=True)
    assert b'{"$b64": "AP8="}' in body
    assert protocol.decode_reply(body)["result"] == b"\x00\xff"
    req, _ = protocol.decode_request(b'{"record": {"blob": {"$b64": "AP8="}}}')
    assert req["record"]["blob"] == b"\x00\xff"


@pytest.mark.parametrize(
    "body",
    [b"", b"[1, 2]", msgpack.packb([1, 2]), b"\xc1", b"{not json", b'{"$b64": "!!"}', b"x"],
)
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        protocol.decode_request(body)


def test_oversized_body_is_payload_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_REQUEST_BYTES", 10)
    with pytest.raises(PayloadTooLarge):
        protocol.decode_request(b'{"command": "LIST_STATES"}')


@given(st.binary(max_size=64))
def test_any_bytes_decode_to_a_map_or_a_bad_request(body: bytes) -> None:
    try:
        request, _ = protocol.decode_request(body)
    except BadRequest as exc:
        assert exc.message
    else:
        assert isinstance(request, dict)


def test_check_value_names_the_field() -> None:
    with pytest.raises(BadRequest, match=r"record\.tags\[1\]: a set"):
        protocol.check_value([1, {2}], "record.tags")
    with pytest.raises(BadRequest, match="64-bit"):
        protocol.check_value(2**64, "record.n")
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(BadRequest, match="nested deeper"):
        protocol.check_value(deep, "record.x")


def test_values_equal_keeps_bool_apart_from_int() -> None:
    assert protocol.values_equal(1, 1.0)
    assert not protocol.values_equal(True, 1)
    assert protocol.values_equal([1, {"a": 2}], [1.0, {"a": 2}])
    assert not protocol.values_equal([1], (1,))


def test_reply_outcome_is_the_one_reply_step() -> None:
    """ok → result and the higher seq; an error → its class, seen_seq left alone."""
    from stateengine.errors import VersionConflict

    assert protocol.reply_outcome({"ok": True, "result": 7, "seq": 12}, 3) == (7, 12)
    assert protocol.reply_outcome({"ok": True, "result": [], "seq": 2}, 3) == ([], 3)
    assert protocol.reply_outcome({"ok": True, "result": None}, 3) == (None, 3)
    with pytest.raises(VersionConflict):
        protocol.reply_outcome({"ok": False, "error": {"type": "VersionConflict"}, "seq": 9}, 3)


def _decode_reply_before(body: bytes) -> dict[str, object]:
    """decode_reply as it was before its fixmap test was put first (the reference)."""
    if protocol.is_json(body):
        reply = jsoncodec.loads(body)
    else:
        try:
            reply = protocol._decode_msgpack(body)
        except Exception as exc:
            raise BadRequest(f"malformed reply: {exc}") from None
    if not isinstance(reply, dict):
        raise BadRequest("malformed reply: not a map")
    return reply


def _outcome(decode: object, body: bytes) -> tuple[str, object]:
    try:
        return "ok", decode(body)  # type: ignore[operator]
    except BadRequest as exc:
        return "BadRequest", exc.message
    except Exception as exc:  # what the caller would see: the same type and text
        return type(exc).__name__, str(exc)


_reply_maps = st.dictionaries(
    st.text(max_size=5),
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5),
    max_size=18,  # past 15 keys: a map 16, not a fixmap
)


@given(
    st.one_of(
        st.binary(max_size=40),
        _reply_maps.map(lambda m: msgpack.packb(m, use_bin_type=True)),
        _reply_maps.map(lambda m: protocol.encode_reply(m, as_json=True)),
        st.tuples(_reply_maps, st.integers(0, 40), st.binary(max_size=3)).map(
            lambda t: msgpack.packb(t[0])[: t[1]] + t[2]  # cut and trailing bytes
        ),
    )
)
def test_decode_reply_answers_as_before_for_any_body(body: bytes) -> None:
    """The fixmap test in front of is_json() changes no outcome: value, error type, text."""
    assert _outcome(protocol.decode_reply, body) == _outcome(_decode_reply_before, body)
