"""A third-party store, installed as a plugin, runs a real server (docs/extending.md).

The store is docs/extending.md's ``tinystore.py`` snippet, written into a directory
with a ``dist-info`` that declares it in the ``stateengine.stores`` entry point group,
as ``pip install`` would leave it; that directory goes on the server's ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stateengine.server.engine import TableEngine
from stateengine.server.persistence import (
    PersistenceError,
    check,
    open_store,
    register_store,
    store_names,
)
from stateengine.server.stores import StoreBackend, get_store, unregister_store
from stateengine.testing import ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def snippet(name: str) -> str:
    """The ```python block of docs/extending.md that starts with ``# NAME``."""
    for block in re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"docs/extending.md has no ```python block starting '# {name}'")


def install_plugin(site: Path, entry_point: str = "tiny = tinystore:TINY") -> dict[str, str]:
    """Write the package and its dist-info into *site*; the env that puts it on sys.path."""
    site.mkdir(exist_ok=True)
    (site / "tinystore.py").write_text(snippet("tinystore.py"))
    info = site / "tinystore-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinystore\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[stateengine.stores]\n{entry_point}\n")
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(site) + (os.pathsep + path if path else "")}


def test_plugin_store_selected_with_store_name_survives_a_restart(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site")
    data = tmp_path / "data"
    args = ["--store", "tiny", "--tiny-sync-every", "1"]
    with ServerProcess(data, *args, env=env) as server, server.connect(timeout=30) as client:
        client.create_state("t", schema={"n": "integer"})
        created = [client.create_record("t", {"n": i}) for i in range(3)]
        client.patch_record("t", created[0]["id"], {"n": 10})
        expected = client.list_records("t")
    assert "store:    tiny" in server.output()
    assert (data / "tiny.log").stat().st_size > 0
    assert not list(data.glob("*.selog"))  # nothing of the log store
    with ServerProcess(data, *args, env=env) as again, again.connect(timeout=30) as client:
        assert client.list_records("t") == expected
        assert client.get_record("t", created[0]["id"])["n"] == 10
    # The data dir now says it is a 'tiny' one: asking for another store is refused.
    refused = subprocess.run(
        [sys.executable, "-m", "stateengine", "serve", "--data-dir", str(data)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "holds a 'tiny' store" in refused.stderr and "--store tiny" in refused.stderr


def test_plugin_store_in_process_check_and_no_repair(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile(snippet("tinystore.py"), "tinystore.py", "exec"), namespace)
    backend = namespace["TINY"]
    assert isinstance(backend, StoreBackend)
    register_store(backend)
    try:
        assert "tiny" in store_names()
        with pytest.raises(ValueError, match="already registered"):
            register_store(backend)
        store = open_store(tmp_path, "tiny")
        engine = TableEngine()
        store.recover(engine)
        engine.execute({"command": "CREATE_STATE", "state": "t"})
        engine.execute({"command": "CREATE_RECORD", "state": "t", "record": {"n": 1}})
        store.write(engine.change_set([("t", 1)], ["t"]))
        store.close()
        report = check(tmp_path)
        assert report["backend"] == "tiny" and report["ok"] and report["records"] == 1
        with pytest.raises(PersistenceError, match="not 'tiny'"):
            from stateengine.server.persistence import repair

            repair(tmp_path)
    finally:
        unregister_store("tiny")
    with pytest.raises(ValueError, match="unknown backend 'tiny'"):
        get_store("tiny")


def test_a_broken_plugin_is_left_out_and_named_when_selected(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site", "tiny = tinystore:NO_SUCH_NAME")
    code = (
        "from stateengine.server.stores import get_store, store_names\n"
        "print(','.join(store_names()))\n"
        "try:\n"
        "    get_store('tiny')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    names, error = run.stdout.splitlines()
    assert names == "log,sqlite,postgres,json"  # the others still work
    assert error.startswith("PersistenceError the store 'tiny' did not load: AttributeError")
    assert "did not load" in run.stderr  # the warning
