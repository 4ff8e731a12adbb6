"""Best-fit extent allocator over the data region of one generation.

Writer-private (plain Python objects, never in shared memory), so it needs no
synchronisation; what readers rely on is only the rule the writer keeps on top of
it: an extent goes back here (``free``) only when no reader can still validate it
(DESIGN.md §6). Best fit with coalescing: a freed extent merges with free
neighbours; an allocation takes the smallest free extent that fits and returns the
rest. Same-size rewrites therefore reuse the same hole — which is exactly what the
stress test wants to race against.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any, Final

from stateengine.shm import blocks as _blocks

#: The compiled twins of :meth:`Allocator.alloc` and :meth:`Allocator.free_many`
#: (``shm/_speedups.c``), None on the pure-Python path.
_C_TAKE: Final[Any] = _blocks.C_ALLOC_TAKE
_C_FREE_MANY: Final[Any] = _blocks.C_ALLOC_FREE_MANY

__all__ = [
    "Allocator",
]


class Allocator:
    """Extents of ``[start, start + size)``; sizes must be multiples of 8.

    Free extents are kept in bins by exact size (``size → starts``, an insertion-ordered
    dict used as a set) under one sorted list of the distinct sizes. Why not one sorted
    list of ``(size, start)`` tuples, as before: a steady stream of one-record commits
    leaves ~750 free extents (8-byte slivers between blocks of slightly different sizes),
    and each alloc and free bisected and shifted that list with tuple comparisons:
    ~3 µs an alloc, 6 of a one-record commit's 25 µs (bench issue 17). Distinct sizes
    are far fewer than extents and compare as ints. Among extents of the best-fitting
    size the most recently freed one is taken.
    """

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        self._by_start: dict[int, int] = {}
        self._by_end: dict[int, int] = {}
        self._bins: dict[int, dict[int, None]] = {}
        self._sizes: list[int] = []  # the keys of _bins, sorted
        self.free_bytes = 0
        if size > 0:
            self._add(start, size)

    def _add(self, start: int, size: int) -> None:
        self._by_start[start] = size
        self._by_end[start + size] = start
        starts = self._bins.get(size)
        if starts is None:
            self._bins[size] = {start: None}
            bisect.insort(self._sizes, size)
        else:
            starts[start] = None
        self.free_bytes += size

    def _remove(self, start: int, size: int) -> None:
        del self._by_start[start]
        del self._by_end[start + size]
        starts = self._bins[size]
        del starts[start]
        if not starts:
            del self._bins[size]
            del self._sizes[bisect.bisect_left(self._sizes, size)]
        self.free_bytes -= size

    def _alloc_py(self, n: int) -> int | None:
        """Offset of a fresh extent of ``n`` bytes, or None if no free extent fits."""
        sizes = self._sizes
        i = bisect.bisect_left(sizes, n)
        if i == len(sizes):
            return None
        size = sizes[i]
        starts = self._bins[size]
        start, _ = starts.popitem()
        if not starts:
            del self._bins[size]
            del sizes[i]
        del self._by_start[start]
        del self._by_end[start + size]
        self.free_bytes -= size
        if size > n:
            self._add(start + n, size - n)
        return start

    def free(self, start: int, n: int) -> None:
        """Give ``[start, start+n)`` back, merging with free neighbours."""
        if start < self.start or start + n > self.start + self.size or n <= 0:
            raise ValueError(f"extent {start}+{n} outside the region")
        if start in self._by_start or (start + n) in self._by_end:
            raise ValueError(f"double free of extent {start}+{n}")
        prev = self._by_end.get(start)
        if prev is not None:
            psize = self._by_start[prev]
            self._remove(prev, psize)
            start, n = prev, psize + n
        nsize = self._by_start.get(start + n)
        if nsize is not None:
            self._remove(start + n, nsize)
            n += nsize
        self._add(start, n)

    def _free_many_py(self, extents: list[tuple[int, int]]) -> int:
        """``free`` each extent, merging touching ones first; return the bytes freed.

        The same result as freeing them one by one (coalescing makes the order
        irrelevant), but the blocks of one commit, written back to back, go back as one
        run: one merge with the free neighbours instead of one per block. Checks each
        extent as ``free`` does; on an error nothing has been freed (fewer than 8 extents:
        they are simply freed one by one, as before).
        """
        if len(extents) < 8:  # too few to be worth sorting
            total = 0
            for start, n in extents:
                self.free(start, n)
                total += n
            return total
        lo, hi = self.start, self.start + self.size
        by_start, by_end = self._by_start, self._by_end
        runs: list[tuple[int, int]] = []
        rs = re = -1
        total = 0
        for start, n in sorted(extents):
            end = start + n
            if start < lo or end > hi or n <= 0:
                raise ValueError(f"extent {start}+{n} outside the region")
            if start in by_start or end in by_end or start < re:
                raise ValueError(f"double free of extent {start}+{n}")
            total += n
            if start == re:
                re = end
                continue
            if re >= 0:
                runs.append((rs, re - rs))
            rs, re = start, end
        runs.append((rs, re - rs))
        for start, n in runs:
            self.free(start, n)
        return total

    # The compiled twins (shm/_speedups.c) replace these below where built, so that a
    # call is one C call, no Python frame: a one-record write allocates two blocks and
    # frees two at a reclaim (~1 us an extent in Python). They run on the instance's own
    # dicts and list, so the Python methods stay their twin and hold the same state;
    # what C does not take (odd inputs) goes to _alloc_py / _free_many_py.
    alloc = _alloc_py
    free_many = _free_many_py

    def largest(self) -> int:
        return self._sizes[-1] if self._sizes else 0

    def extents(self) -> list[tuple[int, int]]:
        """Free extents sorted by offset (for tests and stats)."""
        return sorted(self._by_start.items())

    def check(self) -> None:
        """Assert the internal invariants (tests): no overlap, no adjacent free extents."""
        ext = self.extents()
        total = 0
        for (s1, n1), (s2, _n2) in itertools.pairwise(ext):
            assert s1 + n1 < s2, f"free extents {s1}+{n1} and {s2} overlap or touch"
        for s, n in ext:
            assert self._by_end[s + n] == s
            total += n
        assert total == self.free_bytes
        assert sorted((n, s) for s, n in ext) == sorted(
            (n, s) for n, starts in self._bins.items() for s in starts
        )
        assert self._sizes == sorted(self._bins) and all(self._bins.values())


if _C_TAKE is not None:
    Allocator.alloc = _C_TAKE
    Allocator.free_many = _C_FREE_MANY
