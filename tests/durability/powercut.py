"""A file layer that simulates a power cut: every byte not yet fsynced is lost.

Test-only. It wraps real files in one directory and keeps, per file (inode), how many
bytes are durable (advanced by ``sync``) and, per directory, which names are durable
(advanced by ``sync_dir``: a created, renamed or removed name is not durable before).
:meth:`PowerCutFS.power_cut` then rewrites the directory as a disk would come back:
the durable names, each with its durable bytes, plus optionally a random part of the
unsynced bytes (a torn write). With ``honor_fsync=False`` no sync makes anything
durable: the same test must then lose acknowledged writes, which proves it can fail.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stateengine.server.persist_base import FileHandle


class PowerCut(Exception):
    """Raised by a sync that the test chose to interrupt with a power cut."""


@dataclass
class _Inode:
    path: str  # current name, "" once unlinked/replaced
    durable: int = 0
    saved: bytes | None = None  # content captured when the name went away


class _Handle:
    def __init__(self, fs: PowerCutFS, inode: _Inode) -> None:
        self.fs = fs
        self.inode = inode
        self.fd = os.open(inode.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def sync(self) -> None:
        if self.fs.cut_at_sync is not None:
            self.fs.cut_at_sync -= 1
            if self.fs.cut_at_sync < 0:
                raise PowerCut("power cut before the fsync completed")
        if self.fs.honor_fsync:
            self.inode.durable = os.fstat(self.fd).st_size

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.inode.durable = min(self.inode.durable, size)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PowerCutFS:
    """The :class:`~stateengine.server.persist_base.FileSystem` of one simulated disk."""

    def __init__(self, directory: Path, honor_fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.honor_fsync = honor_fsync
        #: when set to n, the (n+1)-th sync from now raises PowerCut instead of syncing
        self.cut_at_sync: int | None = None
        self.names: dict[str, _Inode] = {}
        self.durable_names: dict[str, _Inode] = {}
        self.handles: list[_Handle] = []
        for entry in self.dir.iterdir():  # what survived the last boot is durable
            if entry.is_file():
                inode = _Inode(str(entry), entry.stat().st_size)
                self.names[str(entry)] = inode
                self.durable_names[str(entry)] = inode

    def _inode(self, path: str) -> _Inode:
        inode = self.names.get(path)
        if inode is None:
            inode = self.names[path] = _Inode(path)
        return inode

    def _forget(self, path: str) -> None:
        old = self.names.pop(path, None)
        if old is not None:
            with open(path, "rb") as f:
                old.saved = f.read(old.durable)
            old.path = ""

    def open_append(self, path: str) -> FileHandle:
        handle = _Handle(self, self._inode(path))
        self.handles.append(handle)
        return handle

    def write_file(self, path: str, chunks: Iterator[bytes]) -> None:
        if path in self.names:
            self._forget(path)
        inode = self._inode(path)
        with open(path, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        if self.honor_fsync:
            inode.durable = os.path.getsize(path)

    def rename(self, src: str, dst: str) -> None:
        if dst in self.names:
            self._forget(dst)
        inode = self.names.pop(src)
        os.replace(src, dst)
        inode.path = dst
        self.names[dst] = inode

    def sync_dir(self, path: str) -> None:
        if self.honor_fsync:
            self.durable_names = dict(self.names)

    def remove(self, path: str) -> None:
        self._forget(path)
        os.unlink(path)

    def power_cut(self, rng: random.Random | None = None) -> dict[str, int]:
        """Bring the directory back as the disk would; return bytes lost per name.

        With *rng*, each file keeps a random prefix of its unsynced bytes, sometimes
        followed by garbage (pages that landed torn).
        """
        for handle in self.handles:
            handle.close()
        contents: dict[str, bytes] = {}
        lost: dict[str, int] = {}
        for name, inode in self.durable_names.items():
            if inode.path:
                with open(inode.path, "rb") as f:
                    full = f.read()
            else:
                full = inode.saved or b""
            data = full[: inode.durable]
            unsynced = full[inode.durable :]
            if rng is not None and unsynced:
                keep = rng.randrange(len(unsynced) + 1)
                data += unsynced[:keep]
                if keep < len(unsynced) and rng.random() < 0.3:
                    data += rng.randbytes(min(16, len(unsynced) - keep))
            contents[name] = data
            lost[name] = len(full) - len(data)
        for name in set(self.names) | set(self.durable_names):
            if os.path.exists(name):
                os.unlink(name)
        for name, data in contents.items():
            with open(name, "wb") as f:
                f.write(data)
        self.names = {}
        self.durable_names = {}
        self.handles = []
        return lost
