"""Where a server keeps its files, and how a client finds a running server.

* The **data directory** (``--data-dir``; default ``$STATEENGINE_DATA_DIR`` or
  ``./.stateengine``) holds what must survive a restart, a ``lock`` file that keeps a
  second server off it, and ``server.json`` while a server runs: its pid, process start
  time, endpoint and arena name, for clients and ``stateengine stats``.
* The **run directory** (``$XDG_RUNTIME_DIR/stateengine-<uid>`` or
  ``/tmp/stateengine-<uid>``, mode 0700, refused when another user owns it or others
  may access it) holds the ``ipc://`` sockets, so that no other user can connect. The
  data directory is held to the same rule, and every file in it is created 0600
  (:func:`write_private_file`).
* **Process identity** (:func:`pid_alive`, :func:`process_start_time`) is ``shm``'s
  (``shm/layout.py``), re-exported here: a pid and its start time name one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from stateengine.errors import ServerUnavailable
from stateengine.runtime.feed import feed_endpoint
from stateengine.shm import locks
from stateengine.shm.layout import proc_start_time as process_start_time
from stateengine.shm.layout import process_alive

__all__ = [
    "SERVER_FILE",
    "default_data_dir",
    "default_endpoint",
    "pid_alive",
    "private_dir",
    "process_start_time",
    "read_server_file",
    "remove_leftovers",
    "resolve_data_dir",
    "run_dir",
    "write_private_file",
    "write_server_file",
]

SERVER_FILE = "server.json"


def default_data_dir() -> Path:
    """``$STATEENGINE_DATA_DIR``, else ``./.stateengine``, as an absolute path."""
    return Path(os.environ.get("STATEENGINE_DATA_DIR") or Path.cwd() / ".stateengine").absolute()


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data directory a server, client or command uses: *data_dir* made absolute
    when given, else :func:`default_data_dir` (the one place this rule is written)."""
    return Path(data_dir).absolute() if data_dir else default_data_dir()


def private_dir(path: Path) -> Path:
    """Create *path* mode 0700, or check that an existing one is ours and private.

    Used for the data directory, the run directory, ``curve/`` and a ``keygen --out``
    directory: what is inside is this user's alone, so a directory that group or others
    may read, write or enter is refused rather than fixed behind the user's back (they
    may have shared it on purpose; the message names the ``chmod`` that fixes it).

    :raises PermissionError: when another user owns it or group/others have any access
        to it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to us")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise PermissionError(
            f"{path} is open to other users (mode {mode:o}); make it private: chmod 700 {path}"
        )
    return path


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write *path* as a file only its owner can read (0600 from its creation, whatever
    the umask: never created wider and narrowed after). Not atomic: write a temporary
    name and ``os.replace`` it where readers must never see a partial file.

    :param exclusive: refuse an existing *path* (``FileExistsError``) instead of
        truncating it; a symlink at *path* is refused either way.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_TRUNC
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return private_dir(Path(base) / f"stateengine-{os.getuid()}")


def _socket_name(data_dir: Path) -> str:
    return hashlib.sha1(str(data_dir.absolute()).encode()).hexdigest()[:16] + ".sock"


def default_endpoint(data_dir: Path) -> str:
    """A private ``ipc://`` endpoint derived from the data directory's absolute path."""
    return f"ipc://{run_dir() / _socket_name(data_dir)}"


def pid_alive(pid: int, start_time: int | None) -> bool:
    """Whether *pid* runs and, when *start_time* is known, is still the process that
    started then (a recycled pid is not). One implementation: ``shm``'s process identity."""
    return process_alive(pid, start_time or 0)


def write_server_file(data_dir: Path, info: dict[str, Any]) -> None:
    tmp = data_dir / f".{SERVER_FILE}.tmp"
    write_private_file(tmp, json.dumps(info, indent=2).encode())
    os.replace(tmp, data_dir / SERVER_FILE)


def read_server_file(data_dir: Path) -> dict[str, Any]:
    """The running server's ``server.json``.

    :raises ServerUnavailable: no server has run here, or its process is gone.
    """
    path = data_dir / SERVER_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ServerUnavailable(
            f"no server is running on {data_dir} (no {SERVER_FILE}); start one with "
            f"`stateengine serve --data-dir {data_dir}`"
        ) from None
    return info


# --- cleanup: what a dead server left, and only that -------------------------------------

_SOCKET_RE = re.compile(r"^[0-9a-f]{16}\.sock(\.feed)?$")
#: ``http.json`` and a second gateway's ``http.<pid>.json`` (app/gateway/__main__.py)
_GATEWAY_RE = re.compile(r"^http(\.[0-9]+)?\.json$")


def _gateway_gone(path: Path, left: list[str]) -> bool:
    """Whether *path* describes a gateway that no longer runs, as a regular file of ours
    (else why not, appended to *left*)."""
    try:
        if not _ours(path.lstat(), stat.S_IFREG):
            left.append(f"{path}: not a file of ours")
            return False
        gateway = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        gateway = None  # unreadable: no running gateway can be named by it
    pid = gateway.get("pid") if isinstance(gateway, dict) else None
    if isinstance(pid, int) and pid_alive(pid, gateway.get("start_time")):
        left.append(f"{path}: its gateway (pid {pid}) is alive")
        return False
    return True


def _with_feed(socket_path: str) -> list[str]:
    """An ipc socket's path and its change feed's (:func:`~.feed.feed_endpoint`)."""
    return [socket_path, feed_endpoint(f"ipc://{socket_path}").removeprefix("ipc://")]


def _ours(info: os.stat_result, kind: int) -> bool:
    return stat.S_IFMT(info.st_mode) == kind and info.st_uid == os.getuid()


def _private_run_dirs() -> list[Path]:
    """The run directories this user's servers may have used (``$XDG_RUNTIME_DIR`` or the
    temporary directory, whichever was set when the server started), when they are ours
    and private. Never created here."""
    out: list[Path] = []
    for base in {os.environ.get("XDG_RUNTIME_DIR") or "", tempfile.gettempdir()} - {""}:
        folder = Path(base) / f"stateengine-{os.getuid()}"
        try:
            info = folder.lstat()
        except OSError:
            continue
        if _ours(info, stat.S_IFDIR) and not info.st_mode & 0o077:
            out.append(folder)
    return out


def remove_leftovers(data_dir: Path) -> tuple[list[str], list[str]]:
    """Remove what a dead server of *data_dir* left: ``server.json``, its ipc socket and
    the change feed's socket (``stateengine cleanup``). ``(removed, left)``: the paths
    removed, and a line per file left in place saying why.

    Only files that are provably that server's go (issue 14, items 12 and 21): nothing
    while a server holds the data-dir lock (this holds it while removing, so no server
    starts meanwhile; one that tries is refused as if the directory were in use), nothing
    in a data directory another user owns, ``server.json`` only as a regular file of
    ours, and sockets only at the data directory's own default endpoint (a name derived
    from its path, in our private run directory), as sockets we own. Whatever
    ``server.json`` names as its endpoint is never trusted as a path to unlink: a
    custom ``--endpoint`` socket is left (the next server on it replaces it).

    Safe for root in a directory another user controls: it removes nothing there.
    """
    data_dir = data_dir.absolute()
    removed: list[str] = []
    left: list[str] = []
    try:
        info = data_dir.stat()  # a symlinked data dir is followed, as serve does
    except FileNotFoundError:
        return removed, left
    if not _ours(info, stat.S_IFDIR):
        left.append(f"{data_dir}: owned by uid {info.st_uid}, not by us (uid {os.getuid()})")
        return removed, left
    try:
        lock_fd = os.open(data_dir / "lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        lock_fd = -1  # no server has run here since locks exist
    except OSError as exc:
        left.append(f"{data_dir / 'lock'}: {exc}")
        return removed, left
    try:
        if lock_fd >= 0:
            if not locks.try_lock(lock_fd):
                left.append(f"{data_dir}: a server is running on it")
                return removed, left
        try:
            server_info: dict[str, Any] = json.loads((data_dir / SERVER_FILE).read_text())
        except (OSError, ValueError):
            server_info = {}
        pid = server_info.get("pid")
        if isinstance(pid, int) and pid_alive(pid, server_info.get("start_time")):
            left.append(f"{data_dir / SERVER_FILE}: its server (pid {pid}) is alive")
            return removed, left
        name = _socket_name(data_dir)
        candidates = [
            Path(path) for folder in _private_run_dirs() for path in _with_feed(str(folder / name))
        ]
        named = str(server_info.get("endpoint") or "").removeprefix("ipc://")
        for path_text in _with_feed(named) if named else []:
            if Path(path_text) not in candidates and os.path.lexists(path_text):
                left.append(f"{path_text}: not this data directory's default endpoint")
        for path in sorted(data_dir.glob("http*.json")):  # gateways' descriptions
            if _GATEWAY_RE.match(path.name) and _gateway_gone(path, left):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(str(path))
        for path in [data_dir / SERVER_FILE, *candidates]:
            kind = stat.S_IFREG if path.name == SERVER_FILE else stat.S_IFSOCK
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not _ours(st, kind) or (kind == stat.S_IFSOCK and not _SOCKET_RE.match(path.name)):
                left.append(f"{path}: not a {'file' if kind == stat.S_IFREG else 'socket'} of ours")
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(str(path))
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
    return removed, left
