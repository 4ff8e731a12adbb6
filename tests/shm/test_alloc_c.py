"""The allocator's compiled alloc and free_many (shm/_speedups.c) against the Python
methods of shm/alloc.py, their twin.

The C functions run on the Allocator's own dicts and list, so after any sequence of
operations both must hold the same state (free extents, bins in the same insertion
order, the sorted sizes, free bytes), return the same offsets and raise the same error
types and messages, having changed the same things.
"""

from __future__ import annotations

import gc
import importlib
import weakref
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.shm import alloc as alloc_mod
from stateengine.shm import blocks
from stateengine.shm.alloc import Allocator


def _speedups() -> ModuleType | None:
    try:
        return importlib.import_module("stateengine.shm._speedups")
    except ImportError:
        return None


C = _speedups()
needs_c = pytest.mark.skipif(C is None, reason="the C extension is not built here")


class _PythonAllocator(Allocator):
    """An Allocator running its Python methods whichever path the process runs."""

    alloc = Allocator._alloc_py
    free_many = Allocator._free_many_py


def _python_allocator(start: int, size: int) -> Allocator:
    return _PythonAllocator(start, size)


def _c_allocator(start: int, size: int) -> Allocator:
    """An Allocator whose alloc and free_many are the C functions, even under
    STATEENGINE_PURE_PYTHON=1 (the extension is built; only the switch says no)."""
    assert C is not None
    a = _python_allocator(start, size)
    a.alloc = lambda n: C.alloc_take(a, n)  # type: ignore[method-assign]
    a.free_many = lambda ex: C.alloc_free_many(a, ex)  # type: ignore[method-assign]
    return a


def _state(a: Allocator) -> Any:
    return (
        a.free_bytes,
        a._sizes,
        [(size, list(starts)) for size, starts in a._bins.items()],
        list(a._by_start.items()),
        list(a._by_end.items()),
    )


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # the twin must raise the same type with the same message
        return ("error", type(exc), str(exc))


def test_the_path_that_runs() -> None:
    """A compiled build makes the C functions the class's methods; the pure path not."""
    if blocks.COMPILED:
        assert C is not None and alloc_mod._C_TAKE is not None
        assert Allocator.__dict__["alloc"] is C.alloc_take_method
        assert Allocator.__dict__["free_many"] is C.alloc_free_many_method
    else:
        assert Allocator.alloc is Allocator._alloc_py
        assert Allocator.free_many is Allocator._free_many_py


def test_an_allocator_is_freed_without_the_cyclic_gc() -> None:
    """No reference cycle through its methods: one bound on each instance (a partial of
    the C function and self) was one, and the allocator frozen by ``gc.freeze()`` after
    a start was never freed once a growth replaced it (the control: the test fails
    with such a binding put back)."""
    a = Allocator(64, 4096)
    a.free_many([(off, 8) for off in [a.alloc(8) for _ in range(10)] if off is not None])
    gone = weakref.ref(a)
    gc.disable()
    try:
        del a
        assert gone() is None
    finally:
        gc.enable()


@needs_c
@pytest.mark.parametrize("others", [0, 9])
@pytest.mark.parametrize(
    "extent", [(8, 2**63 - 1), (2**62, 2**62), (64, 2**61 + 8), (-8, 16), (2**61 + 64, 8)]
)
def test_extents_near_the_64_bit_edge_are_refused_alike(
    extent: tuple[int, int], others: int
) -> None:
    """C never forms a start + n past 2**63 (it wrapped to a negative end, passed the
    region check and corrupted the free lists): such extents go to the Python method."""
    a, b = _c_allocator(64, 4096), _python_allocator(64, 4096)
    offs = [a.alloc(16) for _ in range(others)]
    assert offs == [b.alloc(16) for _ in range(others)]
    ext = [(off, 16) for off in offs if off is not None] + [extent]
    got = _outcome(lambda: a.free_many(list(ext)))
    assert got[0] == "error" and got == _outcome(lambda: b.free_many(list(ext)))
    assert _state(a) == _state(b)
    a.check()
    assert _outcome(lambda: a.alloc(-(2**63))) == _outcome(lambda: b.alloc(-(2**63)))


# An operation: ("alloc", size in 8-byte units), ("free", live index, half of it or not),
# ("many", live indexes, extra extent to break it or not).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 24)),
        st.tuples(st.just("free"), st.integers(0, 400), st.booleans()),
        st.tuples(
            st.just("many"),
            st.lists(st.integers(0, 400), max_size=20),
            st.sampled_from(["none", "twice", "outside", "overlap", "zero"]),
        ),
    ),
    max_size=120,
)


@needs_c
@given(ops=ops, size=st.integers(1, 64))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_alloc_and_free_many_c_equal_python(ops: list[Any], size: int) -> None:
    a, b = _c_allocator(64, 64 * size), _python_allocator(64, 64 * size)
    live: list[tuple[int, int]] = []
    for op in ops:
        if op[0] == "alloc":
            n = 8 * op[1]
            got = _outcome(lambda n=n: a.alloc(n))
            assert got == _outcome(lambda n=n: b.alloc(n))
            if got[0] == "ok" and got[1] is not None and n > 0:
                live.append((got[1], n))
        elif op[0] == "free" and live:
            off, n = live.pop(op[1] % len(live))
            if op[2] and n > 8:  # free a part first: frees around a hole coalesce later
                half = (n // 16) * 8
                a.free(off, half)
                b.free(off, half)
                live.append((off + half, n - half))
            else:
                a.free(off, n)
                b.free(off, n)
        elif op[0] == "many":
            picks = sorted({i % len(live) for i in op[1]}) if live else []
            chunk = [live[i] for i in picks]
            extra = {
                "none": [],
                # twice, or inside a block freed with it: only the sorted path (8 or more)
                # tells; one by one, neither twin checks a free inside a free extent
                "twice": chunk[:1] if len(chunk) >= 7 else [],
                "outside": [(64 * size + 64, 8)],
                "overlap": [(chunk[0][0] + 8, 8)] if len(chunk) >= 7 and chunk[0][1] > 8 else [],
                "zero": [(64, 0)],
            }[op[2]]
            ext = chunk + extra
            got = _outcome(lambda ext=ext: a.free_many(list(ext)))
            assert got == _outcome(lambda ext=ext: b.free_many(list(ext)))
            # what is still allocated (under 8 extents an error leaves those before it
            # freed, as Python's one-by-one frees do)
            free = a.extents()
            live = [e for e in live if not any(s <= e[0] < s + n for s, n in free)]
        assert _state(a) == _state(b)
    a.check()


@needs_c
def test_c_takes_other_inputs_through_the_python_methods() -> None:
    """What C does not take (an int subclass, a list of lists, a non-list) goes to the
    Python method: the same result or the same error."""
    assert C is not None

    class Big(int):
        pass

    a, b = _c_allocator(64, 4096), _python_allocator(64, 4096)
    assert C.alloc_take(a, Big(64)) == b.alloc(Big(64))
    assert C.alloc_take(a, 2**70) == b.alloc(2**70) is None
    x = C.alloc_take(a, 64)
    y = b.alloc(64)
    assert x == y
    assert C.alloc_free_many(a, [[x, 64]]) == b.free_many([[x, 64]])  # type: ignore[list-item]
    assert _state(a) == _state(b)
    for bad in (((1, 2),), [(1, 2, 3)], [(x, 2**70)], None):
        got = _outcome(lambda bad=bad: C.alloc_free_many(a, bad))
        assert got[0] == "error"
        assert got == _outcome(lambda bad=bad: b.free_many(bad))  # type: ignore[arg-type]
        assert _state(a) == _state(b)


def test_a_writer_allocates_through_the_compiled_path() -> None:
    """The arena writer's Allocator runs the C functions on a compiled build."""
    from stateengine.shm import ArenaWriter

    w = ArenaWriter.create("setest", initial_size=256 * 1024)
    try:
        assert (type(w._alloc).alloc is not Allocator._alloc_py) == blocks.COMPILED
        w.commit(1, puts=[("t", 1, b"\x81\xa1a\x01")])
        w.commit(2, puts=[("t", 1, b"\x81\xa1a\x02")])
        w._alloc.check()
    finally:
        w.close()


@needs_c
@pytest.mark.parametrize(
    "extra",
    [
        [],
        "twice",
        "overlap",
        [(64 + 4096, 8)],  # past the region
        [(64, 0)],  # empty
        [(8, 8)],  # before the region
    ],
)
@pytest.mark.parametrize("many", [3, 10])
def test_free_many_refuses_alike(extra: Any, many: int) -> None:
    """Each check of free_many, sorted (8 or more extents) and one by one: the same
    error, and nothing freed (sorted) or the same ones freed (one by one)."""
    a, b = _c_allocator(64, 4096), _python_allocator(64, 4096)
    blocks_ = [a.alloc(16) for _ in range(12)]
    assert blocks_ == [b.alloc(16) for _ in range(12)]
    chunk = [(off, 16) for off in blocks_[:many] if off is not None]
    if extra == "twice":
        extra = chunk[-1:] if many >= 8 else []
    elif extra == "overlap":
        extra = [(chunk[1][0] + 8, 8)] if many >= 8 else []
    ext = chunk + extra
    got = _outcome(lambda: a.free_many(list(ext)))
    assert got == _outcome(lambda: b.free_many(list(ext)))
    assert (got[0] == "ok") == (not extra)
    assert _state(a) == _state(b)
