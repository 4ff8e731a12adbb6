"""Where a server keeps its files, and how a client finds a running server.

* The **data directory** (``--data-dir``; default ``$STATEENGINE_DATA_DIR`` or
  ``./.stateengine``) holds what must survive a restart, a ``lock`` file that keeps a
  second server off it, and ``server.json`` while a server runs: its pid, process start
  time, endpoint and arena name, for clients and ``stateengine stats``.
* The **run directory** (``$XDG_RUNTIME_DIR/stateengine-<uid>`` or
  ``/tmp/stateengine-<uid>``, mode 0700, refused when another user owns it or others
  may write it) holds the ``ipc://`` sockets, so that no other user can connect.
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

SERVER_FILE = "server.json"


def default_data_dir() -> Path:
    return Path(os.environ.get("STATEENGINE_DATA_DIR") or Path.cwd() / ".stateengine").absolute()


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


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of *pid* (clock ticks since boot), or None if unknown.

    With the pid it names a process uniquely: a recycled pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[19])


def pid_alive(pid: int, start_time: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start_time is None:
        return True
    return process_start_time(pid) in (start_time, None)


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
