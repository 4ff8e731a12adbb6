"""Manifest qualification and inheritance against an independent model (seed 003).

Hypothesis generates manifest trees (nested nodes with ``_store``/``_load``/``_state``
and ``${name}`` placeholders), writes them as YAML files and parses them with
:class:`stateengine.manifests.Manifest`. The model below is written from the rules, not
from the parser:

* a file ``cache.yml`` is the node ``cache``; nested keys are ``cache.a.b``;
* ``_store``/``_load`` of a node are its parent's effective block overridden key by key
  by its own; a field set to null removes the inherited field; a block set to null
  switches it off for the subtree;
* a placeholder with a dot is absolute and kept; one without is qualified lexically
  against the node that declares it: its children first, then its siblings, then each
  enclosing level up to the file's top level (SPEC §4; this is how both seed examples,
  ``user._load.where: ${tenant_id}`` → ``cache.user.tenant_id`` and
  ``tenant_id._load.key: ${org_id}`` → ``cache.user.org_id``, come out); a name no
  enclosing level defines is a manifest error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine.errors import InvalidManifest
from stateengine.manifests import Manifest

NAMES = ["a", "b", "id", "org", "user"]
ABSOLUTE = ["other.x", "cache.a", "session.user_id"]


# --- generated trees --------------------------------------------------------------------------


def template() -> st.SearchStrategy[str]:
    """``k``, ``k:${name}``, ``${name}`` ... with relative and absolute placeholders."""
    part = st.one_of(
        st.sampled_from(["k", ":", "x-"]),
        st.sampled_from(NAMES + ABSOLUTE).map(lambda n: "${" + n + "}"),
    )
    return st.lists(part, min_size=1, max_size=3).map("".join)


def block(kind: str) -> st.SearchStrategy[dict[str, Any] | None]:
    clients = ["InMemory", "KVS"] if kind == "_store" else ["Env", "State", "File", "KVS"]
    fields: dict[str, st.SearchStrategy[Any]] = {
        "client": st.sampled_from(clients),
        "key": template(),
    }
    if kind == "_store":
        fields["ttl"] = st.integers(1, 100)
    else:
        fields["where"] = template()
    maybe_null = {k: st.one_of(st.none(), v) for k, v in fields.items()}
    return st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional=maybe_null),  # type: ignore[arg-type]
    )


@st.composite
def tree(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for kind in ("_store", "_load"):
        if draw(st.booleans()):
            node[kind] = draw(block(kind))
    if draw(st.booleans()):
        node["_state"] = {"type": draw(st.sampled_from(["integer", "string", "map"]))}
    if depth < 3:
        names = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
        for name in names:
            node[name] = draw(tree(depth + 1))
    return node


# --- the model ----------------------------------------------------------------------------------


class Unresolved(Exception):
    pass


def qualify(text: str, scopes: list[tuple[str, dict[str, Any]]]) -> str:
    """*text*, its ``${name}``s qualified; *scopes*: enclosing (path, node), outermost first."""
    out, rest = [], text
    while "${" in rest:
        head, _, tail = rest.partition("${")
        name, _, rest = tail.partition("}")
        out.append(head)
        if "." not in name:
            for path, node in reversed(scopes):
                if name in node and not name.startswith("_"):
                    name = f"{path}.{name}"
                    break
            else:
                raise Unresolved(name)
        out.append("${" + name + "}")
    out.append(rest)
    return "".join(out)


def merge(parent: dict[str, Any] | None, own: dict[str, Any] | None) -> dict[str, Any] | None:
    if own is None:
        return None
    out = dict(parent or {})
    for k, v in own.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def model(
    name: str, root: dict[str, Any], inherit_state: bool = False
) -> dict[str, dict[str, Any]]:
    """Path → ``{"_store": ..., "_load": ..., "type": ...}`` (templates as qualified text).

    :raises Unresolved: a relative placeholder names no enclosing node.
    """
    expected: dict[str, dict[str, Any]] = {}

    def walk(
        path: str,
        node: dict[str, Any],
        scopes: list[tuple[str, dict[str, Any]]],
        inherited: dict[str, Any],
    ) -> None:
        chain = [*scopes, (path, node)]
        effective = dict(inherited)
        for kind in ("_store", "_load"):
            if kind in node:
                own = node[kind]
                if own is not None:
                    own = {
                        k: qualify(v, chain) if k in ("key", "where") and v is not None else v
                        for k, v in own.items()
                    }
                effective[kind] = merge(inherited[kind], own)
        state = node.get("_state")
        effective["type"] = (
            state["type"] if state else (inherited["type"] if inherit_state else None)
        )
        expected[path] = effective
        for child, sub in node.items():
            if not child.startswith("_"):
                walk(f"{path}.{child}", sub, chain, effective)

    walk(name, root, [], {"_store": None, "_load": None, "type": None})
    return expected


def parsed(mdir: Path, name: str) -> dict[str, dict[str, Any]]:
    def text(config: Any) -> Any:
        if config is None:
            return None
        return {k: str(v) if k in ("key", "where") else v for k, v in config.items()}

    return {
        n.path: {"_store": text(n.store), "_load": text(n.load), "type": n.type}
        for n in Manifest(mdir).iter_nodes(name)
    }


def check(root: dict[str, Any], inherit_state: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mdir = Path(tmp)
        (mdir / "cache.yml").write_text(yaml.safe_dump(root, sort_keys=False))
        try:
            want = model("cache", root, inherit_state)
        except Unresolved as exc:
            with pytest.raises(InvalidManifest, match=rf"\$\{{{exc.args[0]}\}}"):
                parsed(mdir, "cache")
            return
        assert parsed(mdir, "cache") == want


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(tree())
def test_qualification_and_inheritance_match_the_model(root: dict[str, Any]) -> None:
    """SPEC §4: _store, _load and _state are all inherited, the child overriding."""
    check(root, inherit_state=True)


def test_the_seed_example_through_the_model() -> None:
    root = yaml.safe_load(
        """
        user:
          _store: {client: InMemory, key: "user:${id}"}
          _load: {client: Db, where: "id=${tenant_id}"}
          id: {_load: {client: Env, key: USER_ID}}
          org_id: {_load: {client: Env, key: ORG}}
          tenant_id: {_load: {client: State, key: "${org_id}"}}
        """
    )
    want = model("cache", root)
    assert want["cache.user"]["_load"]["where"] == "id=${cache.user.tenant_id}"
    assert want["cache.user.tenant_id"]["_load"]["key"] == "${cache.user.org_id}"
    check(root, inherit_state=True)
