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

__all__ = [
    "Allocator",
]


class Allocator:
    """Extents of ``[start, start + size)``; sizes must be multiples of 8."""

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        self._by_start: dict[int, int] = {}
        self._by_end: dict[int, int] = {}
        self._sizes: list[tuple[int, int]] = []
        self.free_bytes = 0
        if size > 0:
            self._add(start, size)

    def _add(self, start: int, size: int) -> None:
        self._by_start[start] = size
        self._by_end[start + size] = start
        bisect.insort(self._sizes, (size, start))
        self.free_bytes += size

    def _remove(self, start: int, size: int) -> None:
        del self._by_start[start]
        del self._by_end[start + size]
        i = bisect.bisect_left(self._sizes, (size, start))
        del self._sizes[i]
        self.free_bytes -= size

    def alloc(self, n: int) -> int | None:
        """Offset of a fresh extent of ``n`` bytes, or None if no free extent fits."""
        i = bisect.bisect_left(self._sizes, (n, -1))
        if i == len(self._sizes):
            return None
        size, start = self._sizes[i]
        self._remove(start, size)
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

    def free_many(self, extents: list[tuple[int, int]]) -> int:
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

    def largest(self) -> int:
        return self._sizes[-1][0] if self._sizes else 0

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
        assert sorted((n, s) for s, n in ext) == self._sizes
