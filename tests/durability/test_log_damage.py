"""Torn tails and corruption on real log files; ``check`` and ``repair``."""

from __future__ import annotations

from pathlib import Path

import pytest
from durable_workload import digest, run_workload

from stateengine.server.engine import ChangeSet, TableEngine
from stateengine.server.persist_base import HEADER_SIZE, scan_frames
from stateengine.server.persist_log import SNAPSHOT_NAME, SNAPSHOT_PREV, list_segments
from stateengine.server.persistence import CorruptStore, check, open_store, repair


def _write_log(data: Path, change_sets: list[ChangeSet]) -> list[int]:
    """Write change sets to a fresh log store; return each entry's end offset."""
    store = open_store(data, "log")
    store.recover(TableEngine())
    for cs in change_sets:
        store.write(cs)
    store.close()
    (_, path), *_ = list_segments(data)
    scan = scan_frames(path.read_bytes())
    return [*scan.offsets[1:], scan.good_end]


def _segment(data: Path) -> Path:
    return list_segments(data)[-1][1]


def _recover(data: Path) -> tuple[TableEngine, int]:
    engine = TableEngine()
    report = open_store(data, "log").recover(engine)
    return engine, report.torn_bytes


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, list[int], list[bytes]]:
    _, change_sets, digests = run_workload(21, 60)
    ends = _write_log(tmp_path, change_sets)
    return tmp_path, ends, digests


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 3, HEADER_SIZE + 1, -1])
def test_a_torn_last_entry_is_dropped_and_reported(
    logged: tuple[Path, list[int], list[bytes]], cut: int
) -> None:
    data, ends, digests = logged
    seg = _segment(data)
    last_start = ends[-2]
    keep = last_start + cut if cut > 0 else ends[-1] - 1
    with open(seg, "r+b") as f:
        f.truncate(keep)
    engine, torn = _recover(data)
    assert torn == keep - last_start
    assert digest(engine) == digests[-2]
    assert seg.stat().st_size == last_start  # truncated on disk: appends follow cleanly
    engine2, torn2 = _recover(data)
    assert torn2 == 0 and digest(engine2) == digests[-2]


@pytest.mark.parametrize("tail", [b"\x00" * 4096, b"\xd5SE1garbage", bytes(range(256)) * 3])
def test_garbage_after_the_last_entry_is_a_torn_tail(
    logged: tuple[Path, list[int], list[bytes]], tail: bytes
) -> None:
    data, _, digests = logged
    with open(_segment(data), "ab") as f:
        f.write(tail)
    engine, torn = _recover(data)
    assert torn == len(tail)
    assert digest(engine) == digests[-1]


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
def test_corruption_before_the_tail_stops_the_start(
    logged: tuple[Path, list[int], list[bytes]], where: str
) -> None:
    data, ends, digests = logged
    seg = _segment(data)
    k = len(ends) // 2
    start = ends[k - 1]
    offset = {"payload": start + HEADER_SIZE + 3, "length": start + 5, "magic": start}[where]
    raw = bytearray(seg.read_bytes())
    raw[offset] ^= 0x40
    seg.write_bytes(bytes(raw))
    with pytest.raises(CorruptStore, match=r"damaged at byte \d+.*stateengine check") as info:
        _recover(data)
    assert info.value.offset == start
    assert seg.read_bytes() == bytes(raw), "a failed start must not change the files"

    report = check(data)
    assert not report["ok"] and report["segments"][0]["bad_offset"] == start

    done = repair(data)
    assert done["dropped_bytes"] == len(raw) - start and done["check"]["ok"]
    kept = list((data).glob("repair-*/*"))
    assert kept and kept[0].read_bytes() == bytes(raw[start:])
    engine, torn = _recover(data)
    assert torn == 0 and digest(engine) == digests[k]


def test_a_corrupt_snapshot_stops_the_start(tmp_path: Path) -> None:
    engine, change_sets, _ = run_workload(4, 80)
    store = open_store(tmp_path, "log", snapshot_mode="inline")
    store.recover(TableEngine())
    for cs in change_sets:
        store.write(cs)
    store.snapshot(engine)  # type: ignore[attr-defined]
    store.close()
    snap = tmp_path / SNAPSHOT_NAME
    raw = bytearray(snap.read_bytes())
    raw[len(raw) // 2] ^= 1
    snap.write_bytes(bytes(raw))
    with pytest.raises(CorruptStore, match="snapshot"):
        _recover(tmp_path)
    assert not check(tmp_path)["ok"]


def test_a_missing_segment_is_corruption(tmp_path: Path) -> None:
    _, change_sets, _ = run_workload(6, 80)
    store = open_store(tmp_path, "log", snapshot_mode="inline")
    shadow = TableEngine()
    store.recover(TableEngine())
    for n, cs in enumerate(change_sets):
        store.write(cs)
        shadow.apply_change_set(cs)
        if n == len(change_sets) // 2:
            store.snapshot(shadow)  # type: ignore[attr-defined]
    store.snapshot(shadow)  # type: ignore[attr-defined]
    store.close()
    # The log is kept from the previous snapshot's seq: without both snapshots, the
    # entries before the first one are missing.
    (tmp_path / SNAPSHOT_NAME).unlink()
    (tmp_path / SNAPSHOT_PREV).unlink()
    with pytest.raises(CorruptStore, match="segments are missing"):
        _recover(tmp_path)


def test_check_reports_a_torn_tail_as_ok(logged: tuple[Path, list[int], list[bytes]]) -> None:
    data, ends, _ = logged
    with open(_segment(data), "r+b") as f:
        f.truncate(ends[-1] - 2)
    report = check(data)
    assert report["ok"]
    assert report["segments"][-1]["torn_bytes"] == ends[-1] - 2 - ends[-2]
