"""msgpack values in JSON, losslessly: the escapes for what JSON cannot carry.

One rule for every JSON door into the server (the ZeroMQ wire's JSON bodies, the HTTP
gateway's bodies, query parameters, replies and feed events), in both directions, so a
JSON client reads back exactly what any client stored (README "Wire protocol"):

==============================  ==========================================================
msgpack value                   JSON
==============================  ==========================================================
bytes                           ``{"$b64": "<base64, standard alphabet, padded>"}``
float NaN, +inf, -inf           ``{"$float": "nan"}``, ``{"$float": "inf"}``,
                                ``{"$float": "-inf"}``
a map with a non-string key     ``{"$map": [[key, value], ...]}`` (keys: int or str)
a map whose only key starts     ``{"$lit": {...}}``: the map inside is taken as it is
with ``$``                      (its values are still decoded)
==============================  ==========================================================

An object whose only key is one of those four names is an escape, and a malformed one
(``{"$b64": 5}``, ``{"$float": "NaN"}``) is a :class:`BadRequest`. Other ``$`` keys are
left alone when decoding (a map ``{"$x": 1}`` sent bare reads back as that map), but
:func:`to_json` always writes a lone ``$`` key inside ``$lit``, so future escapes can
never change what stored data means. Why a walk and not ``json``'s hooks: ``default``
never sees floats or dict keys, and ``object_hook`` runs inside-out, so it would decode
the escape-looking map inside a ``$lit`` before seeing the ``$lit``.

Decoding also accepts the bare ``NaN``, ``Infinity`` and ``-Infinity`` that some
encoders (Python's ``json`` by default) write; encoding never writes them (strict JSON,
which ``JSON.parse`` accepts).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Final

from stateengine.errors import BadRequest

__all__ = [
    "B64",
    "ESCAPES",
    "FLOAT",
    "LIT",
    "MAP",
    "dumps",
    "from_json",
    "loads",
    "to_json",
]


B64: Final = "$b64"
FLOAT: Final = "$float"
MAP: Final = "$map"
LIT: Final = "$lit"
ESCAPES: Final = frozenset({B64, FLOAT, MAP, LIT})

_FLOATS: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
#: Types JSON carries as they are (floats are not: NaN and the infinities).
_PLAIN: Final = frozenset({str, int, bool, type(None)})
#: What ``json.loads`` makes that is never an escape.
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def to_json(value: Any) -> Any:
    """A msgpack value as plain JSON data (str keys, finite floats, no bytes).

    Tuples are written as lists. Never mutates *value*.

    :raises TypeError: a value that is not a msgpack type (as ``json.dumps`` would).
    """
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else {FLOAT: repr(value)}
    if t is list or t is tuple:
        return [v if type(v) in _PLAIN else to_json(v) for v in value]
    if t is dict:
        out = {}
        for k, v in value.items():  # one pass; scalars inline (a page of records is hot)
            if type(k) is not str:
                return {MAP: [[to_json(k), to_json(v)] for k, v in value.items()]}
            out[k] = v if type(v) in _PLAIN else to_json(v)
        if len(out) == 1 and next(iter(out)).startswith("$"):
            return {LIT: out}
        return out
    if t is bytes or t is bytearray or t is memoryview:
        return {B64: base64.b64encode(value).decode("ascii")}
    if isinstance(value, str):  # subclasses: a StrEnum, an IntEnum, ...
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return to_json(float(value))
    raise TypeError(f"a {t.__name__} is not a msgpack value")


def from_json(value: Any) -> Any:
    """Undo :func:`to_json` on parsed JSON data.

    :raises BadRequest: a malformed escape (``$b64`` not base64, ``$float`` not one of
        ``nan``/``inf``/``-inf``, ``$map`` not a list of pairs or with a key that is
        not an int or a str, ``$lit`` not an object), or nesting past Python's limit.
    """
    try:
        return _decode(value)
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None


def _decode(value: Any) -> Any:
    t = type(value)
    if t is list:
        return [v if type(v) in _SCALARS else _decode(v) for v in value]
    if t is not dict:
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key in ESCAPES:
            return _unescape(key, inner)
    return {k: v if type(v) in _SCALARS else _decode(v) for k, v in value.items()}


def _unescape(key: str, inner: Any) -> Any:
    if key == B64:
        if type(inner) is not str:
            raise BadRequest(f"$b64 must be a base64 string, not {type(inner).__name__}")
        try:
            return base64.b64decode(inner, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"invalid base64 in $b64: {exc}") from None
    if key == FLOAT:
        if type(inner) is not str or inner not in _FLOATS:
            raise BadRequest(f'$float must be "nan", "inf" or "-inf", not {inner!r:.40}')
        return _FLOATS[inner]
    if key == LIT:
        if type(inner) is not dict:
            raise BadRequest(f"$lit must wrap an object, not {type(inner).__name__}")
        return {k: v if type(v) in _SCALARS else _decode(v) for k, v in inner.items()}
    # $map
    if type(inner) is not list:
        raise BadRequest(f"$map must be a list of [key, value] pairs, not {type(inner).__name__}")
    out: dict[Any, Any] = {}
    for pair in inner:
        if type(pair) is not list or len(pair) != 2:
            raise BadRequest(f"$map: each entry must be a [key, value] pair, not {pair!r:.40}")
        k = pair[0]
        if type(k) is not int and type(k) is not str:
            raise BadRequest(f"$map: a key must be an int or a str, not {type(k).__name__}")
        out[k] = _decode(pair[1])
    return out


def dumps(value: Any) -> bytes:
    """*value* as strict JSON text (UTF-8, ASCII-escaped), escapes applied.

    :raises TypeError: a value that is not a msgpack type.
    """
    return json.dumps(to_json(value), allow_nan=False).encode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text and undo the escapes.

    :raises BadRequest: not JSON (or nested too deeply), or a malformed escape.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    return from_json(data)
