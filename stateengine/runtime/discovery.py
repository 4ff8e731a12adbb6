"""Where a server keeps its files, and how a client finds a running server.

* The **data directory** (``--data-dir``; default ``$STATEENGINE_DATA_DIR`` or
  ``./.stateengine``) holds what must survive a restart, a ``lock`` file that keeps a
  second server off it, and ``server.json`` while a server runs: its pid, process start
  time, endpoint and arena name, for clients and ``stateengine stats``.
* The **run directory** (``$XDG_RUNTIME_DIR/stateengine-<uid>`` or
  ``/tmp/stateengine-<uid>``, mode 0700, refused when another user owns it or others
  may write it) holds the ``ipc://`` sockets, so that no other user can connect.
* **Process identity** (:func:`pid_alive`, :func:`process_start_time`) is ``shm``'s
  (``shm/layout.py``), re-exported here: a pid and its start time name one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from stateengine.errors import ServerUnavailable
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
    "resolve_data_dir",
    "run_dir",
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

    :raises PermissionError: when another user owns it or group/others can write it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to us")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is writable by others; remove it or chmod 700 it")
    return path


def run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return private_dir(Path(base) / f"stateengine-{os.getuid()}")


def default_endpoint(data_dir: Path) -> str:
    """A private ``ipc://`` endpoint derived from the data directory's absolute path."""
    digest = hashlib.sha1(str(data_dir.absolute()).encode()).hexdigest()[:16]
    return f"ipc://{run_dir() / digest}.sock"


def pid_alive(pid: int, start_time: int | None) -> bool:
    """Whether *pid* runs and, when *start_time* is known, is still the process that
    started then (a recycled pid is not). One implementation: ``shm``'s process identity."""
    return process_alive(pid, start_time or 0)


def write_server_file(data_dir: Path, info: dict[str, Any]) -> None:
    tmp = data_dir / f".{SERVER_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2))
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
