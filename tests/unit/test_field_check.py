"""The engine's fast field check gives what the full check gives (issue 17).

``check_field`` skips ``check_value``/``conform`` (and the field path they are given)
for plain valid scalars; ``_validate_record`` skips its per-name tests when every name
is in the table's schema. Neither may change a result or an error message: each case
here is compared with the full path, which is the reference.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from stateengine import Engine
from stateengine.errors import BadRequest, SchemaError
from stateengine.protocol import INT_MAX, INT_MIN, TYPE_NAMES, check_field, check_value, conform

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    INT_MAX,
    INT_MIN,
    INT_MAX + 1,
    INT_MIN - 1,
    1.5,
    float("nan"),
    "",
    "ascii",
    "héllo",
    "bad \ud800 surrogate",
    b"\x00\xff",
    bytearray(b"x"),
    [1, "a"],
    [1, {2}],
    {"k": 1},
    {1.5: 1},
    {"k": ["é"]},
    (1, 2),
    {1, 2},
    object(),
]
TYPES = [*TYPE_NAMES, *(f"{t}?" for t in TYPE_NAMES)]


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        value = call()
    except (BadRequest, SchemaError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", (type(value), repr(value))


@pytest.mark.parametrize(("value", "type_name"), list(itertools.product(VALUES, TYPES)), ids=repr)
def test_check_field_is_check_value_then_conform(value: Any, type_name: str) -> None:
    """Same value (and type: ints become floats for ``float``) or same error and message."""
    full = _outcome(lambda: conform(check_value(value, "w.f"), type_name, "w.f"))
    assert _outcome(lambda: check_field(value, type_name, "w", "f")) == full


def test_record_name_errors_are_unchanged_on_a_table_with_a_schema() -> None:
    """A name outside the schema still gets the per-name message, not 'unknown field'."""
    eng = Engine()
    eng.create_state("t", schema={"name": "string", "n": "integer"})
    cases: list[tuple[dict[Any, Any], str]] = [
        ({"name": "b", "n": 1, "_version": 3}, "'_version' is reserved"),
        ({"name": "b", "n": 1, "_expires": 3}, "'_expires' is reserved"),
        ({"name": "b", "n": 1, "": 3}, "field names are non-empty strings"),
        ({"name": "b", "n": 1, 7: 3}, "field names are non-empty strings, not 7"),
        ({"name": "b", "n": 1, "colour": 3}, "unknown field 'colour'"),
        ({"name": "b"}, "missing field 'n'"),
        ({"name": "b", "n": "x"}, "record.n: expected integer, got str 'x'"),
        ({"name": "b", "n": INT_MAX + 1}, "record.n: integer .* outside the 64-bit range"),
    ]
    for raw, message in cases:
        with pytest.raises((SchemaError, BadRequest), match=message):
            eng.create_record("t", raw)
    with pytest.raises(SchemaError, match=r"records\[1\]\.n: expected integer"):
        eng.set_state("t", [{"id": 1, "name": "a", "n": 1}, {"id": 2, "name": "b", "n": 1.5}])
    assert eng.create_record("t", {"name": "b", "n": 2})["n"] == 2
    eng.create_state("f", schema={"x": "float"})
    assert type(eng.create_record("f", {"x": 2})["x"]) is float  # cast as conform casts
