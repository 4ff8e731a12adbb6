"""Hypothesis: allocation, publish, pin, unpin and reclaim against a dict model.

The real writer and a real (in-process) reader run under a fake clock; the model
is the table's content at every version. After every step: each open snapshot
reads exactly its version's content, plain reads see the latest, the allocator's
free extents never overlap a block that a live snapshot or the latest version
can see, and free + live + retired bytes add up.
"""

from __future__ import annotations

import itertools

import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stateengine.shm import ArenaReader, ArenaWriter, Snapshot

IDS = st.integers(min_value=0, max_value=7)


class ArenaModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.w = ArenaWriter.create(
            "setest", initial_size=256 * 1024, grace=1.0, expiry=1000.0, _clock=lambda: self.now
        )
        self.r = ArenaReader.attach(self.w.name)
        self.seq = 0
        self.state: dict[int, bytes] = {}
        self.history: dict[int, dict[int, bytes]] = {0: {}}
        self.snaps: list[tuple[Snapshot, int]] = []

    @rule(i=IDS, size=st.sampled_from([0, 5, 40, 300, 2000]), fill=st.integers(0, 255))
    def put(self, i: int, size: int, fill: int) -> None:
        data = msgpack.packb(bytes([fill]) * size)
        self.seq += 1
        self.w.commit(self.seq, [("t", i, data)])
        self.state[i] = data
        self.history[self.seq] = dict(self.state)

    @rule(ids=st.lists(IDS, max_size=4))
    def delete(self, ids: list[int]) -> None:
        self.seq += 1
        self.w.commit(self.seq, [], [("t", i) for i in ids])
        for i in ids:
            self.state.pop(i, None)
        self.history[self.seq] = dict(self.state)

    @rule()
    def pin(self) -> None:
        snap = self.r.snapshot()
        assert snap.version == self.seq
        self.snaps.append((snap, self.seq))

    @precondition(lambda self: self.snaps)
    @rule(k=st.integers(0, 10))
    def unpin(self, k: int) -> None:
        snap, _v = self.snaps.pop(k % len(self.snaps))
        snap.close()

    @rule(dt=st.sampled_from([0.0, 0.5, 1.5]))
    def tick_and_reclaim(self, dt: float) -> None:
        self.now += dt
        self.w.reclaim()

    @invariant()
    def snapshots_exact(self) -> None:
        for snap, v in self.snaps:
            want = self.history[v]
            got = dict(snap.items_raw("t"))
            assert got == want, (v, sorted(got), sorted(want))

    @invariant()
    def latest_exact(self) -> None:
        for i in range(8):
            assert self.r.get_raw("t", i) == self.state.get(i)

    @invariant()
    def free_space_disjoint_from_visible_blocks(self) -> None:
        w = self.w
        w._alloc.check()
        free = w._alloc.extents()
        live = [(e[0], e[1]) for t in w._tables.values() for e in t.values()]
        retired = [x for (_s, _t, ext, _g) in w._pending for x in ext]
        ck = [(w._ckpt[6], w._ckpt[7])]
        used = sorted(live + retired + ck)
        for (a, n), (b, _m) in itertools.pairwise(used):
            assert a + n <= b, "two blocks overlap"
        for s, n in free:
            for a, m in used:
                assert s + n <= a or a + m <= s, "free extent overlaps a visible block"
        total = sum(n for _s, n in free) + sum(n for _a, n in used)
        assert total == w._gen.data_size if w._gen else False

    def teardown(self) -> None:
        for snap, _v in self.snaps:
            snap.close()
        self.r.close()
        self.w.close()


ArenaModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestArenaModel = ArenaModel.TestCase
