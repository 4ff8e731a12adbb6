"""Growth, attach/exit by unrelated processes and pools, cleanup, errors, fork."""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
import subprocess
import sys
import time

import msgpack
import pytest
import shm_workers as W
from shm_harness import SPAWN

from stateengine.errors import CapacityError, PayloadTooLarge, SnapshotExpired
from stateengine.shm import ArenaReader, ArenaWriter, cleanup_stale, find_stale
from stateengine.shm.codec import MsgpackCodec

HERE = os.path.dirname(os.path.abspath(__file__))


def _pk(i: int, s: int) -> bytes:
    return msgpack.packb(W.record(i, s))


def growth_reader(name: str, seconds: float, out: object) -> None:
    r = ArenaReader.attach(name)
    out.put("ready")  # type: ignore[attr-defined]
    bad = reads = 0
    gens = set()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                with r.snapshot() as snap:
                    v = snap.version
                    for i, rec in snap.items(W.TABLE):
                        reads += 1
                        if W.check(i, rec, 10**9) is not None and rec != W.record(i, rec["v"]):
                            bad += 1
                        if rec["v"] > v:
                            bad += 1
            except SnapshotExpired:
                # grace=0 under load: the writer may reclaim past a snapshot before it is
                # pinned. A refusal is allowed (DESIGN.md); wrong data is what counts.
                continue
            assert r._g is not None
            gens.add(r._g.gen)
    finally:
        r.close()
    out.put((reads, bad, sorted(gens)))  # type: ignore[attr-defined]


def test_growth_while_readers_read() -> None:
    w = ArenaWriter.create("setest", initial_size=256 * 1024, max_size=64 << 20, grace=0.0)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=growth_reader, args=(w.name, 3.0, out)) for _ in range(2)]
    try:
        w.commit(1, [(W.TABLE, 0, _pk(0, 1))])
        for p in procs:
            p.start()
        assert [out.get(timeout=60) for _ in procs] == ["ready"] * len(procs)
        seq, i = 1, 1
        t_end = time.monotonic() + 2.5
        # bounded in records too: a commit of ~10 µs writes 200k of them in 2.5 s, and
        # their checkpoints then outgrow max_size (CapacityError), which is not this test
        while time.monotonic() < t_end and i < 50_000:
            seq += 1
            w.commit(seq, [(W.TABLE, i, _pk(i, seq))])
            i += 1
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert w.stats()["generation"] > 2
        for reads, bad, gens in results:
            assert bad == 0 and reads > 0
            assert len(gens) >= 2, gens  # followed at least one growth
        r = ArenaReader.attach(w.name)
        try:
            with r.snapshot() as snap:
                assert len(snap.ids(W.TABLE)) == i
        finally:
            r.close()
        # old generations are unlinked once nobody pins them
        for s2 in range(seq + 1, seq + 3):
            w.commit(s2, [(W.TABLE, 0, _pk(0, s2))])
        w.reclaim()
        assert len(w.files()) == 2, w.files()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        w.close()


def test_unrelated_worker_and_its_pools_leave_segments_alone() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20)
    try:
        w.commit(1, [(W.TABLE, i, _pk(i, 1)) for i in range(30)])
        env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(
            [
                sys.executable,
                "-W",
                "error::ResourceWarning",
                os.path.join(HERE, "shm_workers.py"),
                "pool",
                w.name,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert "resource_tracker" not in proc.stderr and "leaked" not in proc.stderr, proc.stderr
        for f in w.files():
            assert os.path.exists(f)
        with ArenaReader.attach(w.name) as r:
            assert r.get(W.TABLE, 3) == W.record(3, 1)
            assert r.writer_alive() and r.writer_pid == os.getpid()
    finally:
        w.close()
    assert not any(os.path.exists(f) for f in [w.name, w.name + ".g1"])


def test_files_private_and_unique() -> None:
    w1 = ArenaWriter.create("setest", initial_size=1 << 20)
    w2 = ArenaWriter.create("setest", initial_size=1 << 20)
    try:
        assert w1.name != w2.name
        for f in w1.files():
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    finally:
        w1.close()
        w2.close()


def test_cleanup_stale_removes_killed_writer_only() -> None:
    # Leftovers of an earlier run that was itself killed are dead too: not ours to judge.
    before = set(find_stale(prefix="setestc"))
    live = ArenaWriter.create("setestc", initial_size=1 << 20)
    p = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "shm_workers.py"), "writer", "setestc"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", "")),
    )
    try:
        assert p.stdout is not None
        name = p.stdout.readline().strip()
        assert os.path.exists(name)
        assert set(find_stale(prefix="setestc")) == before
        p.kill()
        p.wait(10)
        stale = [f for f in find_stale(prefix="setestc") if f not in before]
        assert stale == [name, name + ".g1"]
        assert set(stale) <= set(cleanup_stale(prefix="setestc"))
        assert not os.path.exists(name)
        assert os.path.exists(live.name)  # the live writer's files stay
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        if p.stdout:
            p.stdout.close()
        live.close()


def test_full_dev_shm_is_capacity_error_naming_setting() -> None:
    before = set(find_stale(prefix="setest"))  # an earlier killed run's, if any
    with pytest.raises(CapacityError, match="initial_size"):
        ArenaWriter.create("setest", initial_size=1 << 50)
    assert set(find_stale(prefix="setest")) == before  # the failed create left nothing


def test_max_size_capacity_error_and_state_unchanged() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20, max_size=1 << 20)
    try:
        w.commit(1, [(W.TABLE, 1, b"\xa1x")])
        with pytest.raises(CapacityError, match="max_size"):
            w.commit(2, [(W.TABLE, i, bytes(4000)) for i in range(1000)])
        assert w.seq == 1
        with ArenaReader.attach(w.name) as r:
            assert r.get_raw(W.TABLE, 1) == b"\xa1x" and r.get(W.TABLE, 2) is None
    finally:
        w.close()


def test_bad_arguments_change_nothing() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20, codec=MsgpackCodec(100))
    try:
        w.commit(5, [("t", 1, b"\x01")])
        for bad in (
            lambda: w.commit(5, [("t", 2, b"\x01")]),
            lambda: w.commit(6, [("t", True, b"\x01")]),
            lambda: w.commit(6, [("t", 2**63, b"\x01")]),
            lambda: w.commit(6, [("", 2, b"\x01")]),
            lambda: w.commit(6, [("\x00x", 2, b"\x01")]),
            lambda: w.commit(6, [("t", 2, "str")]),
        ):
            with pytest.raises((ValueError, TypeError)):
                bad()
        with pytest.raises(PayloadTooLarge):
            w.commit(6, [("t", 2, bytes(101))])
        assert w.seq == 5
    finally:
        w.close()


def _fork_child(name: str, q: object) -> None:
    pass


def test_fork_child_reader_gets_own_slot_and_writer_refuses() -> None:
    w = ArenaWriter.create("setest", initial_size=1 << 20)
    r = ArenaReader.attach(w.name)
    try:
        w.commit(1, [("t", 1, _pk(1, 1))])
        pid = os.fork()
        if pid == 0:  # child: read, snapshot in its own slot, writer must refuse
            code = 0
            try:
                if r.get("t", 1) != W.record(1, 1):
                    code = 2
                with r.snapshot() as snap:
                    if snap.get("t", 1) != W.record(1, 1):
                        code = 3
                try:
                    w.commit(2, [])
                    code = 4
                except RuntimeError:
                    pass
                r.close()
                w.close()  # must not unlink
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert all(os.path.exists(f) for f in w.files())
        assert w.stats()["reader_slots_used"] == 1  # the child released only its own
        assert r.get("t", 1) == W.record(1, 1)
    finally:
        r.close()
        w.close()


def test_mp_fork_context_available() -> None:
    assert "fork" in mp.get_all_start_methods()
