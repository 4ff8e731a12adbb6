"""YAML aliases cannot blow a manifest up (issue 14 item 15).

A few kilobytes of aliases, each counted at the size of what it refers to, used to expand
into tens of millions of values (a 49 KB file took 20 s and 1 GiB; 209 KB ended in a
``MemoryError`` inside ``serve --manifests``). The parser now counts the expanded size
on the composed node graph and refuses a file past ``MAX_EXPANDED_NODES`` before it
constructs any value.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.errors import ManifestError, ManifestParseError
from stateengine.manifests import parser
from stateengine.manifests.parser import Manifest

Write = Callable[..., Path]


def wide_bomb(keys: int, leaves: int = 10_000) -> str:
    """The issue's shape: one anchored list of *leaves* zeros, aliased by *keys* keys."""
    lines = ["base: &a [" + ",".join("0" * leaves) + "]"]
    lines += [f"k{i:05d}: *a" for i in range(keys)]
    return "\n".join(lines) + "\n"


def deep_bomb(levels: int = 9, fan: int = 10) -> str:
    """Billion laughs: each level's list holds *fan* aliases of the level below."""
    lines = [f"l0: &l0 [{', '.join(['0'] * fan)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]")
    return "\n".join(lines) + "\n"


def refuse(mdir: Path, name: str) -> tuple[ManifestParseError, float, int]:
    """Parse *name* expecting a refusal; (the error, CPU seconds, peak traced bytes)."""
    start = time.process_time()
    with pytest.raises(ManifestParseError) as info:
        Manifest(mdir).file(name)
    cpu = time.process_time() - start
    tracemalloc.start()
    try:
        with pytest.raises(ManifestParseError):
            Manifest(mdir).file(name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, cpu, peak


def test_wide_alias_bomb_refused_fast_naming_file_and_limit(write: Write) -> None:
    # 500 keys x 10^4 leaves: 5 million values from 26 KB.
    mdir = write("bomb", wide_bomb(500))
    assert (mdir / "bomb.yml").stat().st_size < 26_000
    err, cpu, peak = refuse(mdir, "bomb")
    assert err.file == "bomb.yml" and err.message.startswith("bomb.yml:")
    assert f"more than {parser.MAX_EXPANDED_NODES} YAML nodes" in err.message
    assert "MAX_EXPANDED_NODES" in err.message
    assert isinstance(err, ManifestError)
    assert cpu < 1.0, f"refusal took {cpu:.2f} s of CPU"
    assert peak < 32 * 1024 * 1024, f"refusal peaked at {peak / 2**20:.0f} MiB"


def test_nested_alias_bomb_refused_fast(write: Write) -> None:
    # 10^9 leaves from 400 bytes: the count is memoised per node, never expanded.
    mdir = write("laughs", deep_bomb())
    err, cpu, peak = refuse(mdir, "laughs")
    assert "more than" in err.message and err.file == "laughs.yml"
    assert cpu < 0.5 and peak < 8 * 1024 * 1024


def test_recursive_alias_refused(write: Write) -> None:
    mdir = write("loop", "a: &a [1, *a]\n")
    with pytest.raises(ManifestParseError, match=r"^loop\.yml:1: .*recursive alias"):
        Manifest(mdir).file("loop")


def test_bomb_refused_by_serve_manifests_check(write: Write) -> None:
    from stateengine.app.cli import check_manifests

    mdir = write("bomb", wide_bomb(500))
    write("ok", "a: 1\n")
    files, _, errors = check_manifests(mdir)
    assert files == 1 and len(errors) == 1 and "bomb.yml" in errors[0]


def test_normal_aliases_still_parse(write: Write) -> None:
    mdir = write(
        "app",
        """\
        defaults: &defaults
          _store: {client: InMemory, key: "app:user", ttl: 60}
        ports: &ports [8080, 8081]
        user:
          <<: *defaults
          id: 7
          ports: *ports
          more: [*ports, *ports]
        """,
    )
    m = Manifest(mdir)
    assert m.node("app.user.ports").static == [8080, 8081]
    assert m.node("app.user.more").static == [[8080, 8081], [8080, 8081]]
    user = m.node("app.user")
    assert user.store is not None and user.store["ttl"] == 60


def test_the_limit_is_exact(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    # root map 1 + key 'a' 1 + list 1 + 3 leaves + key 'b' 1 + the alias again 4 = 11 nodes
    mdir = write("x", "a: &l [1, 2, 3]\nb: *l\n")
    monkeypatch.setattr(parser, "MAX_EXPANDED_NODES", 11)
    assert Manifest(mdir).node("x.b").static == [1, 2, 3]
    monkeypatch.setattr(parser, "MAX_EXPANDED_NODES", 10)
    with pytest.raises(ManifestParseError, match="more than 10 YAML nodes"):
        Manifest(mdir).file("x")


# Random alias graphs: level i is a list of scalars and aliases of earlier levels, some
# levels used again under their own keys. The parser's verdict must match the expanded
# size counted independently here, and an accepted file must construct exactly that.


@st.composite
def alias_graphs(draw: st.DrawFn) -> list[list[int]]:
    """level -> its items: -1 a scalar, j >= 0 an alias of level j (< this level)."""
    levels: list[list[int]] = []
    for i in range(draw(st.integers(1, 6))):
        items = draw(st.lists(st.integers(-1, i - 1), min_size=0, max_size=8))
        levels.append(items)
    return levels


def expanded(levels: list[list[int]]) -> int:
    sizes: list[int] = []
    for items in levels:
        sizes.append(1 + sum(1 if j < 0 else sizes[j] for j in items))
    return 1 + sum(1 + s for s in sizes)  # the root map, each key and its value


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(levels=alias_graphs(), limit=st.integers(5, 400))
def test_random_alias_graphs_counted_exactly(
    write: Write, levels: list[list[int]], limit: int
) -> None:
    lines = []
    for i, items in enumerate(levels):
        body = ", ".join("0" if j < 0 else f"*l{j}" for j in items)
        lines.append(f"l{i}: &l{i} [{body}]")
    mdir = write("g", "\n".join(lines) + "\n")
    total = expanded(levels)
    saved = parser.MAX_EXPANDED_NODES
    parser.MAX_EXPANDED_NODES = limit  # type: ignore[misc]
    try:
        if total <= limit:
            m = Manifest(mdir)
            assert len(m.file("g").nodes) == 1 + len(levels)
        else:
            with pytest.raises(ManifestParseError, match=f"more than {limit} YAML nodes"):
                Manifest(mdir).file("g")
    finally:
        parser.MAX_EXPANDED_NODES = saved  # type: ignore[misc]
