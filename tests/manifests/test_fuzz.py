"""Hypothesis: bad manifests always raise a ManifestError subclass with a message.

Random YAML structures (valid or not as manifests), bad metadata of every shape, bad
placeholders and raw text noise: parsing either succeeds or raises a
:class:`ManifestError` naming the file, never another exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.errors import InvalidManifest, KeyNotDefined, ManifestError
from stateengine.manifests.parser import Manifest

names = st.one_of(
    st.sampled_from(["a", "b", "user", "_store", "_load", "_state", "_x", "a.b", "", "1"]),
    st.text(min_size=0, max_size=6),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["${a}", "${", "${}", "x${a.b}y", "${ a }", "${a${b}}", "$}{", "${1}"]),
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(names, st.integers(0, 3), st.booleans()), inner, max_size=4),
    ),
    max_leaves=25,
)
clients = st.sampled_from(
    ["InMemory", "KVS", "File", "Http", "Env", "Db", "State", "http", "Redis", 5, None, ["KVS"]]
)
meta_fields = st.dictionaries(
    st.sampled_from(
        [
            "client",
            "key",
            "ttl",
            "url",
            "headers",
            "map",
            "table",
            "where",
            "connection",
            "columns",
            "type",
            "bogus",
            3,
        ]
    ),
    st.one_of(clients, scalars, yaml_values),
    max_size=5,
)
meta_blocks = st.fixed_dictionaries(
    {},
    optional={
        "_store": st.one_of(meta_fields, scalars),
        "_load": st.one_of(meta_fields, scalars),
        "_state": st.one_of(
            st.fixed_dictionaries(
                {
                    "type": st.one_of(
                        st.sampled_from(["integer", "int", "string?", "map", "??", ""]), scalars
                    )
                }
            ),
            scalars,
        ),
    },
)


@st.composite
def manifests(draw: st.DrawFn) -> Any:
    def node(depth: int) -> Any:
        out: dict[Any, Any] = dict(draw(meta_blocks))
        if depth < 3:
            for name in draw(st.lists(names, max_size=3)):
                out[name] = node(depth + 1) if draw(st.booleans()) else draw(yaml_values)
        return out

    if draw(st.booleans()):
        return node(0)
    return draw(yaml_values)


def _check(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.yml").write_text(text, encoding="utf-8")
        manifest = Manifest(tmp)
        try:
            mf = manifest.file("m")
        except ManifestError as exc:
            assert exc.message, "a ManifestError must carry a message"
            assert "m.yml" in exc.message
            return
        for path in list(mf.nodes):
            assert manifest.node(path).path == path
        try:
            manifest.node("m.no_such_node_here")
        except KeyNotDefined as exc:
            assert exc.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_random_structures_only_raise_manifest_errors(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    _check(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"%@`#,?\n  ab_$.0")), max_size=80))
def test_random_text_only_raises_manifest_errors(text: str) -> None:
    _check(text)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["key", "url", "table", "where"]),
    st.text(alphabet=st.sampled_from(list("${}. ab1_-")), min_size=1, max_size=14),
)
def test_bad_placeholders_are_invalid_manifest(field: str, text: str) -> None:
    doc = {"a": {"_load": {"client": "Http", field: text}}, "b": 1}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        try:
            Manifest(tmp).file("m")
        except InvalidManifest as exc:
            assert exc.line is not None and "m.yml" in exc.message


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]")
    _check("\n".join(lines) + "\n")


def test_recursive_alias_is_a_manifest_error() -> None:
    _check("a: &x\n  b: *x\n")
    _check("a: &y [*y]\n")
