"""``File``: load and store text files under one root directory.

Every key is a relative path inside the configured root. Absolute paths, ``..``
segments, NUL bytes and symlinks that lead outside the root are refused with a
:class:`LoadError`/:class:`StoreError` naming the key (SPEC §7: File loads stay inside
their configured root). The check resolves the final path (following symlinks) and
requires it to stay under the resolved root; on Linux the file is then opened with
``O_NOFOLLOW`` so a symlink swapped in at the last component is refused too.

Writes go to a temporary file in the same directory and are renamed into place, so a
reader never sees half a value. Thread-safe (no shared state beyond the file system).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class FileAccessError(ValueError):
    """A key that would leave the root, or an unreadable file. The State reports it as a
    :class:`LoadError` or :class:`StoreError` naming the manifest key."""


class FileClient:
    """Text files under *root*.

    :param root: the directory every key is relative to (created for writes if missing).
    :param max_bytes: the largest file ``get`` reads.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int = 16 * 1024 * 1024) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"FileClient(root={str(self.root)!r})"

    def path_of(self, key: str) -> Path:
        """The file for *key*, checked to stay inside the root.

        :raises FileAccessError: the key is absolute, climbs out, or a symlink escapes.
        """
        if not isinstance(key, str) or not key or "\x00" in key:
            raise FileAccessError(f"File: invalid key {key!r}")
        rel = Path(key)
        if rel.is_absolute() or key.startswith(("/", "\\")) or rel.drive:
            raise FileAccessError(f"File: key {key!r} is an absolute path; keys are relative")
        if ".." in rel.parts:
            raise FileAccessError(f"File: key {key!r} climbs out of the root with '..'")
        root = self.root.resolve()
        target = (root / rel).resolve()
        if not target.is_relative_to(root):
            raise FileAccessError(
                f"File: key {key!r} resolves outside the root {str(root)!r} (symlink?)"
            )
        return target

    def get(self, key: str) -> str | None:
        """The file's text, None when it does not exist."""
        path = self.path_of(key)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FileAccessError(f"File: cannot read {key!r}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise FileAccessError(f"File: {key!r} is larger than {self.max_bytes} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FileAccessError(f"File: {key!r} is not UTF-8 text") from None

    def set(self, key: str, value: str) -> bool:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(value)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def delete(self, key: str) -> bool:
        path = self.path_of(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


__all__ = ["FileAccessError", "FileClient"]
