"""``FileClient`` stays beneath its root, even while the tree changes under it (issue 14
item 16; SPEC §7: File loads stay inside their configured root).

The old client checked the resolved path and then opened it by name: a directory swapped
for a symlink between the two escaped the root (1,834 of 90,989 reads). The race tests
run a thread that keeps swapping a directory under the root with a symlink to a directory
outside it while reads (or writes) run, and count what comes back. Each race test has a
control: the old algorithm, run in the same harness, must escape, or the harness proves
nothing.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stateengine.manifests import file_client
from stateengine.manifests.file_client import FileAccessError, FileClient

pytestmark = pytest.mark.skipif(os.open not in os.supports_dir_fd, reason="needs dir_fd support")

INSIDE, OUTSIDE = "inside", "OUTSIDE"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): ``root/d/secret.txt`` says inside, ``outside/secret.txt`` not."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    (root / "d" / "secret.txt").write_text(INSIDE)
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE)
    return root, outside


class Swapper:
    """A thread that swaps ``root/d`` for a symlink to *outside* and back, until stopped."""

    def __init__(self, root: Path, outside: Path) -> None:
        self.root, self.outside = root, outside
        self.swaps = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        d, real = self.root / "d", self.root / "d.real"
        try:
            while not self.stop.is_set():
                os.rename(d, real)
                try:
                    os.symlink(self.outside, d)
                    os.unlink(d)
                except FileExistsError:
                    pass  # a write made d again in the gap: the restore removes it
                while True:  # put the real directory back, over any d a write made
                    try:
                        os.rename(real, d)
                        break
                    except OSError:
                        shutil.rmtree(d, ignore_errors=True)
                self.swaps += 1
        except BaseException as exc:  # re-raised by the test
            self.error = exc

    def __enter__(self) -> Swapper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "swapper did not stop"
        if self.error is not None:
            raise self.error


def race(
    root: Path, outside: Path, op: Callable[[], object], seconds: float, until: object = None
) -> Counter[object]:
    """Run *op* in a loop for *seconds* while a Swapper runs; count results (exception
    class names for errors). Stops early once *until* has been seen, when given."""
    seen: Counter[object] = Counter()
    with Swapper(root, outside) as swapper:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                result = op()
            except Exception as exc:  # counted by kind
                result = type(exc).__name__
            seen[result] += 1
            if until is not None and seen[until]:
                break
    assert swapper.swaps > 0
    return seen


def old_get(root: Path, key: str) -> str | None:
    """The client on main before this fix: check the resolved path, then open it."""
    base = root.resolve()
    target = (base / key).resolve()
    if not target.is_relative_to(base):
        raise FileAccessError("outside the root")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read().decode()


def old_set(root: Path, key: str, value: str) -> None:
    base = root.resolve()
    target = (base / key).resolve()
    if not target.is_relative_to(base):
        raise FileAccessError("outside the root")
    tmp = target.parent / f".tmp-{threading.get_ident()}"
    tmp.write_text(value)
    os.replace(tmp, target)


def test_reads_never_escape_while_a_directory_is_swapped_for_a_symlink(
    tree: tuple[Path, Path],
) -> None:
    root, outside = tree
    client = FileClient(root)
    seen = race(root, outside, lambda: client.get("d/secret.txt"), seconds=3.0)
    assert seen[OUTSIDE] == 0, seen
    # The race was real: reads met the directory, the symlink and the gap between.
    assert seen[INSIDE] > 0 and seen["FileAccessError"] > 0, seen
    assert set(seen) <= {INSIDE, None, "FileAccessError"}, seen


def test_control_the_old_check_then_open_escapes(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    seen = race(root, outside, lambda: old_get(root, "d/secret.txt"), 20.0, until=OUTSIDE)
    assert seen[OUTSIDE] > 0, f"the harness caught no escape of the old client: {seen}"


def test_writes_never_escape_while_a_directory_is_swapped(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    client = FileClient(root)
    seen = race(root, outside, lambda: client.set("d/out.txt", "written"), seconds=2.0)
    assert not (outside / "out.txt").exists(), seen
    assert seen[True] > 0, seen


def test_control_the_old_write_escapes(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    escaped = lambda: (outside / "out.txt").exists()  # noqa: E731

    def op() -> bool:
        old_set(root, "d/out.txt", "written")
        return escaped()

    seen = race(root, outside, op, 20.0, until=True)
    assert escaped(), seen


# --- the rule: no symlinks below the root ---------------------------------------------------


def test_symlinks_below_the_root_are_refused_even_pointing_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.txt").write_text("a")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    (root / "b.txt").symlink_to(root / "real" / "a.txt")
    client = FileClient(root)
    assert client.get("real/a.txt") == "a"
    for key in ("alias/a.txt", "b.txt"):
        with pytest.raises(FileAccessError, match="symlink"):
            client.get(key)
        with pytest.raises(FileAccessError, match="symlink"):
            client.delete(key)
    with pytest.raises(FileAccessError, match="symlink"):
        client.set("alias/new.txt", "x")
    assert not (root / "real" / "new.txt").exists()
    assert (root / "b.txt").is_symlink() and (root / "real" / "a.txt").read_text() == "a"


def test_the_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "k.txt").write_text("v")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    client = FileClient(tmp_path / "link")
    assert client.get("k.txt") == "v"
    assert client.set("sub/n.txt", "w") and (tmp_path / "real" / "sub" / "n.txt").exists()


def test_set_creates_private_files_and_directories(tmp_path: Path) -> None:
    root = tmp_path / "missing-root"
    client = FileClient(root)
    assert client.get("a/b.txt") is None  # a missing root or directory is a miss
    assert client.set("a/b.txt", "héllo") is True
    assert client.get("a/b.txt") == "héllo"
    assert stat.S_IMODE((root / "a" / "b.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "a").stat().st_mode) == 0o700
    assert [p.name for p in (root / "a").iterdir()] == ["b.txt"]  # no temporary left
    assert client.delete("a/b.txt") is True and client.delete("a/b.txt") is False


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    client = FileClient(tmp_path)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(client.get("pipe"))
        except FileAccessError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # unblock the old client's open() so the thread ends
        os.close(os.open(tmp_path / "pipe", os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
        pytest.fail("get() of a FIFO blocked")
    assert isinstance(outcome[0], FileAccessError) and "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("key", ["", ".", "/etc/passwd", "../x", "a/../../x", "a\x00b"])
def test_bad_keys_refused_before_any_access(tmp_path: Path, key: str) -> None:
    client = FileClient(tmp_path)
    for op in (lambda: client.get(key), lambda: client.set(key, "x"), lambda: client.delete(key)):
        with pytest.raises(FileAccessError):
            op()


def test_a_file_in_the_way_of_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    client = FileClient(tmp_path)
    with pytest.raises(FileAccessError, match="Not a directory"):
        client.get("f/x.txt")
    with pytest.raises(FileAccessError, match="Not a directory"):
        client.set("f/x.txt", "y")


def test_fallback_without_dir_fd_refuses_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_client, "BENEATH", False)
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    client = FileClient(root)
    assert client.set("real/a.txt", "a") and client.get("real/a.txt") == "a"
    with pytest.raises(FileAccessError, match="symlink"):
        client.get("alias/a.txt")
    assert client.delete("real/a.txt") and client.get("real/a.txt") is None


@pytest.fixture(autouse=True)
def _no_leaked_fds() -> Iterator[None]:
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    yield
    if before:
        assert len(os.listdir("/proc/self/fd")) <= before + 1
