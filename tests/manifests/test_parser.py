"""Manifest parsing: inheritance, qualification, every ManifestError case with file and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stateengine.errors import (
    AmbiguousFile,
    InvalidManifest,
    KeyNotDefined,
    ManifestError,
    ManifestFileNotFound,
    ManifestParseError,
)
from stateengine.manifests.parser import Manifest, Ref, Template

Write = Callable[..., Path]

CACHE = """\
_store:
  client: KVS
  ttl: 60
user:
  _store:
    key: "user:${session.user_id}"
    ttl: 3600
  _load:
    client: db
    connection: ${connection.main}
    table: users
    where: "id=${session.user_id} and tenant=${tenant_id}"
    map: {org_id: org, name: name}
  org_id:
    _state: {type: integer}
  tenant_id:
    _state: {type: "integer?"}
    _load:
      client: State
      key: ${org_id}
  active:
    _store:
      key: "active:${org_id}"
      ttl: null
  health:
    _store: null
    _load:
      client: HTTP
      url: "http://h/${tenant_id}"
"""


def test_inheritance_and_override(write: Write) -> None:
    m = Manifest(write("cache", CACHE))
    user = m.node("cache.user")
    assert user.store is not None and user.store["client"] == "KVS"  # from the file root
    assert user.store["ttl"] == 3600  # overridden
    active = m.node("cache.user.active")
    assert active.store is not None
    assert active.store["client"] == "KVS" and "ttl" not in active.store  # null removes
    assert str(active.store["key"]) == "active:${cache.user.org_id}"
    assert active.load is not None and str(active.load["table"]) == "users"  # inherited _load
    tenant = m.node("cache.user.tenant_id")
    assert tenant.load is not None and tenant.load["client"] == "State"
    assert str(tenant.load["table"]) == "users"  # merged key by key with the parent's _load
    assert tenant.type == "integer?" and tenant.own_load and not tenant.own_store
    assert m.node("cache.user.health").store is None  # _store: null switches it off
    assert m.node("cache.user.health").load["client"] == "Http"  # type: ignore[index]
    assert m.node("cache.user").type is None  # _state.type is per node
    # map keys are fields even when not written out
    assert m.node("cache.user.name").parent == "cache.user"


def test_placeholders_qualified(write: Write) -> None:
    m = Manifest(write("cache", CACHE))
    user = m.node("cache.user")
    assert user.load is not None and user.store is not None
    # with a dot: absolute as written
    assert user.store["key"] == Template(("user:", Ref("session.user_id")))
    assert user.load["connection"].single == Ref("connection.main")
    # without: the child of the declaring node (seed: ${tenant_id} under user._load.where)
    assert str(user.load["where"]) == "id=${session.user_id} and tenant=${cache.user.tenant_id}"
    # without: a sibling (seed: tenant_id._load.key ${org_id} → cache.user.org_id)
    tenant = m.node("cache.user.tenant_id")
    assert tenant.load is not None and tenant.load["key"].single == Ref("cache.user.org_id")
    health = m.node("cache.user.health")
    assert str(health.load["url"]) == "http://h/${cache.user.tenant_id}"  # type: ignore[index]


def test_relative_placeholder_reaches_up_to_file_root(write: Write) -> None:
    m = Manifest(
        write(
            "app",
            """
            region: eu
            a:
              b:
                c:
                  _store: {client: InMemory, key: "k:${region}"}
            """,
        )
    )
    store = m.node("app.a.b.c").store
    assert store is not None and str(store["key"]) == "k:${app.region}"
    assert m.node("app.region").static == "eu"


def test_lazy_parse_once_per_file(write: Write) -> None:
    mdir = write("cache", CACHE)
    write("other", "x: 1\n")
    m = Manifest(mdir)
    assert m.parse_count == {}
    m.node("cache.user")
    m.node("cache.user.org_id")
    assert m.parse_count == {"cache": 1}
    m.node("other.x")
    assert m.parse_count == {"cache": 1, "other": 1}


def test_key_not_defined(write: Write) -> None:
    m = Manifest(write("cache", CACHE))
    with pytest.raises(KeyNotDefined, match=r"cache\.user\.nope.*cache\.yml"):
        m.node("cache.user.nope")
    for bad in ("", "cache..user", ".cache", "cache.", "ca che"):
        with pytest.raises(KeyNotDefined):
            m.node(bad)


def test_file_not_found(write: Write) -> None:
    m = Manifest(write("cache", CACHE))
    with pytest.raises(ManifestFileNotFound, match=r"nofile\.yml or nofile\.yaml") as info:
        m.node("nofile.x")
    assert isinstance(info.value, ManifestError) and isinstance(info.value, KeyNotDefined)


def test_ambiguous_file(write: Write) -> None:
    write("cache", "a: 1\n", ".yml")
    mdir = write("cache", "a: 2\n", ".yaml")
    with pytest.raises(AmbiguousFile, match=r"cache\.yml and cache\.yaml") as info:
        Manifest(mdir).node("cache.a")
    assert info.value.file == "cache.yaml"


def test_yaml_extension_alone_works(write: Write) -> None:
    assert Manifest(write("conf", "a: 2\n", ".yaml")).node("conf.a").static == 2


def test_parse_error_names_file_and_line(write: Write) -> None:
    mdir = write("cache", "a:\n  b: 1\n  c: [1, 2\nd: 3\n")
    with pytest.raises(ManifestParseError, match=r"^cache\.yml:\d+: YAML parse error") as info:
        Manifest(mdir).node("cache.a")
    assert info.value.file == "cache.yml" and info.value.line is not None


def test_multiple_documents_rejected(write: Write) -> None:
    mdir = write("cache", "a: 1\n---\nb: 2\n")
    with pytest.raises(ManifestParseError, match=r"cache\.yml:2: a second YAML document") as info:
        Manifest(mdir).node("cache.a")
    assert info.value.line == 2


def test_unsafe_tags_refused(write: Write) -> None:
    mdir = write("cache", "a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InvalidManifest, match=r"cache\.yml:1"):
        Manifest(mdir).node("cache.a")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("- 1\n- 2\n", 1, "top level of a manifest must be a mapping"),
        ("a:\n  _stroe: {}\n", 2, "unknown metadata key '_stroe'"),
        ("a:\n  _store: 5\n", 2, "must be a mapping or null"),
        ("a:\n  _store: {client: Redis}\n", 2, "unknown client 'Redis'"),
        ("a:\n  _load: {client: Nope}\n", 2, "unknown client 'Nope'"),
        ("a:\n  _store: {client: InMemory, kee: x}\n", 2, "unknown field 'kee'"),
        ("a:\n  _store: {client: KVS, key: k, ttl: -1}\n", 2, "ttl must be a positive"),
        ("a:\n  _store: {client: KVS, key: k, ttl: yes}\n", 2, "ttl must be a positive"),
        ("a:\n\n  _state: {type: int}\n", 3, "unknown type 'int'"),
        ("a:\n  _store: {client: KVS, key: 'x:${'}\n", 2, "unclosed"),
        ("a:\n  _store: {client: KVS, key: 'x:${}'}\n", 2, "bad placeholder"),
        ("a:\n  _store: {client: KVS, key: 'x:${a b}'}\n", 2, "bad placeholder"),
        ("a:\n  _store: {client: KVS, key: 'x:${nothere}'}\n", 2, "names no node"),
        ("a:\n  _store: {client: KVS, key: [1]}\n", 2, "must be a string"),
        ("a:\n  _load: {client: Db, map: {x: 1}}\n", 2, "map node names"),
        ("a:\n  1: x\n", 2, "key 1 is a int"),
        ("a:\n  b.c: x\n", 2, "bad node name 'b.c'"),
        ("a:\n  b: 1\n  b: 2\n", 3, "duplicate key 'b'"),
        ("a:\n  _store: {client: File, key: k, ttl: 5}\n", 1, "a File store has no TTL"),
    ],
)
def test_invalid_manifest_cases(write: Write, text: str, line: int, message: str) -> None:
    mdir = write("cache", text)
    with pytest.raises(InvalidManifest) as info:
        Manifest(mdir).node("cache")
    assert message in info.value.message
    assert info.value.message.startswith(f"cache.yml:{line}:")
    assert info.value.file == "cache.yml" and info.value.line == line


def test_broken_file_not_cached(write: Write) -> None:
    mdir = write("cache", "a: [\n")
    m = Manifest(mdir)
    with pytest.raises(ManifestParseError):
        m.node("cache.a")
    write("cache", "a: 1\n")
    assert m.node("cache.a").static == 1


def test_empty_file_is_an_empty_root(write: Write) -> None:
    m = Manifest(write("empty", ""))
    assert m.node("empty").children == ()
