"""``stateengine repair`` leaves a startable directory or says what it could not save
(issue 14 item 19), with real ``serve``, ``check`` and ``repair`` processes.

Before: a damaged snapshot was moved aside with exit 0 while ``check`` still failed and
``serve`` refused (the log before it had been trimmed), and a damaged log entry silently
took every later valid entry with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stateengine.server.persist_base import HEADER_SIZE, scan_frames
from stateengine.server.persist_log import SNAPSHOT_NAME, SNAPSHOT_PREV, list_segments
from stateengine.testing import ServerProcess


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateengine", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def _write(data: Path, n: int, *args: str) -> dict[int, dict[str, object]]:
    """*n* acknowledged creates (one log entry each) through a real server; stopped after."""
    acked: dict[int, dict[str, object]] = {}
    with ServerProcess(data, *args) as server, server.connect() as client:
        for i in range(n):
            record = client.create_record("t", {"v": i, "pad": "x" * 40})
            acked[int(record["id"])] = record
    return acked


def _all_records(data: Path) -> dict[int, dict[str, object]]:
    with ServerProcess(data) as server, server.connect() as client:
        return {int(r["id"]): r for r in client.list_records("t")}


def test_a_damaged_newest_snapshot_is_rebuilt_from_the_previous_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked = _write(data, 400, "--snapshot-bytes", "4096")
    assert (data / SNAPSHOT_NAME).exists() and (data / SNAPSHOT_PREV).exists()
    _flip(data / SNAPSHOT_NAME, (data / SNAPSHOT_NAME).stat().st_size // 2)
    refused = cli("serve", "--data-dir", str(data))
    assert refused.returncode == 1 and "stateengine repair" in refused.stderr
    assert cli("check", "--data-dir", str(data)).returncode == 1

    out = cli("repair", "--data-dir", str(data))
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["startable"] and report["lost"] == []
    assert any("the previous one" in action for action in report["actions"])
    check = cli("check", "--data-dir", str(data))
    assert check.returncode == 0, check.stdout
    assert _all_records(data) == acked  # every acknowledged write, exactly


def test_with_one_snapshot_the_log_from_seq_0_rebuilds_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: dict[int, dict[str, object]] = {}
    with ServerProcess(data, "--snapshot-bytes", "4096") as server, server.connect() as c:
        while not (data / SNAPSHOT_NAME).exists():  # ~30 writes; bounded by the assert
            record = c.create_record("t", {"v": len(acked), "pad": "x" * 40})
            acked[int(record["id"])] = record
            assert len(acked) < 1000
        for i in range(5):  # a few more in the log after it (the next one is far off)
            record = c.create_record("t", {"v": -i, "pad": "y"})
            acked[int(record["id"])] = record
    assert (data / SNAPSHOT_NAME).exists() and not (data / SNAPSHOT_PREV).exists()
    _flip(data / SNAPSHOT_NAME, (data / SNAPSHOT_NAME).stat().st_size // 2)
    out = cli("repair", "--data-dir", str(data))
    assert out.returncode == 0, out.stdout + out.stderr
    assert cli("check", "--data-dir", str(data)).returncode == 0
    assert _all_records(data) == acked


def test_damage_in_the_log_the_newest_snapshot_covers_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked = _write(data, 400, "--snapshot-bytes", "4096")
    first = list_segments(data)[0][1]
    _flip(first, HEADER_SIZE + 3)  # the first entry of the oldest kept segment
    assert cli("serve", "--data-dir", str(data)).returncode == 1
    out = cli("repair", "--data-dir", str(data))
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["lost"] == [] and any("fallback" in a for a in report["actions"])
    assert not (data / SNAPSHOT_PREV).exists()
    assert cli("check", "--data-dir", str(data)).returncode == 0
    assert _all_records(data) == acked


def test_a_damaged_middle_log_entry_is_cut_and_the_loss_reported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked = _write(data, 40)  # no snapshot: one segment, one entry per create
    (_, segment), *_ = list_segments(data)
    scan = scan_frames(segment.read_bytes())
    k = 20  # entry k (0-based) holds the create of id k + 1
    _flip(segment, scan.offsets[k] + HEADER_SIZE + 3)
    assert cli("serve", "--data-dir", str(data)).returncode == 1

    out = cli("repair", "--data-dir", str(data))
    assert out.returncode == 3, out.stdout + out.stderr  # startable, entries lost
    report = json.loads(out.stdout)
    assert report["startable"]
    (lost,) = report["lost"]
    assert f"the damaged entry at byte {scan.offsets[k]}" in lost
    assert f"{39 - k} valid entries after it (seq {k + 2}..40)" in lost
    assert lost in out.stderr
    assert cli("check", "--data-dir", str(data)).returncode == 0
    (kept,) = data.glob("repair-*/*")  # the cut-off bytes, nothing deleted
    assert kept.stat().st_size == scan.size - scan.offsets[k]
    assert os.stat(kept).st_mode & 0o777 == 0o600
    assert _all_records(data) == {i: acked[i] for i in range(1, k + 1)}
