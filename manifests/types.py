"""``_state.type`` enforcement: validate and cast values to the SPEC §3 vocabulary.

Built on :func:`stateengine.protocol.conform` (the one type check tables use too). On top
of it, values that arrive as text from Env, File, Db or Http are cast when the text is
unambiguous: ``"42"`` → 42 for ``integer``, ``"2.5"`` → 2.5 for ``float``,
``"true"``/``"false"`` (any case, also ``"1"``/``"0"``) → bool for ``boolean``, JSON
text → list or map for ``list``/``map``, and ``0``/``1`` integers → bool. Anything else
that does not conform is a :class:`StateTypeMismatch` naming the key and the type.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from stateengine.errors import SchemaError, StateTypeMismatch
from stateengine.protocol import conform, describe

__all__ = [
    "cast_value",
]


_INT_RE: Final = re.compile(r"[+-]?\d+\Z")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def cast_value(value: Any, type_name: str | None, key: str, origin: str = "") -> Any:
    """Validate *value* against *type_name* (None: untyped) and return it, cast if needed.

    :param key: the manifest path, for the error message.
    :param origin: where the value came from (``loaded from Env``), for the message.
    :raises StateTypeMismatch: naming *key*, the type and the value.
    """
    if type_name is None:
        return value
    try:
        return conform(_cast(value, type_name), type_name, key)
    except SchemaError:
        suffix = f" ({origin})" if origin else ""
        raise StateTypeMismatch(
            f"{key}: value {value!r:.80} ({describe(value)}) does not match _state.type"
            f" {type_name!r}{suffix}"
        ) from None


def _cast(value: Any, type_name: str) -> Any:
    base = type_name.removesuffix("?")
    if isinstance(value, str):
        text = value.strip()
        if base == "integer" and _INT_RE.match(text):
            return int(text)
        if base == "float":
            try:
                return float(text)
            except ValueError:
                return value
        if base == "boolean":
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        if base in ("list", "map") and text[:1] in ("[", "{"):
            try:
                return json.loads(text)
            except ValueError:
                return value
        if type_name.endswith("?") and base != "string" and text.lower() in ("", "null"):
            return None
        return value
    if base == "boolean" and type(value) is int and value in (0, 1):
        return bool(value)
    if base == "integer" and type(value) is float and value.is_integer():
        return int(value)
    return value
