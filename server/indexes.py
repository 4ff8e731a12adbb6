"""A table's secondary indexes: what lets a claim or a list skip the records it cannot
use.

Each index is a sorted list of ``(sort key of field 1, ..., sort key of field n,
position, id)``; ``position`` is the record's place in its table's insertion order, so
records with equal keys come in the order a scan would meet them, and a query answered
from an index returns exactly what the scan returns (:func:`stateengine.query.plan_query`
picks the index; the query's predicate still tests every row it yields).

Lease deadlines are not here: the engine keeps one heap of every deadline, and a lease
that runs out is ended by an expiry commit that writes the record back (through
:meth:`TableIndexes.put`), so an index always holds each record as it stands.

The structures are derived state: the engine builds them on a table's first indexed query
(outside a ``BATCH``), keeps them in step with every write, restores them on rollback, and
drops them whenever records change behind its back (recovery, ``SET_STATE``,
``ALTER_STATE``), to be rebuilt on the next query.

Sorted lists come from ``sortedcontainers`` (O(log n) insert and delete, pure Python).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from sortedcontainers import SortedList

from stateengine.errors import BadRequest
from stateengine.protocol import sort_key
from stateengine.query import Plan

if TYPE_CHECKING:
    from stateengine.server.engine import Id, Record

#: Test-only fault switch (never set it outside tests): ``drop_new`` leaves every 7th new
#: record out of the indexes, so the tests that must catch a stale index can show they do.
FAULTS: Final = frozenset(os.environ.get("STATEENGINE_INDEX_FAULTS", "").split(",")) - {""}

#: Most indexes per table, and fields per index.
MAX_INDEXES: Final = 16
MAX_INDEX_FIELDS: Final = 8


class _Top:
    """Sorts after every sort key: the open end of a key range."""

    def __eq__(self, other: object) -> bool:
        return other is self

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return other is not self

    def __le__(self, other: object) -> bool:
        return other is self

    def __ge__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


TOP: Final = _Top()


class TableIndexes:
    """Every index of one table, and the insertion positions they order ties by."""

    def __init__(self, definitions: list[tuple[str, ...]], records: Mapping[Id, Record]) -> None:
        self.definitions = list(definitions)
        self.positions: dict[Id, int] = {rid: i for i, rid in enumerate(records)}
        self.next_position = len(self.positions)
        self.lists: dict[tuple[str, ...], SortedList] = {
            fields: SortedList(
                self._entry(fields, rid, record, self.positions[rid])
                for rid, record in records.items()
            )
            for fields in self.definitions
        }

    @staticmethod
    def _entry(fields: tuple[str, ...], rid: Id, record: Record, position: int) -> tuple[Any, ...]:
        return (*(sort_key(record.get(name)) for name in fields), position, rid)

    # --- keeping in step with the records -----------------------------------------------

    def put(self, rid: Id, old: Record | None, new: Record) -> None:
        """*rid* now holds *new* (*old* before; None when it is a new record)."""
        if old is None:
            position = self.positions[rid] = self.next_position
            self.next_position += 1
            if FAULTS and "drop_new" in FAULTS and position % 7 == 3:
                return  # the fault: this record never enters the indexes
        else:
            position = self.positions[rid]
        for fields, entries in self.lists.items():
            if old is not None:
                entries.remove(self._entry(fields, rid, old, position))
            entries.add(self._entry(fields, rid, new, position))

    def remove(self, rid: Id, old: Record) -> None:
        position = self.positions.pop(rid)
        for fields, entries in self.lists.items():
            entries.remove(self._entry(fields, rid, old, position))

    def restore(
        self, rid: Id, current: Record | None, old: Record | None, position: int | None
    ) -> None:
        """Undo one write (rollback): *rid* goes from *current* back to *old* at *position*."""
        if current is not None:
            self.remove(rid, current)
        if old is not None and position is not None:
            self.positions[rid] = position
            for fields, entries in self.lists.items():
                entries.add(self._entry(fields, rid, old, position))

    # --- answering queries ----------------------------------------------------------------

    def scan(self, plan: Plan) -> Iterator[Id]:
        """The ids in *plan*'s key range, in index order (or its reverse, ties kept in
        insertion order)."""
        entries = self.lists[plan.fields]
        prefix = plan.prefix
        if plan.low is None:
            low: tuple[Any, ...] = prefix
        else:
            low = (*prefix, plan.low[0]) if plan.low[1] else (*prefix, plan.low[0], TOP)
        if plan.high is None:
            high: tuple[Any, ...] = (*prefix, TOP)
        else:
            high = (*prefix, plan.high[0], TOP) if plan.high[1] else (*prefix, plan.high[0])
        if not plan.descending:
            for entry in entries.irange(low, high):
                yield entry[-1]
            return
        # Backwards, but records with equal keys still come in insertion order.
        group: list[tuple[Any, ...]] = []
        for entry in entries.irange(low, high, reverse=True):
            if group and entry[:-2] != group[-1][:-2]:
                for held in reversed(group):
                    yield held[-1]
                group = []
            group.append(entry)
        for held in reversed(group):
            yield held[-1]


def parse_indexes(value: Any, where: str) -> list[tuple[str, ...]]:
    """``["status", ["priority", "run_at"]]`` → ``[("status",), ("priority", "run_at")]``.

    :raises BadRequest: not a list of field names or lists of them, or past the limits.
    """
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a list of field names or lists of them")
    out: list[tuple[str, ...]] = []
    for i, item in enumerate(value):
        fields = item if isinstance(item, list) else [item]
        if not fields or len(fields) > MAX_INDEX_FIELDS:
            raise BadRequest(f"{where}[{i}]: an index has 1 to {MAX_INDEX_FIELDS} fields")
        for name in fields:
            if not isinstance(name, str) or not name:
                raise BadRequest(f"{where}[{i}]: a field name, not {name!r:.60}")
        if len(set(fields)) != len(fields):
            raise BadRequest(f"{where}[{i}]: a field appears twice in {fields!r:.80}")
        out.append(tuple(fields))
    return out
