"""Splitting a history into independent partitions (tables and records it touches).

Part of :mod:`stateengine.testing.checker` (its docstring describes the method).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from stateengine.testing.checker.model import (
    CHECKED_ERRORS,
    EXPIRY,
    MODELS,
    RESHAPING_COMMANDS,
    State,
    TableState,
    _table_scope,
    _writes,
)
from stateengine.testing.history import Operation

# --- partitions ------------------------------------------------------------------------------


def _checked(op: Operation) -> bool:
    """Whether *op* says something the model can check (else: no effect, not checked)."""
    if op.command not in MODELS:
        return False
    if not op.known:
        return _writes(op.command)
    if op.ok:
        return True
    return op.error in CHECKED_ERRORS


def _touches(req: dict[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """``(table, id, whole_table)`` for every part of the state *req* reads or writes."""
    command = req.get("command")
    if command in ("BATCH", "SNAPSHOT", EXPIRY):
        for sub in req.get("reads" if command == "SNAPSHOT" else "commands") or []:
            if isinstance(sub, dict):
                yield from _touches(sub)
        return
    table = req.get("state")
    if not isinstance(table, str):
        return
    if _table_scope(command) or req.get("expected_version") is not None:
        yield table, None, True
    elif command == "CREATE_RECORD":
        record = req.get("record")
        if isinstance(record, dict) and "id" in record:
            yield table, record["id"], False
        else:
            yield table, None, True
    else:
        yield table, req.get("id"), False


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        parent = self.parent
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _node(table: str, rid: Any, whole: bool) -> tuple[Any, ...]:
    return ("T", table) if whole else ("R", table, type(rid).__name__, rid)


@dataclass
class Partition:
    """Operations that can only be checked together, and the state they start from."""

    ops: list[Operation]
    initial: State
    label: str


def _partition(ops: Sequence[Operation], start: State) -> list[Partition]:
    touches = {id(op): list(_touches(op.request())) for op in ops}
    whole_tables: set[str] = set()
    for op in ops:
        for name, _, whole in touches[id(op)]:
            if whole:
                whole_tables.add(name)
        if op.command in RESHAPING_COMMANDS:
            whole_tables.add(str(op.args.get("state")))
    for name in {t for op in ops for t, _, _ in touches[id(op)]}:
        table = start.table(name)
        if not table.exists or table.partial:
            whole_tables.add(name)
        elif table.max_length is not None:
            whole_tables.add(name)  # CREATE_RECORD's CapacityError depends on the size
    uf = _UnionFind()
    first_node: list[Any] = []
    for op in ops:
        touched = [_node(t, rid, whole or t in whole_tables) for t, rid, whole in touches[id(op)]]
        if not touched:
            first_node.append(None)
            continue
        for n in touched[1:]:
            uf.union(touched[0], n)
        first_node.append(touched[0])
    groups: dict[Any, list[Operation]] = {}
    for op, node in zip(ops, first_node, strict=True):
        if node is not None:
            groups.setdefault(uf.find(node), []).append(op)
    parts: list[Partition] = []
    for group in groups.values():
        nodes = {
            _node(t, rid, whole or t in whole_tables)
            for op in group
            for t, rid, whole in touches[id(op)]
        }
        tables: dict[str, TableState] = {}
        labels = []
        for n in sorted(nodes, key=repr):
            if n[0] == "T":
                tables[n[1]] = start.table(n[1])
                labels.append(f"table {n[1]!r}")
        for n in sorted(nodes, key=repr):
            if n[0] == "R" and n[1] not in tables:
                labels.append(f"{n[1]!r} id {n[3]!r}")
        for n in nodes:
            if n[0] == "R" and n[1] not in whole_tables:
                full = start.table(n[1])
                part = tables.get(n[1])
                if part is None:
                    part = TableState(True, None, None, full.max_length, (), partial=True)
                entry = full.get(n[3])
                if entry is not None:
                    part = part.replace(records=(*part.records, entry))
                tables[n[1]] = part
        parts.append(Partition(group, State(tables, start.seq), ", ".join(labels[:4])))
    return parts
