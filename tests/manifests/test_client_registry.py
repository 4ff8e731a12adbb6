"""Manifest clients by name from a registry (issue 15), third parties included.

The third-party client is docs/extending.md's ``notesclient.py`` snippet: registered in
this process with ``register_client``, and installed as a package (a ``dist-info`` with
a ``stateengine.manifest_clients`` entry point on ``PYTHONPATH``) for a fresh process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stateengine.errors import InvalidManifest, StoreSerializeError, UnsupportedClient
from stateengine.manifests import State
from stateengine.manifests.clients import (
    ClientAdapter,
    client_adapters,
    default_clients,
    get_client_adapter,
    load_client_names,
    register_client,
    store_client_names,
    unregister_client,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
MANIFEST = """\
profile:
  _store: {client: notes, key: "profile:${notes.user}"}
  _load: {client: Env, map: {name: NOTES_NAME, city: NOTES_CITY}}
user:
  _state: {type: string}
  _store: {client: InMemory, key: user}
"""


def snippet(name: str) -> str:
    for block in re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"docs/extending.md has no ```python block starting '# {name}'")


@pytest.fixture
def notes() -> Iterator[type[ClientAdapter]]:
    namespace: dict[str, Any] = {}
    exec(compile(snippet("notesclient.py"), "notesclient.py", "exec"), namespace)
    adapter: type[ClientAdapter] = namespace["NotesAdapter"]
    register_client(adapter)
    try:
        yield adapter
    finally:
        unregister_client("Notes")


def manifest_dir(tmp_path: Path, text: str = MANIFEST) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "notes.yml").write_text(text)
    return directory


def test_the_builtins_are_registry_entries() -> None:
    assert list(client_adapters()) == ["Env", "File", "Db", "KVS", "InMemory", "Http"]
    assert store_client_names() == ("File", "KVS", "InMemory", "Http")
    assert load_client_names() == ("Env", "File", "Db", "KVS", "InMemory", "Http", "State")
    assert sorted(default_clients()) == ["Db", "Env", "Http", "InMemory"]
    with pytest.raises(ValueError, match="already registered"):
        register_client(get_client_adapter("KVS"), replace=True)  # a built-in stays
    with pytest.raises(UnsupportedClient, match="no manifest client named 'Nope'"):
        get_client_adapter("Nope")


def test_each_adapter_owns_its_serialisation(tmp_path: Path) -> None:
    """KVS and File store JSON text; the State no longer encodes for them."""
    from stateengine.manifests import FileClient

    root = tmp_path / "files"
    root.mkdir(mode=0o700)
    text = "a:\n  _store: {client: File, key: a.json}\n"
    with State(manifest_dir(tmp_path, text), {"File": FileClient(root)}) as state:
        state.set("notes.a", {"x": [1, 2]})
        assert json.loads((root / "a.json").read_text()) == {"x": [1, 2]}
        assert state.get("notes.a") == {"x": [1, 2]}
        with pytest.raises(StoreSerializeError, match="cannot serialise for File"):
            state.set("notes.a", float("nan"))


def test_a_registered_client_stores_loads_and_serialises(
    tmp_path: Path, notes: type[ClientAdapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTES_NAME", "Ada")
    monkeypatch.setenv("NOTES_CITY", "London")
    shared: dict[str, str] = {}
    with State(manifest_dir(tmp_path), {"Notes": shared}) as state:
        state.set("notes.user", "ada")
        assert state.get("notes.profile") == {"name": "Ada", "city": "London"}  # loaded, stored
        assert shared == {"profile:ada": '{\n "city": "London",\n "name": "Ada"\n}'}
        assert state.get("notes.profile.city") == "London"
        state.set("notes.profile", {"name": "Ada", "city": "Paris"})
        assert json.loads(shared["profile:ada"])["city"] == "Paris"
        with pytest.raises(StoreSerializeError, match="cannot serialise for Notes"):
            state.set("notes.profile", {"bad": {1, 2}})
        assert state.delete("notes.profile") and shared == {}
    # The adapter's capabilities reach the parser: Notes has no TTL.
    refused = manifest_dir(tmp_path / "ttl", "a:\n  _store: {client: Notes, key: a, ttl: 5}\n")
    with State(refused) as state, pytest.raises(InvalidManifest, match="Notes store has no TTL"):
        state.get("notes.a")


def test_an_unregistered_client_is_refused_when_the_manifest_is_parsed(tmp_path: Path) -> None:
    with State(manifest_dir(tmp_path)) as state:
        with pytest.raises(InvalidManifest, match="unknown client 'notes'; use one of"):
            state.get("notes.profile")


def install(site: Path, entry_point: str) -> dict[str, str]:
    site.mkdir()
    (site / "notesclient.py").write_text(snippet("notesclient.py"))
    info = site / "notesclient-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: notesclient\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[stateengine.manifest_clients]\n{entry_point}\n")
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(site) + (os.pathsep + path if path else "")}


RUN = textwrap.dedent(
    """
    import sys
    from stateengine.manifests import State
    with State(sys.argv[1]) as state:
        state.set("notes.user", "ada")
        state.set("notes.profile", {"name": "Ada"})
        print(state.get("notes.profile"), state.clients["Notes"])
    """
)


def run(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_installed_client_is_found_through_its_entry_point(tmp_path: Path) -> None:
    env = install(tmp_path / "site", "Notes = notesclient:NotesAdapter")
    done = run(RUN, str(manifest_dir(tmp_path)), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'name': 'Ada'} {'profile:ada': '{\\n \"name\": \"Ada\"\\n}'}\n"
    # `serve --manifests DIR` checks the directory with the same registry.
    check = "from pathlib import Path; import sys\n"
    check += "from stateengine.app.cli import check_manifests\n"
    check += "print(check_manifests(Path(sys.argv[1])))"
    assert run(check, str(manifest_dir(tmp_path)), env=env).stdout == "(1, 4, [])\n"


def test_a_broken_entry_point_is_left_out_with_a_warning(tmp_path: Path) -> None:
    env = install(tmp_path / "site", "Notes = notesclient:Missing")
    done = run(RUN, str(manifest_dir(tmp_path)), env=env)
    assert done.returncode == 1
    assert "manifest client entry point Notes (notesclient:Missing) did not load" in done.stderr
    assert "unknown client 'notes'" in done.stderr


@pytest.mark.parametrize("name", ["State", "kvs"])
def test_a_taken_name_cannot_be_registered(name: str) -> None:
    adapter: Callable[..., Any] = type("Taken", (ClientAdapter,), {"name": name})
    with pytest.raises(ValueError):
        register_client(adapter)  # type: ignore[arg-type]


def test_every_python_snippet_of_the_page_is_run_by_a_test() -> None:
    """docs/extending.md: tinystore.py (tests/unit/test_store_plugin.py), notesclient.py."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)
    assert [b.splitlines()[0] for b in blocks] == ["# tinystore.py", "# notesclient.py"]
