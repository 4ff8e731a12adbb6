"""What travels on the wire: values, types, and request/reply bodies. No sockets here.

Three concerns live in this one leaf module because every layer needs them and they
must agree byte for byte:

* **Values.** Records hold msgpack types only. :func:`check_value` validates a value
  (and copies containers, so a caller mutating its dict afterwards cannot reach into
  the store) and names the offending field when it rejects one.
* **Types.** One vocabulary serves declared table schemas and manifests'
  ``_state.type``: ``integer float string boolean bytes list map any``, with a trailing
  ``?`` allowing nil (SPEC §3).
* **Bodies.** :func:`decode_request` tells JSON from msgpack by the first byte (SPEC §5)
  and :func:`encode_reply` answers in the same format; in JSON, what JSON cannot
  carry (bytes, NaN and infinities, int map keys) travels as the escapes of
  :mod:`stateengine.jsoncodec`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

import msgpack
import msgspec

from stateengine import jsoncodec
from stateengine.errors import BadRequest, PayloadTooLarge, SchemaError, from_wire
from stateengine.limits import INT_MAX as INT_MAX  # re-exported: the value range
from stateengine.limits import INT_MIN as INT_MIN
from stateengine.limits import MAX_DEPTH as MAX_DEPTH
from stateengine.limits import MAX_ORDER_KEYS as MAX_ORDER_KEYS
from stateengine.limits import MAX_REQUEST_BYTES as MAX_REQUEST_BYTES
from stateengine.limits import REQ_ID_WINDOW, check_text

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "MAX_ORDER_KEYS",
    "MAX_REQUEST_BYTES",
    "TYPE_NAMES",
    "UNCHANGED_FIELDS",
    "accepts_unchanged",
    "check_field",
    "check_type_name",
    "check_value",
    "conform",
    "copy_value",
    "decode_reply",
    "decode_request",
    "describe",
    "encode_reply",
    "encode_request",
    "encode_valid",
    "is_json",
    "order_records",
    "pack_request",
    "parse_order_by",
    "peek_req_id",
    "reply_outcome",
    "sort_key",
    "values_equal",
    "with_req_id",
]


_SCALARS: Final = (bytes, float)

# msgspec's decoder gives the values msgpack.unpackb(raw=False, strict_map_key=False)
# gives for every msgpack value (tests/unit/test_codec_compat.py pins it): 0.6 µs for a
# one-write request where unpackb takes 1.5, 1.0 µs a record of a 10⁴-record SET_STATE
# where it takes 1.8 (bench issue 17). It decodes to plain values only (an array map key
# becomes a tuple, an ext a msgspec.msgpack.Ext or datetime: check_value refuses them
# all); a declared length past the body's end fails without allocating it.
_decode_msgpack: Final = msgspec.msgpack.Decoder().decode


def describe(value: Any) -> str:
    """A short name of a value's type for error messages."""
    return type(value).__name__


def check_value(value: Any, where: str, depth: int = 0) -> Any:
    """Validate that *value* is a msgpack value and return it (containers copied).

    :param where: the field path for error messages (``record.tags[2]``).
    :raises BadRequest: naming *where* and the offending type.
    """
    if value is None or type(value) is bool:
        return value
    t = type(value)
    if t is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise BadRequest(f"{where}: integer {value} is outside the 64-bit range")
    if t is str:
        return value if value.isascii() else check_text(value, where)
    if t in _SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise BadRequest(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if t is list:
        return [check_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str and type(k) is not int:
                raise BadRequest(f"{where}: map key {k!r} is a {describe(k)}, not a str or int")
            if type(k) is str and not k.isascii():
                check_text(k, f"{where} (a map key)")
            out[k] = check_value(v, f"{where}.{k}", depth + 1)
        return out
    raise BadRequest(f"{where}: a {describe(value)} is not a msgpack value")


def copy_value(value: Any) -> Any:
    """Copy a value already known to be valid (results must not alias the store)."""
    t = type(value)
    if t is list:
        return [copy_value(v) for v in value]
    if t is dict:
        return {k: copy_value(v) for k, v in value.items()}
    return value


# --- equality and ordering on msgpack values ---------------------------------------------


def values_equal(a: Any, b: Any) -> bool:
    """``==`` as `where`/`if_match` mean it: ``1 == 1.0`` but ``True != 1``."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta is list:
        return tb is list and len(a) == len(b) and all(map(values_equal, a, b))
    if ta is dict:
        return tb is dict and a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if tb is list or tb is dict:
        return False
    return bool(a == b)


def sort_key(value: Any) -> tuple[Any, ...]:
    """A total order over msgpack values: nil, bool, numbers, str, bytes, list, map."""
    t = type(value)
    if value is None:
        return (0,)
    if t is bool:
        return (1, value)
    if t is int:
        return (2, 0, value)
    if t is float:
        return (2, 1, 0) if math.isnan(value) else (2, 0, value)
    if t is str:
        return (3, value)
    if t is bytes:
        return (4, value)
    if t is list:
        return (5, tuple(sort_key(v) for v in value))
    if t is dict:
        return (6, tuple(sorted((sort_key(k), sort_key(v)) for k, v in value.items())))
    return (7, repr(value))


def order_records(records: list[Any], keys: list[tuple[str, bool]], get: Any = None) -> list[Any]:
    """Sort in place by ``[(field, descending), ...]``, stable; *get* maps item → record.

    One sort with one composite key per record, so a sort costs O(n log n) comparisons
    whatever the number of keys (one stable pass per key made a 20,000-key ``order_by``
    hold the writer for 14-38 s); the order is exactly that of one stable pass per key,
    last key first. A repeated field adds nothing (records equal on it stay equal) and is
    dropped. When directions are mixed, a descending key enters the tuple as its negated
    rank among the values present (a reversed order that tuples compare in C, where a
    wrapper with a reversed ``__lt__`` costs a Python call per comparison: 2-5x slower).

    :raises BadRequest: more than :data:`~stateengine.limits.MAX_ORDER_KEYS` keys.
    """
    if len(keys) > MAX_ORDER_KEYS:
        raise BadRequest(f"order_by: at most {MAX_ORDER_KEYS} keys, not {len(keys)}")
    unique: dict[str, bool] = {}
    for name, descending in keys:
        unique.setdefault(name, descending)
    if not unique or not records:
        return records
    view = get if get is not None else _same
    directions = set(unique.values())
    if len(unique) == 1:
        ((name, descending),) = unique.items()
        records.sort(key=lambda r: sort_key(view(r).get(name)), reverse=descending)
    elif len(directions) == 1:  # all one way: a plain tuple, reversed as a whole if need be
        names = list(unique)
        records.sort(
            key=lambda r: tuple([sort_key(rec.get(n)) for rec in (view(r),) for n in names]),
            reverse=directions.pop(),
        )
    else:
        viewed = [view(r) for r in records]
        columns: list[list[Any]] = []
        for name, descending in unique.items():
            column: list[Any] = [sort_key(rec.get(name)) for rec in viewed]
            if descending:
                rank = {k: i for i, k in enumerate(sorted(set(column)))}
                column = [-rank[k] for k in column]
            columns.append(column)
        rows = list(zip(*columns, strict=True))
        order = sorted(range(len(records)), key=rows.__getitem__)
        records[:] = [records[i] for i in order]
    return records


def _same(item: Any) -> Any:
    return item


def parse_order_by(order_by: Any) -> list[tuple[str, bool]]:
    """``"f"``, ``"-f"`` or a list of those → ``[(field, descending)]``.

    :raises BadRequest: not a non-empty string or a list of them, or more than
        :data:`~stateengine.limits.MAX_ORDER_KEYS` of them (each key costs every sort a
        comparison; the bound keeps a request's cost proportional to what it reads).
    """
    if order_by is None:
        return []
    items = order_by if isinstance(order_by, list) else [order_by]
    if len(items) > MAX_ORDER_KEYS:
        raise BadRequest(f"order_by: at most {MAX_ORDER_KEYS} keys, not {len(items)}")
    keys = []
    for item in items:
        if not isinstance(item, str) or not item or item == "-":
            raise BadRequest(f"order_by: a field name or '-field', not {item!r:.60}")
        keys.append((item[1:], True) if item.startswith("-") else (item, False))
    return keys


# --- the type vocabulary ------------------------------------------------------------------

TYPE_NAMES: Final = ("integer", "float", "string", "boolean", "bytes", "list", "map", "any")


def check_type_name(name: Any, where: str) -> str:
    """Validate a type name (``string``, ``integer?``, ...) and return it.

    :raises SchemaError: naming *where* and the valid names.
    """
    if not isinstance(name, str) or name.removesuffix("?") not in TYPE_NAMES:
        raise SchemaError(
            f"{where}: unknown type {name!r}; use one of {', '.join(TYPE_NAMES)}"
            " (a trailing '?' allows nil)"
        )
    return name


def conform(value: Any, type_name: str, where: str) -> Any:
    """Check *value* against a type name and return it, ints cast to float for ``float``.

    :raises SchemaError: naming *where*, the type and what was given.
    """
    base = type_name.removesuffix("?")
    if value is None:
        if type_name.endswith("?") or base == "any":
            return None
    else:
        t = type(value)
        if base == "any":
            return value
        if base == "integer" and t is int:
            return value
        if base == "float" and (t is float or t is int):
            return float(value)
        if (
            (base == "string" and t is str)
            or (base == "boolean" and t is bool)
            or (base == "bytes" and t is bytes)
            or (base == "list" and t is list)
            or (base == "map" and t is dict)
        ):
            return value
    raise SchemaError(f"{where}: expected {type_name}, got {describe(value)} {value!r:.60}")


def _fast_field_table() -> dict[tuple[type, str], bool]:
    """(value type, declared type) → whether the value is cast to float, for the scalar
    pairs :func:`check_field` accepts without :func:`check_value` and :func:`conform`."""
    table: dict[tuple[type, str], bool] = {}
    for t, names in (
        (str, ("string",)),
        (int, ("integer",)),
        (float, ("float",)),
        (bool, ("boolean",)),
        (bytes, ("bytes",)),
    ):
        for name in (*names, "any"):
            table[t, name] = table[t, name + "?"] = False
    table[int, "float"] = table[int, "float?"] = True
    for name in TYPE_NAMES:
        table[type(None), name + "?"] = False
    table[type(None), "any"] = False
    return table


def check_field(value: Any, type_name: str, where: str, name: str) -> Any:
    """:func:`check_value` then :func:`conform` for a record field ``where.name``, the
    field path built only when the value is not a plain valid scalar (the error path).

    Bulk loads check every field of every record: the two f-strings per field were
    ~1.3 of the ~6 µs of validation of a 6-field record (issue 17, bench.writepath).

    :raises BadRequest: not a msgpack value (as :func:`check_value`).
    :raises SchemaError: not of *type_name* (as :func:`conform`).
    """
    t = type(value)
    cast_float = _FAST_FIELDS.get((t, type_name))
    if cast_float is not None:
        if t is str:
            if value.isascii():
                return value
        elif t is int:
            if INT_MIN <= value <= INT_MAX:
                return float(value) if cast_float else value
        else:
            return value
    path = f"{where}.{name}"
    return conform(check_value(value, path), type_name, path)


_FAST_FIELDS: Final = _fast_field_table()


def accepts_unchanged(value_type: type, type_name: str) -> bool:
    """Whether :func:`check_field` returns every value of exactly *value_type* as it is
    for a field of *type_name*, once the value is an int in range or valid text (which
    the engine's bulk checks leave to one encode): a scalar the type takes without a cast.
    """
    return _FAST_FIELDS.get((value_type, type_name)) is False


#: Every ``(value type, type name)`` for which :func:`accepts_unchanged` is true, so that a
#: caller judging a few fields per request tests each by one set lookup, not a call.
UNCHANGED_FIELDS: Final[frozenset[tuple[type, str]]] = frozenset(
    key for key, cast_float in _FAST_FIELDS.items() if not cast_float
)


# --- request and reply bodies ---------------------------------------------------------------


def is_json(body: bytes) -> bool:
    """True when a body is JSON: its first byte is ``{`` or JSON whitespace (SPEC §5)."""
    return bool(body) and body[0] in b"{ \t\r\n"


def decode_request(body: bytes, limit: int | None = None) -> tuple[dict[str, Any], bool]:
    """Decode one request body; return ``(request, is_json)``.

    :param limit: the largest body taken (default :data:`MAX_REQUEST_BYTES`; the server
        passes its ``--max-request-bytes``).
    :raises BadRequest: the body is empty, not a map, or not valid JSON/msgpack.
    :raises PayloadTooLarge: the body exceeds *limit*.
    """
    limit = MAX_REQUEST_BYTES if limit is None else limit
    if len(body) > limit:
        raise PayloadTooLarge(f"request of {len(body)} bytes exceeds the limit of {limit}")
    # A msgpack map's first byte (fixmap, map 16, map 32) told first, in line: the
    # common body; JSON's first bytes are none of these.
    first = body[0] if body else -1
    if not (0x80 <= first <= 0x8F or first == 0xDE or first == 0xDF):
        if is_json(body):
            request = jsoncodec.loads(body)  # the escapes of README "Wire protocol"
            if not isinstance(request, dict):
                raise BadRequest("a JSON request must be an object")
            return request, True
        raise BadRequest(
            "a request must be a msgpack map or a JSON object"
            f" (first byte {body[:1].hex() or 'missing'})"
        )
    try:
        request = _decode_msgpack(body)
    except Exception as exc:  # DecodeError, RecursionError (too deep), TypeError (a map key)
        raise BadRequest(f"invalid msgpack request: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("a msgpack request must be a map")
    return request, False


def encode_request(request: dict[str, Any]) -> bytes:
    return msgpack.packb(request, use_bin_type=True)  # type: ignore[no-any-return]


def pack_request(
    pack: Callable[[Any], bytes], request: dict[str, Any], limit: int | None = None
) -> bytes:
    """Encode with a client's reused packer; a value msgpack cannot carry is a BadRequest.

    (An int past 64 bits, a set, an object: the client says so before anything is sent.)

    :param limit: the server's request limit (``server.json``'s ``max_request_bytes``):
        a larger body is refused here, before it is sent, instead of being cut or
        answered by the server.
    :raises BadRequest: a value msgpack cannot carry.
    :raises PayloadTooLarge: the body exceeds *limit*.
    """
    try:
        body = pack(request)
    except (OverflowError, TypeError, ValueError) as exc:
        check_value(request, "request")  # names the field (an int past 64 bits, ...)
        raise BadRequest(f"the request cannot be encoded: {exc}") from None
    if limit is not None and len(body) > limit:
        raise PayloadTooLarge(
            f"request of {len(body)} bytes exceeds the server's limit of {limit} "
            "(serve --max-request-bytes); nothing was sent: split it"
        )
    return body


def with_req_id(request: dict[str, Any], req_id: Any) -> dict[str, Any]:
    """*request* with ``req_id`` as its first key (the clients' order), so that a server
    can answer a body too large to decode from its first bytes (:func:`peek_req_id`)."""
    out = {"req_id": req_id, **request}
    out["req_id"] = req_id  # a req_id inside *request* must not win
    return out


_JSON_REQ_ID: Final = re.compile(rb'\s*\{\s*"req_id"\s*:\s*(-?[0-9]{1,20}|"[^"\\]{0,40}")\s*[,}]')


def peek_req_id(body: bytes) -> tuple[bool, Any]:
    """``(True, req_id)`` when *body* starts with a ``req_id`` key, else ``(False, None)``.

    Reads at most :data:`~stateengine.limits.REQ_ID_WINDOW` bytes: how the server answers
    a body over its limit (which it does not decode) with the ``req_id`` the client waits
    for. The clients send ``req_id`` first (:func:`with_req_id`).
    """
    head = body[:REQ_ID_WINDOW]
    if is_json(head):
        match = _JSON_REQ_ID.match(head)
        if match is None:
            return False, None
        try:
            return True, json.loads(match.group(1))
        except ValueError:
            return False, None
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(head) + 1)
    unpacker.feed(head)
    try:
        if unpacker.read_map_header() < 1 or unpacker.unpack() != "req_id":
            return False, None
        value = unpacker.unpack()
    except Exception:  # msgpack.OutOfData, a bad header, ...: no req_id to be had
        return False, None
    if type(value) in (list, dict):  # incomplete containers are not worth echoing
        return False, None
    return True, value


def encode_reply(reply: dict[str, Any], as_json: bool = False) -> bytes:
    """Encode a reply in the format its request used."""
    if as_json:
        return jsoncodec.dumps(reply)
    return msgpack.packb(reply, use_bin_type=True)  # type: ignore[no-any-return]


#: Encode a reply (or any value) made of values :func:`check_value` accepts: msgspec's
#: encoder, the bytes ``msgpack.packb(value, use_bin_type=True)`` gives for them
#: (tests/unit/test_codec_compat.py) in about half its time. Not for other values: it
#: encodes a set, a datetime, a dataclass where msgpack raises.
encode_valid: Final[Callable[[Any], bytes]] = msgspec.msgpack.Encoder().encode


def decode_reply(body: bytes) -> dict[str, Any]:
    """A reply body's map (JSON or msgpack, told by the first byte as requests are).

    :raises BadRequest: not JSON or msgpack, or not a map.
    """
    # A msgpack fixmap (every reply of under 16 keys) told first, in line: is_json()'s
    # call and test were ~0.1 of the ~0.6 µs of a write's reply; no JSON body starts so.
    if (body and 0x80 <= body[0] <= 0x8F) or not is_json(body):
        try:
            reply = _decode_msgpack(body)
        except Exception as exc:  # as decode_request
            raise BadRequest(f"malformed reply: {exc}") from None
    else:
        reply = jsoncodec.loads(body)
    if not isinstance(reply, dict):
        raise BadRequest("malformed reply: not a map")
    return reply


def reply_outcome(reply: dict[str, Any], seen_seq: int) -> tuple[Any, int]:
    """The one reply step of every client (blocking, asyncio, the HTTP gateway): a reply
    map's result and the client's new ``seen_seq`` (the highest ``seq`` its writes
    produced, which its next arena read waits for: read-your-writes).

    :raises StateEngineError: the subclass the reply's ``error.type`` names (an ``ok:
        false`` reply); ``seen_seq`` is then unchanged.
    """
    if not reply.get("ok"):
        raise from_wire(reply.get("error"))
    seq = reply.get("seq")
    if isinstance(seq, int) and seq > seen_seq:
        seen_seq = seq
    return reply.get("result"), seen_seq
