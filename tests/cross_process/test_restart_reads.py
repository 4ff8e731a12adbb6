"""A worker attached to the arena of a server that was killed and restarted reads the new
server's writes, not the dead server's last version (found by the kit's nemesis: reads
in the second after a kill -9 and restart, before the worker re-checked server.json,
missed writes made on the restarted server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stateengine.testing import ServerProcess


def restart_and_read(tmp_path: Path, keep_arena_last: bool, cleanup: bool = False) -> int:
    data = tmp_path / "data"
    first = ServerProcess(data, "--fsync", "always").start()
    try:
        with first.connect() as setup:
            setup.create_state("t", schema={"n": "integer"})
            setup.create_record("t", {"id": 1, "n": 1})
        reader = first.connect()
        assert reader.get_record("t", 1)["n"] == 1  # from the arena
        assert reader._view is not None
        # as if the worker had just checked server.json: no re-check for an hour
        reader._view.deadline = time.monotonic() + 3600
        first.kill()
    except BaseException:
        first.kill()
        raise
    if cleanup:  # the documented after-crash step removes the dead server's arena
        from stateengine.shm.stale import cleanup_stale

        assert cleanup_stale()
    if not keep_arena_last:
        (data / "arena.last").unlink()  # the control: the new server cannot find it
    with ServerProcess(data, "--fsync", "always") as second, second.connect() as writer:
        writer.patch_record("t", 1, {"n": 2})
        try:
            return int(reader.get_record("t", 1)["n"])
        finally:
            reader.close()


def test_reads_after_a_restart_see_the_new_servers_writes(tmp_path: Path) -> None:
    assert restart_and_read(tmp_path, keep_arena_last=True) == 2


def test_control_without_superseding_the_old_arena_the_read_is_stale(tmp_path: Path) -> None:
    if restart_and_read(tmp_path, keep_arena_last=False) == 2:
        pytest.fail("the stale read did not happen: this test could not catch the bug")


def test_cleanup_of_the_dead_servers_arena_supersedes_it_too(tmp_path: Path) -> None:
    """``stateengine cleanup`` after the crash removes the arena the new server would have
    marked: cleanup marks it first (found by the nemesis helper)."""
    assert restart_and_read(tmp_path, keep_arena_last=False, cleanup=True) == 2
