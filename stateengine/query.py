"""What a ``where`` means: equality and the comparison operators, in one place.

``where`` maps field names to conditions. A condition is either a value, matched with
``values_equal`` (``1 == 1.0``, ``True != 1``), or an *operator map* such as
``{"$gte": 3, "$lt": 9}``: all of its conditions must hold. A map is an operator map
only when it is non-empty and every key is one of :data:`OPERATORS`; any other map,
``{}`` included, is a stored value matched literally, and ``{"$eq": {...}}`` matches a
stored map whose keys happen to look like operators.

Range operators (``$gt $gte $lt $lte``) compare numbers with numbers, strings with
strings and bytes with bytes; a value of another type (nil, a boolean, a list, a map,
NaN) never satisfies a range. ``$ne`` and ``$nin`` are the negations of ``$eq`` and
``$in``, so a record without the field satisfies them.

The engine, arena-side lists, ``if_match``, the gateway and the checker's model all call
:func:`compile_where` (or :func:`matches`), so a ``where`` cannot mean two things.
:class:`Condition` keeps each field's equality and bounds apart so an index can be
chosen from them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from stateengine.errors import BadRequest
from stateengine.protocol import values_equal

__all__ = [
    "OPERATORS",
    "RANGE_OPERATORS",
    "Condition",
    "Plan",
    "Predicate",
    "compile_where",
    "is_increment",
    "is_operator_map",
    "match_all",
    "matches",
    "plan_query",
    "range_class",
]

RANGE_OPERATORS: Final = frozenset({"$gt", "$gte", "$lt", "$lte"})
OPERATORS: Final = frozenset({"$eq", "$ne", "$in", "$nin"}) | RANGE_OPERATORS

Predicate = Callable[[Mapping[str, Any]], bool]

#: ``range_class`` results: which values a range may compare.
NUMBER: Final = "number"
STRING: Final = "string"
BYTES: Final = "bytes"


def range_class(value: Any) -> str | None:
    """``number``, ``string`` or ``bytes`` for a value a range can compare, else None."""
    t = type(value)
    if t is int:
        return NUMBER
    if t is float:
        return None if math.isnan(value) else NUMBER
    if t is str:
        return STRING
    if t is bytes:
        return BYTES
    return None


def is_increment(value: Any) -> bool:
    """Whether a claim's field value is ``{"$inc": n}`` (an increment, not a stored map)."""
    return type(value) is dict and len(value) == 1 and "$inc" in value


def is_operator_map(value: Any) -> bool:
    """Whether *value* is read as operators rather than as a stored map."""
    return type(value) is dict and bool(value) and all(k in OPERATORS for k in value)


@dataclass
class Condition:
    """One field's conditions, all of which must hold.

    ``equals`` holds the values of ``$eq`` (and of a plain value); ``lower``/``upper``
    the tightest range bounds as ``(value, inclusive)``; ``one_of``/``none_of`` the
    ``$in``/``$nin`` lists; ``not_equal`` the ``$ne`` values. ``empty`` is set when
    the bounds or classes contradict each other, so nothing can match.
    """

    name: str
    equals: list[Any] = field(default_factory=list)
    not_equal: list[Any] = field(default_factory=list)
    one_of: list[list[Any]] = field(default_factory=list)
    none_of: list[list[Any]] = field(default_factory=list)
    lower: tuple[Any, bool] | None = None
    upper: tuple[Any, bool] | None = None
    kind: str | None = None  # the range class every bound shares
    empty: bool = False

    def test(self, record: Mapping[str, Any]) -> bool:
        """Whether *record* satisfies every condition on this field."""
        if self.empty:
            return False
        present = self.name in record
        value = record.get(self.name)
        for wanted in self.equals:
            if not present or not values_equal(value, wanted):
                return False
        for unwanted in self.not_equal:
            if present and values_equal(value, unwanted):
                return False
        for options in self.one_of:
            if not present or not any(values_equal(value, o) for o in options):
                return False
        for options in self.none_of:
            if present and any(values_equal(value, o) for o in options):
                return False
        if self.kind is not None:
            if not present or range_class(value) != self.kind:
                return False
            if self.lower is not None:
                bound, inclusive = self.lower
                if not (value >= bound if inclusive else value > bound):
                    return False
            if self.upper is not None:
                bound, inclusive = self.upper
                if not (value <= bound if inclusive else value < bound):
                    return False
        return True

    def _add_bound(self, op: str, bound: Any, where: str) -> None:
        kind = range_class(bound)
        if kind is None:
            raise BadRequest(
                f"{where}.{op}: a range compares a number, a string or bytes, "
                f"not {_describe(bound)}"
            )
        if self.kind is not None and kind != self.kind:
            self.empty = True  # e.g. {"$gt": 1, "$lt": "b"}: no value is both
            return
        self.kind = kind
        inclusive = op in ("$gte", "$lte")
        if op in ("$gt", "$gte"):
            if self.lower is None or _tighter_lower((bound, inclusive), self.lower):
                self.lower = (bound, inclusive)
        elif self.upper is None or _tighter_upper((bound, inclusive), self.upper):
            self.upper = (bound, inclusive)


def _tighter_lower(new: tuple[Any, bool], old: tuple[Any, bool]) -> bool:
    return bool(new[0] > old[0] or (new[0] == old[0] and not new[1]))


def _tighter_upper(new: tuple[Any, bool], old: tuple[Any, bool]) -> bool:
    return bool(new[0] < old[0] or (new[0] == old[0] and not new[1]))


def _describe(value: Any) -> str:
    return "NaN" if type(value) is float and math.isnan(value) else f"a {type(value).__name__}"


def compile_condition(name: str, wanted: Any, where: str = "where") -> Condition:
    """The :class:`Condition` for one ``where`` entry.

    :raises BadRequest: an operator with an argument it cannot take (``$in`` without a
        list, a range bound that is not a number, string or bytes, or NaN).
    """
    cond = Condition(name)
    if not is_operator_map(wanted):
        cond.equals.append(wanted)
        return cond
    path = f"{where}.{name}"
    for op, arg in wanted.items():
        if op == "$eq":
            cond.equals.append(arg)
        elif op == "$ne":
            cond.not_equal.append(arg)
        elif op in ("$in", "$nin"):
            if type(arg) is not list:
                raise BadRequest(f"{path}.{op} takes a list of values, not {_describe(arg)}")
            (cond.one_of if op == "$in" else cond.none_of).append(arg)
        else:
            cond._add_bound(op, arg, path)
    if cond.lower is not None and cond.upper is not None:
        (low, low_in), (high, high_in) = cond.lower, cond.upper
        if low > high or (low == high and not (low_in and high_in)):
            cond.empty = True
    return cond


def compile_where(
    where: Mapping[str, Any] | None, label: str = "where"
) -> tuple[list[Condition], Predicate]:
    """Validate *where* once; return its conditions and a predicate over records.

    :raises BadRequest: *where* is not a map, a field name is not a string, or an
        operator's argument is invalid (see :func:`compile_condition`).
    """
    if where is None:
        return [], match_all
    if not isinstance(where, Mapping):
        raise BadRequest(f"{label} must be a map of field conditions, not {_describe(where)}")
    conditions = []
    for name, wanted in where.items():
        if not isinstance(name, str):
            raise BadRequest(f"{label}: field names are strings, not {name!r:.60}")
        conditions.append(compile_condition(name, wanted, label))
    if not conditions:
        return [], match_all
    if all(not c.empty and _plain(c) for c in conditions):
        pairs = [(c.name, c.equals[0]) for c in conditions]  # the common case, kept fast

        def equal_all(record: Mapping[str, Any]) -> bool:
            for name, value in pairs:
                if name not in record or not values_equal(record[name], value):
                    return False
            return True

        return conditions, equal_all
    tests = [c.test for c in conditions]
    return conditions, lambda record: all(t(record) for t in tests)


def _plain(cond: Condition) -> bool:
    return (
        len(cond.equals) == 1
        and not cond.not_equal
        and not cond.one_of
        and not cond.none_of
        and cond.kind is None
    )


def match_all(record: Mapping[str, Any]) -> bool:
    """The predicate of an empty ``where`` (callers test identity to skip filtering)."""
    return True


def matches(record: Mapping[str, Any], where: Mapping[str, Any] | None) -> bool:
    """Whether *record* satisfies *where* (compiles it each call: use
    :func:`compile_where` in loops).

    :raises BadRequest: as :func:`compile_where`.
    """
    return compile_where(where)[1](record)


# --- index planning -----------------------------------------------------------------------

#: The first sort key of each range class (``protocol.sort_key``): a class's values sort
#: between its own start and the next class's.
_CLASS_START: Final = {NUMBER: (2,), STRING: (3,), BYTES: (4,)}
_CLASS_END: Final = {NUMBER: (3,), STRING: (4,), BYTES: (5,)}


#: What closes a key range in an index's entries ``(sort keys..., position, id)``:
#: greater than every sort key (whose first item is at most 7, ``protocol.sort_key``)
#: where a field's key sits, greater than every position where the position sits. Both
#: compare in C: an object whose ``__gt__`` answered in Python ran ~20 times a bound.
KEY_TOP: Final = (8,)
POSITION_TOP: Final = math.inf


@dataclass(frozen=True)
class Plan:
    """How one index answers a query: a key range and whether it yields the wanted order.

    ``prefix`` holds the ``sort_key`` of the values the leading index fields must equal;
    ``low``/``high`` bound the next field (``(sort key, inclusive)``); ``ordered`` says the
    range already comes in the query's order (``order_by``, then insertion), walked
    backwards when ``descending``. Rows in the range are candidates: the query's predicate
    still decides, so an index can narrow a query but never change its answer.
    """

    fields: tuple[str, ...]
    prefix: tuple[Any, ...]
    low: tuple[Any, bool] | None
    high: tuple[Any, bool] | None
    ordered: bool
    descending: bool
    score: int

    @functools.cached_property
    def bounds(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The range as two index entries ``(low, high)``: every entry of the range is
        ``>= low`` and ``< high``. Made once a plan (plans are cached with their query)."""
        prefix, depth = self.prefix, len(self.prefix)

        def top(at: int) -> Any:  # what sits at *at* in an entry: a sort key or the position
            return POSITION_TOP if at == len(self.fields) else KEY_TOP

        if self.low is None:
            low: tuple[Any, ...] = prefix
        elif self.low[1]:
            low = (*prefix, self.low[0])
        else:
            low = (*prefix, self.low[0], top(depth + 1))
        if self.high is None:
            high: tuple[Any, ...] = (*prefix, top(depth))
        elif self.high[1]:
            high = (*prefix, self.high[0], top(depth + 1))
        else:
            high = (*prefix, self.high[0])
        return low, high


def plan_query(
    indexes: list[tuple[str, ...]],
    conditions: list[Condition],
    keys: list[tuple[str, bool]],
    sort_key: Callable[[Any], Any],
) -> Plan | None:
    """The best index for a query, or None when a scan is as good (no index narrows it or
    yields its order)."""
    by_name = {c.name: c for c in conditions}
    if any(c.empty for c in conditions):
        return None  # nothing can match: the scan's predicate says so at once
    best: Plan | None = None
    for fields in indexes:
        prefix: list[Any] = []
        for name in fields:
            cond = by_name.get(name)
            if cond is None or not cond.equals:
                break
            prefix.append(sort_key(cond.equals[0]))
        low = high = None
        rest = fields[len(prefix) :]
        if rest:
            cond = by_name.get(rest[0])
            if cond is not None and cond.kind is not None:
                low = (
                    (sort_key(cond.lower[0]), cond.lower[1])
                    if cond.lower is not None
                    else (_CLASS_START[cond.kind], True)
                )
                high = (
                    (sort_key(cond.upper[0]), cond.upper[1])
                    if cond.upper is not None
                    else (_CLASS_END[cond.kind], False)
                )
        wanted = [(n, d) for n, d in keys if n not in fields[: len(prefix)]]
        directions = {d for _, d in wanted}
        ordered = (len(directions) <= 1 and [n for n, _ in wanted] == list(rest)) or (
            not wanted and not rest
        )
        score = 2 * len(prefix) + (1 if low is not None else 0) + (1 if ordered else 0)
        if (prefix or low is not None or (ordered and wanted)) and (
            best is None or score > best.score
        ):
            best = Plan(
                tuple(fields),
                tuple(prefix),
                low,
                high,
                ordered,
                bool(directions and directions.pop()),
                score,
            )
    return best
