"""Claims that wait: ``CLAIM_RECORD`` with ``wait`` parks in the writer when it finds
nothing, and is answered in the pass that makes a record claimable, or when its wait ends.

Parked claims are grouped by what they look for (table, ``where``, ``order_by``): the
claims of one group find the same record or none, so after a write the writer tries only
the first claim of each group on the written tables, and a write that makes nothing
claimable costs one failed claim per group however many workers wait (50 workers on one
queue: one try). Groups are tried in the arrival order of their first claim, so among
waiters the earliest is answered first. A lease that runs out makes a record claimable
without a write: the server wakes at the next lease deadline and tries every group.

Nothing here touches a socket or the engine: the server passes a ``try_claim`` callable
and sends the replies.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack


@dataclass(eq=False)
class Waiter:
    """One parked claim: where to answer, the request, and when its wait ends."""

    sock: Any
    envelope: list[bytes]
    request: dict[str, Any]
    as_json: bool
    deadline: float
    state: str
    key: bytes
    seq: int = field(default=0)


def group_key(request: dict[str, Any]) -> bytes:
    """What a claim looks for, as bytes: equal for claims that find the same record."""
    return bytes(
        msgpack.packb(
            [request.get("state"), request.get("where"), request.get("order_by")],
            use_bin_type=True,
        )
    )


class ParkedClaims:
    """Every parked claim, by group and by deadline."""

    def __init__(self) -> None:
        self._groups: dict[bytes, deque[Waiter]] = {}
        self._by_state: dict[str, set[bytes]] = {}
        self._deadlines: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()
        self._gone: set[int] = set()  # answered before their deadline (lazy heap removal)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, waiter: Waiter) -> None:
        waiter.seq = next(self._seq)
        self._groups.setdefault(waiter.key, deque()).append(waiter)
        self._by_state.setdefault(waiter.state, set()).add(waiter.key)
        heapq.heappush(self._deadlines, (waiter.deadline, waiter.seq, waiter))
        self.count += 1

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] in self._gone:
            self._gone.discard(heapq.heappop(self._deadlines)[1])
        return self._deadlines[0][0] if self._deadlines else None

    def expired(self, now: float) -> list[Waiter]:
        """Remove and return the waiters whose wait ended at or before *now*."""
        out = []
        while self.next_deadline() is not None and self._deadlines[0][0] <= now:
            _, _, waiter = heapq.heappop(self._deadlines)
            self._unlink(waiter)
            out.append(waiter)
        return out

    def retry(
        self,
        states: Iterable[str] | None,
        try_claim: Callable[[Waiter], bool],
    ) -> list[Waiter]:
        """Try the groups on *states* (every group when None), earliest waiter first;
        return the waiters whose claim found a record (``try_claim`` answered them)."""
        if states is None:
            keys = set(self._groups)
        else:
            keys = set()
            for state in states:
                keys |= self._by_state.get(state, set())
        heap = [(self._groups[k][0].seq, k) for k in keys]
        heapq.heapify(heap)
        answered = []
        while heap:
            _, key = heapq.heappop(heap)
            queue = self._groups[key]
            waiter = queue[0]
            if not try_claim(waiter):
                continue  # the group's claims all find nothing now
            queue.popleft()
            self._gone.add(waiter.seq)
            self.count -= 1
            answered.append(waiter)
            if queue:
                heapq.heappush(heap, (queue[0].seq, key))
            else:
                self._drop_group(key, waiter.state)
        return answered

    def forget(self, waiters: Iterable[Waiter]) -> None:
        """Remove parked *waiters* (a pass that is undone parks them again)."""
        for waiter in waiters:
            if waiter.seq not in self._gone:
                self._gone.add(waiter.seq)
                self._unlink(waiter)

    def _unlink(self, waiter: Waiter) -> None:
        queue = self._groups[waiter.key]
        queue.remove(waiter)  # the earliest deadlines are near the front: short walks
        self.count -= 1
        if not queue:
            self._drop_group(waiter.key, waiter.state)

    def _drop_group(self, key: bytes, state: str) -> None:
        del self._groups[key]
        keys = self._by_state[state]
        keys.discard(key)
        if not keys:
            del self._by_state[state]
