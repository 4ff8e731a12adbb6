"""Where ``fcntl`` and ``/dev/shm`` are missing (Windows; odd builds), stateengine still
imports and runs: the server (arena off, said at start; a portable data-dir lock), the
in-process engine, both clients, manifests and the kit.

The platform is faked in subprocesses: a ``sitecustomize`` on ``PYTHONPATH`` puts a
meta-path hook first that makes ``import fcntl`` fail, and makes ``/dev/shm`` look
absent (``os.path.isdir``/``os.access`` say no). The servers the program starts inherit
the environment, so they run on the same fake platform.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SITECUSTOMIZE = '''
import os
import sys


class _NoFcntl:
    """A platform without fcntl: its import fails, as on Windows."""

    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ImportError("No module named 'fcntl' (hidden by the platform test)")
        return None


sys.meta_path.insert(0, _NoFcntl())
sys.modules.pop("fcntl", None)
_isdir, _access = os.path.isdir, os.access
os.path.isdir = lambda p: False if str(p).startswith("/dev/shm") else _isdir(p)
os.access = lambda p, mode, **kw: False if str(p).startswith("/dev/shm") else _access(p, mode, **kw)
'''

PROGRAM = """
import asyncio
import sys
from pathlib import Path

try:
    import fcntl  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("fcntl is importable: the hook did not apply")

import stateengine
import stateengine.manifests
import stateengine.testing
from stateengine.errors import ServerUnavailable
from stateengine.shm import locks
from stateengine.testing import ServerProcess

assert locks.KIND == "pidfile", locks.KIND
data = Path(sys.argv[1])
with ServerProcess(data, "--fsync", "no") as server:
    assert "arena:    off (no fcntl module" in server.output(), server.output()
    assert server.info["arena"] is None
    with server.connect() as db:
        db.create_state("jobs")
        db.create_record("jobs", {"n": 1})
        claimed = db.claim_record("jobs", {"n": 1}, {"n": 2}, lease_seconds=30)
        assert claimed["n"] == 2
        with db.snapshot() as snap:
            assert snap.get_record("jobs", claimed["id"])["n"] == 2
        with db.watch("jobs") as changes:
            for _ in range(50):
                db.patch_record("jobs", claimed["id"], {"n": 3})
                if changes.next(timeout=0.1) is not None:
                    break
            else:
                sys.exit("no change on the feed")

    async def aio() -> None:
        async with stateengine.AsyncClient(server.endpoint, server.data_dir) as adb:
            assert [r["n"] for r in await adb.list_records("jobs")] == [3]

    asyncio.run(aio())
    second = ServerProcess(data)
    try:
        second.start()
    except RuntimeError as exc:
        assert "in use by another stateengine server" in str(exc), exc
    else:
        second.stop()
        sys.exit("a second server started on a locked data directory")
engine = stateengine.Engine()
engine.create_record("t", {"x": 1})
assert engine.list_records("t")[0]["x"] == 1
print("ok")
"""


def fake_platform(tmp: Path) -> dict[str, str]:
    hook = tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_everything_runs_without_fcntl_and_dev_shm(tmp_path: Path) -> None:
    env = fake_platform(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROGRAM), str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr


def test_control_the_hook_hides_fcntl_and_dev_shm(tmp_path: Path) -> None:
    """The control: under the hook fcntl cannot be imported and /dev/shm is not there;
    without it, both are (this machine has them)."""
    probe = textwrap.dedent(
        """
        import os
        try:
            import fcntl
            print("fcntl")
        except ImportError:
            print("none")
        print(os.path.isdir("/dev/shm"))
        """
    )
    env = fake_platform(tmp_path)
    hidden = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    plain = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert hidden.stdout.split() == ["none", "False"], hidden.stderr
    assert plain.stdout.split() == ["fcntl", "True"]
