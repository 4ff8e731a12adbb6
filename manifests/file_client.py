"""``File``: load and store text files under one root directory.

Every key is a relative path inside the configured root (SPEC §7: File loads stay inside
their configured root). Absolute paths, ``..`` segments, empty keys and NUL bytes are
refused up front. Then the key is resolved *beneath* the root one component at a time:
the root directory is opened once, each directory component is opened relative to its
parent's descriptor with ``O_DIRECTORY | O_NOFOLLOW``, and the file itself with
``O_NOFOLLOW``. The kernel resolves each name in a directory we already hold open, so
swapping a directory for a symlink while a read runs cannot redirect it (issue 14 item
16: checking the resolved path and then opening it by name escaped the root in 1,834 of
90,989 racing reads).

**Symlinks below the root are refused**, wherever they point, even inside the root: a
key whose path meets a symlink is a :class:`FileAccessError` saying so. The root itself
may be a symlink or lie under one; it is opened (and followed) once per call. Only
regular files are read: a FIFO or device under the root is refused without blocking.

Writes go to a temporary file (mode 0600) in the key's directory, reached the same way,
and are renamed into place there, so a reader never sees half a value. Directories a
write creates are 0700. ``delete`` unlinks by name in the directory reached beneath the
root (a symlink is refused there too).

Where the platform has no ``dir_fd`` support for :func:`os.open` (Windows), the client
falls back to resolving the path and checking it stays under the resolved root before
opening it by name; that check races with a concurrent swap, as said above.

Thread-safe and fork-safe: no state is kept between calls beyond the root's path.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from stateengine.errors import LoadParseError
from stateengine.manifests.clients import JsonTextAdapter, LoadRequest

_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
#: Resolve beneath the root with directory descriptors (Linux, macOS, the BSDs).
BENEATH: Final = (
    os.open in os.supports_dir_fd
    and os.mkdir in os.supports_dir_fd
    and os.unlink in os.supports_dir_fd
    and os.rename in os.supports_dir_fd
    and bool(_O_NOFOLLOW and _O_DIRECTORY)
)
#: What ``open(..., O_NOFOLLOW)`` reports for a symlink: ELOOP (Linux, macOS), EMLINK
#: (FreeBSD), ENOTDIR (``O_DIRECTORY`` on a symlink, some kernels).
_LINK_ERRNOS: Final = frozenset({errno.ELOOP, errno.EMLINK, errno.ENOTDIR})


class FileAccessError(ValueError):
    """A key that would leave the root or meets a symlink, or an unreadable file. The
    State reports it as a :class:`LoadError` or :class:`StoreError` naming the manifest
    key."""


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

    # --- resolving keys ------------------------------------------------------------------

    @staticmethod
    def parts_of(key: str) -> tuple[str, ...]:
        """The path components of *key*, checked lexically (no file system access).

        :raises FileAccessError: the key is not a non-empty string, holds NUL, is
            absolute, or climbs out with ``..``.
        """
        if not isinstance(key, str) or not key or "\x00" in key:
            raise FileAccessError(f"File: invalid key {key!r}")
        rel = Path(key)
        if rel.is_absolute() or key.startswith(("/", "\\")) or rel.drive:
            raise FileAccessError(f"File: key {key!r} is an absolute path; keys are relative")
        if ".." in rel.parts:
            raise FileAccessError(f"File: key {key!r} climbs out of the root with '..'")
        if not rel.parts or rel.parts == (".",):
            raise FileAccessError(f"File: invalid key {key!r}")
        return rel.parts

    def path_of(self, key: str) -> Path:
        """The path *key* names under the root (checked lexically only; every access
        resolves it again beneath the root)."""
        return self.root.joinpath(*self.parts_of(key))

    def _link_error(self, key: str, dir_fd: int, name: str, exc: OSError) -> FileAccessError:
        """The error for *exc* raised opening *name* in *dir_fd*: a symlink, or other."""
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link or exc.errno in (errno.ELOOP, errno.EMLINK):
            return FileAccessError(
                f"File: key {key!r} passes through a symlink ({name!r}); symlinks below the"
                " root are refused"
            )
        return FileAccessError(f"File: cannot access {key!r}: {exc.strerror}")

    @contextmanager
    def _directory(self, key: str, create: bool) -> Iterator[tuple[int, str]]:
        """The descriptor of the directory holding *key*'s file, reached beneath the root
        without following any symlink, and the file's name in it (closed on exit).

        :raises FileNotFoundError: the root or a directory is missing (``create`` False).
        :raises FileAccessError: a component is a symlink or not a directory.
        """
        parts = self.parts_of(key)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        try:
            for name in parts[:-1]:
                flags = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
                try:
                    sub = os.open(name, flags, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass  # made by a concurrent write, or a symlink: the open decides
                    try:
                        sub = os.open(name, flags, dir_fd=fd)
                    except OSError as exc:
                        raise self._link_error(key, fd, name, exc) from None
                except OSError as exc:
                    if exc.errno not in _LINK_ERRNOS:
                        raise
                    raise self._link_error(key, fd, name, exc) from None
                os.close(fd)
                fd = sub
            yield fd, parts[-1]
        finally:
            os.close(fd)

    # --- operations -----------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The file's text, None when it (or a directory on its way) does not exist.

        :raises FileAccessError: the key leaves the root or meets a symlink, the file is
            not a regular file, is larger than ``max_bytes`` or is not UTF-8.
        """
        if not BENEATH:
            return self._get_by_path(key)
        try:
            with self._directory(key, create=False) as (dir_fd, name):
                flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
                try:
                    fd = os.open(name, flags, dir_fd=dir_fd)
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.EMLINK):
                        raise self._link_error(key, dir_fd, name, exc) from None
                    raise
        except FileNotFoundError:
            return None
        except FileAccessError:
            raise
        except OSError as exc:
            raise FileAccessError(f"File: cannot read {key!r}: {exc.strerror}") from None
        return self._read(key, fd)

    def _read(self, key: str, fd: int) -> str:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FileAccessError(f"File: {key!r} is not a regular file")
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise FileAccessError(f"File: {key!r} is larger than {self.max_bytes} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FileAccessError(f"File: {key!r} is not UTF-8 text") from None

    def set(self, key: str, value: str) -> bool:
        """Write *value* to the key's file atomically (temporary file, then rename).

        :raises FileAccessError: the key leaves the root or meets a symlink, or the
            write fails.
        """
        if not BENEATH:
            return self._set_by_path(key, value)
        data = value.encode("utf-8")
        try:
            with self._directory(key, create=True) as (dir_fd, name):
                try:
                    if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                        raise FileAccessError(
                            f"File: key {key!r} is a symlink; symlinks below the root are refused"
                        )
                except FileNotFoundError:
                    pass
                # A symlink swapped in after this check is replaced by the rename below,
                # never followed: the write stays in this directory either way.
                tmp = f".tmp-{secrets.token_hex(8)}"
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
                fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    try:
                        os.unlink(tmp, dir_fd=dir_fd)
                    except OSError:
                        pass
                    raise
        except FileAccessError:
            raise
        except OSError as exc:
            raise FileAccessError(f"File: cannot write {key!r}: {exc.strerror}") from None
        return True

    def delete(self, key: str) -> bool:
        """Remove the key's file: True if it existed, False if not.

        :raises FileAccessError: the key leaves the root or meets a symlink.
        """
        if not BENEATH:
            return self._delete_by_path(key)
        try:
            with self._directory(key, create=False) as (dir_fd, name):
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise FileAccessError(
                        f"File: key {key!r} is a symlink; symlinks below the root are refused"
                    )
                os.unlink(name, dir_fd=dir_fd)  # never follows a symlink
        except FileNotFoundError:
            return False
        except FileAccessError:
            raise
        except OSError as exc:
            raise FileAccessError(f"File: cannot delete {key!r}: {exc.strerror}") from None
        return True

    # --- fallback without dir_fd (racy: see the module docstring) -------------------------

    def _checked_path(self, key: str) -> Path:
        root = self.root.resolve()
        target = root.joinpath(*self.parts_of(key)).resolve()
        if target != root.joinpath(*self.parts_of(key)) or not target.is_relative_to(root):
            raise FileAccessError(
                f"File: key {key!r} passes through a symlink; symlinks below the root are refused"
            )
        return target

    def _get_by_path(self, key: str) -> str | None:
        path = self._checked_path(key)
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FileAccessError(f"File: cannot read {key!r}: {exc.strerror}") from None
        return self._read(key, fd)

    def _set_by_path(self, key: str, value: str) -> bool:
        path = self._checked_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            tmp.write_text(value, encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True

    def _delete_by_path(self, key: str) -> bool:
        try:
            self._checked_path(key).unlink()
        except FileNotFoundError:
            return False
        return True


__all__ = ["BENEATH", "FileAccessError", "FileClient"]


class FileAdapter(JsonTextAdapter):
    """``File``: a stored value is a JSON file; a loaded ``*.json`` file is parsed, any
    other file is text (its final newline dropped). Files have no TTL."""

    name = "File"
    ttl = False

    def load(self, request: LoadRequest) -> Any:
        key = str(request.need("key"))
        text = self.client.get(key)
        if text is None:
            return None
        if key.endswith(".json"):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise LoadParseError(f"{request.path}: File {key!r} is not JSON: {exc}") from None
        return text.removesuffix("\n")


ADAPTER = FileAdapter
