"""A private ``stateengine serve`` in a subprocess, for tests (the kit's base).

    from stateengine.testing import ServerProcess

    with ServerProcess(tmp_path) as server:
        with server.connect() as client:
            client.create_record("t", {"x": 1})

Every wait is bounded; a server that does not come up within ``start_timeout`` is
killed and reported with its output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stateengine.client.client import Client
from stateengine.runtime import discovery as paths


class ServerProcess:
    """``stateengine serve`` on a private data directory, as a real subprocess.

    :param data_dir: the server's data directory (created 0700 by the server; one that
        exists must be private already: ``serve`` refuses a directory others can access).
    :param args: extra ``serve`` arguments.
    :param env: extra environment variables (e.g. test-only fault switches).
    :param preexec_fn: run in the child before ``exec`` (e.g. to lower its fd limits).
    :param launcher: the command that runs the ``stateengine`` command line (default
        ``python -m stateengine``); e.g. a test's script that registers a command in the
        command table, then calls ``stateengine.app.cli.main``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *args: str,
        env: dict[str, str] | None = None,
        start_timeout: float = 20.0,
        preexec_fn: Callable[[], None] | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.launcher = list(launcher) or [sys.executable, "-m", "stateengine"]
        self.args = list(args)
        self.env = env or {}
        self.start_timeout = start_timeout
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        return str(self.info["endpoint"])

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        """Start the server and wait until its ``server.json`` names it.

        :raises RuntimeError: the server exited, or did not start within ``start_timeout``.
        """
        cmd = [*self.launcher, "serve", "--data-dir", str(self.data_dir)]
        # Output goes to a file, never a pipe: a full pipe would block the server.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                info = paths.read_server_file(self.data_dir)
            except Exception:
                info = {}
            if info.get("pid") == self.proc.pid:
                self.info = info
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"server did not start within {self.start_timeout} s")

    def connect(
        self, timeout: float = 10.0, history: str | os.PathLike[str] | None = None
    ) -> Client:
        """A client of this server (arena reads on); *history*: record its operations
        in that directory (``Client(..., history=)``).

        :raises ServerUnavailable: only when a call finds no server (the client connects
            lazily).
        """
        return Client(self.endpoint, self.data_dir, timeout=timeout, history=history)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; return the exit code (kill -9 after *timeout*). Raises
        nothing."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout)
        return code

    def kill(self) -> None:
        """kill -9: no cleanup runs in the server (see :meth:`cleanup`). Raises nothing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self) -> None:
        """Remove what a killed server left: its arena segments (once it is dead).
        Raises nothing."""
        if self.proc is not None and self.proc.poll() is None:
            return
        arena = self.info.get("arena")
        if arena:
            folder, base = os.path.split(str(arena))
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(folder):
                    if name == base or name.startswith(base + ".g"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(folder, name))

    def output(self) -> str:
        """What the server printed so far ("" before it started). Raises nothing."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. handed to a spawn worker) without its process: a worker can
        :meth:`connect`, only the process that started the server stops it."""
        return {**self.__dict__, "proc": None, "preexec_fn": None}

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()
