"""Manifest parsing: YAML files → nodes with qualified, inherited metadata.

A manifest directory holds ``*.yml``/``*.yaml`` files. File ``cache.yml`` is the root
node ``cache``; its nested keys are nodes addressed ``cache.user.org_id``. Keys
``_store``, ``_load`` and ``_state`` are metadata. Each node's *effective* metadata is
its parent's, overridden key by key by its own (``_store: {ttl: 60}`` on a child keeps
the parent's ``client`` and ``key``; ``_store: null`` switches the store off for the
subtree). ``_load.map``/``_load.headers``/``_load.connection`` (mappings) are merged
key by key too.

``${name}`` placeholders are qualified to absolute paths here, at parse time (seed 003):

* with a dot, ``${session.user_id}`` is absolute and kept as is;
* without, the name is looked up lexically in the same file: first among the children
  of the node that declares the metadata, then among its siblings, then upwards to the
  file root's children, so ``user._load.where: "id=${tenant_id}"`` reaches the child
  ``cache.user.tenant_id`` and ``tenant_id._load.key: ${org_id}`` reaches the sibling
  ``cache.user.org_id`` (both the seed's examples). A relative name that no enclosing
  node defines is an :class:`InvalidManifest` error, found at parse time.

Only ``yaml.SafeLoader`` is used. A file holding several YAML documents (``---``) is
rejected. Files are parsed lazily, once, on the first access to a path in them; a file
that fails to parse is not cached, so fixing it takes effect at the next access.

Thread safety: :class:`Manifest` guards its file cache with a lock; parsed nodes are
immutable and safe to share across threads. Nothing here is shared across processes.
"""

from __future__ import annotations

import datetime
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from stateengine.errors import (
    AmbiguousFile,
    InvalidManifest,
    KeyNotDefined,
    ManifestError,
    ManifestFileNotFound,
    ManifestParseError,
    SchemaError,
)
from stateengine.manifests.clients import (
    REFERENCE,
    canonical_client,
    client_adapters,
    load_client_names,
    store_client_names,
)
from stateengine.manifests.http_client import normalize_host, url_host
from stateengine.protocol import check_type_name

META_KEYS: Final = ("_store", "_load", "_state")


#: Keys each metadata block may hold (a typo is an error, not silently ignored).
STORE_FIELDS: Final = frozenset({"client", "key", "ttl", "url", "headers", "allow_hosts"})
LOAD_FIELDS: Final = frozenset(
    {
        "client",
        "key",
        "url",
        "headers",
        "connection",
        "table",
        "where",
        "map",
        "columns",
        "allow_hosts",
    }
)
STATE_FIELDS: Final = frozenset({"type", "description"})
#: Fields whose value is a template string (placeholders allowed).
_TEMPLATE_FIELDS: Final = frozenset({"key", "url", "table", "where"})
#: Mapping-valued fields merged key by key when a child overrides them.
_DEEP_FIELDS: Final = frozenset({"map", "headers", "connection"})

MAX_FILE_BYTES: Final = 4 * 1024 * 1024
MAX_NODES: Final = 100_000
MAX_DEPTH: Final = 64
#: The most YAML nodes one manifest file may expand to, each alias (``*name``) counted at
#: the full size of what it refers to, every time it is used. Without this bound a few
#: kilobytes of aliases expand into gigabytes (issue 14 item 15: a 49 KB file took 20 s
#: and 1 GiB). Counted while composing, before any value is built (:class:`_CountingLoader`).
MAX_EXPANDED_NODES: Final = 1_000_000

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*\Z")
_FILE_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*\Z")
_PATH_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)*\Z")
_PLACEHOLDER_RE: Final = re.compile(r"\$\{([^{}]*)\}")


# --- templates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A string split into literal parts and placeholder paths.

    ``parts`` alternates ``str`` literals and :class:`Ref` placeholders. A template that
    is exactly one placeholder (``"${connection.common}"``) resolves to the referenced
    value itself, of any type; otherwise values are rendered into a string.
    """

    parts: tuple[str | Ref, ...]

    @property
    def single(self) -> Ref | None:
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return self.parts[0]
        return None

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.parts if isinstance(p, Ref))

    def __str__(self) -> str:
        return "".join(p if isinstance(p, str) else f"${{{p.path}}}" for p in self.parts)


@dataclass(frozen=True)
class Ref:
    """A qualified placeholder: the absolute path of the key whose value fills it."""

    path: str


def split_template(text: str) -> list[str | str_ref]:
    """Split *text* into literals and raw placeholder names (not yet qualified).

    :raises ValueError: an unclosed ``${``, an empty or malformed placeholder name.
    """
    out: list[str | str_ref] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(text):
        literal = text[pos : m.start()]
        if "${" in literal:
            raise ValueError(f"unclosed or nested placeholder in {text!r}")
        if literal:
            out.append(literal)
        name = m.group(1).strip()
        if not _PATH_RE.match(name):
            raise ValueError(
                f"bad placeholder ${{{m.group(1)}}} in {text!r}: use ${{name}} or ${{file.a.b}}"
            )
        out.append(str_ref(name))
        pos = m.end()
    rest = text[pos:]
    if "${" in rest:
        raise ValueError(f"unclosed placeholder in {text!r}")
    if rest:
        out.append(rest)
    return out


class str_ref(str):
    """A raw placeholder name inside :func:`split_template` output."""

    __slots__ = ()


# --- nodes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One addressable key of a manifest.

    :ivar path: the absolute path, ``cache.user.org_id``.
    :ivar store: the effective ``_store`` config (inherited and overridden), or None.
    :ivar load: the effective ``_load`` config, or None.
    :ivar type: the effective ``_state.type`` name (inherited like the other metadata:
        a parent's ``type: map`` types its fields too unless they set their own), or None.
    :ivar own_store: this node sets its own store location (``client``/``key``/``url``,
        or ``_store: null``) instead of living as a field of an ancestor's value.
    :ivar own_load: this node declares its own ``_load`` (or ``_load: null``).
    :ivar static: a constant value given in the YAML (``driver: postgres``) when
        ``has_static``; returned by ``get`` when nothing is stored or loaded.
    """

    path: str
    file: str
    line: int
    parent: str | None
    children: tuple[str, ...]
    store: Mapping[str, Any] | None
    load: Mapping[str, Any] | None
    type: str | None
    own_store: bool
    own_load: bool
    static: Any = field(default=None)
    has_static: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ManifestFile:
    """A parsed manifest file: its nodes by absolute path."""

    name: str
    source: str
    nodes: dict[str, Node]


class Manifest:
    """The manifests of one directory, parsed lazily per file and cached.

    :param directory: the manifest directory.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._files: dict[str, ManifestFile] = {}
        self._lock = threading.Lock()
        #: How many times each file was parsed (tests check "first access only").
        self.parse_count: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Manifest({str(self.directory)!r})"

    def file(self, name: str) -> ManifestFile:
        """Parse (first access only) and return the manifest file *name*.

        :raises ManifestFileNotFound: no ``name.yml``/``name.yaml``.
        :raises AmbiguousFile: both exist.
        :raises ManifestParseError, InvalidManifest: the file is broken (file and line named).
        """
        with self._lock:
            cached = self._files.get(name)
            if cached is not None:
                return cached
            parsed = self._parse_file(name)
            self._files[name] = parsed
            self.parse_count[name] = self.parse_count.get(name, 0) + 1
            return parsed

    def node(self, path: str) -> Node:
        """The node at *path* (``file.a.b``; ``file`` alone is the file's root node).

        :raises KeyNotDefined: no manifest defines *path* (:class:`ManifestFileNotFound`
            when its file is missing).
        """
        if not isinstance(path, str) or not _PATH_RE.match(path):
            raise KeyNotDefined(f"{path!r} is not a manifest path (use file.node.child)")
        mf = self.file(path.split(".", 1)[0])
        node = mf.nodes.get(path)
        if node is None:
            raise KeyNotDefined(f"{path!r} is not defined in {mf.source}")
        return node

    def iter_nodes(self, name: str) -> Iterator[Node]:
        return iter(self.file(name).nodes.values())

    # --- parsing ------------------------------------------------------------------------

    def _locate(self, name: str) -> Path:
        if not _FILE_RE.match(name):
            raise ManifestFileNotFound(f"{name!r} is not a manifest file name")
        found = [self.directory / f"{name}{ext}" for ext in (".yml", ".yaml")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise ManifestFileNotFound(f"no manifest {name}.yml or {name}.yaml in {self.directory}")
        if len(found) > 1:
            raise AmbiguousFile(
                f"both {found[0].name} and {found[1].name} exist in {self.directory};"
                " paths ignore extensions, so remove or rename one",
                file=found[1].name,
            )
        return found[0]

    def _parse_file(self, name: str) -> ManifestFile:
        path = self._locate(name)
        source = path.name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ManifestParseError(f"{source}: cannot read: {exc}", file=source) from None
        if len(raw) > MAX_FILE_BYTES:
            raise ManifestParseError(
                f"{source}: {len(raw)} bytes exceeds the {MAX_FILE_BYTES}-byte manifest limit",
                file=source,
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestParseError(f"{source}: not UTF-8: {exc}", file=source) from None
        root = _compose(text, source)
        return _Builder(name, source).build(root)


def _compose(text: str, source: str) -> yaml.Node | None:
    """Compose the single YAML document of *text* with the safe loader."""
    loader = _CountingLoader(text, source)
    try:
        if not loader.check_node():
            return None
        node = loader.get_node()
        if loader.check_node():
            nxt = loader.peek_event()  # type: ignore[no-untyped-call]
            line = nxt.start_mark.line + 1 if nxt.start_mark else None
            raise ManifestParseError(
                f"{source}:{line}: a second YAML document ('---'); a manifest file holds"
                " exactly one document",
                file=source,
                line=line,
            )
        return node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestParseError(
            f"{source}:{line}: YAML parse error: {problem}", file=source, line=line
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestParseError(f"{source}: YAML error: {exc}", file=source) from None
    except RecursionError:
        raise ManifestParseError(f"{source}: YAML nested too deeply", file=source) from None
    finally:
        loader.dispose()


class _CountingLoader(yaml.SafeLoader):
    """The safe loader, counting the size the document expands to while composing it.

    The composer shares one node object between an anchor and its aliases, so the node
    graph is as small as the file, but every alias stands for a full copy of its node
    once values are built. ``expanded`` counts nodes as composed, adding an alias's
    whole size (known once its anchor's node is complete) at each use; composition stops
    with a :class:`ManifestParseError` as soon as the count passes
    :data:`MAX_EXPANDED_NODES`, before any value is constructed, so a refusal costs
    time and memory proportional to the part of the file read so far.

    Rejected alternatives: counting in the constructor builds up to the limit's worth of
    Python objects before it can refuse; refusing all aliases breaks ordinary anchors
    and merge keys (``<<: *defaults``).
    """

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.expanded = 0
        #: id(node) -> its expanded size, for nodes composed completely. An anchored node
        #: not in here yet is still being composed: an alias to it is recursive.
        self.sizes: dict[int, int] = {}

    def _refuse(self, mark: yaml.Mark | None, message: str) -> ManifestParseError:
        line = mark.line + 1 if mark is not None else None
        return ManifestParseError(f"{self.source}:{line}: {message}", file=self.source, line=line)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is the composer's error
                size = self.sizes.get(id(target))
                if size is None:
                    raise self._refuse(
                        event.start_mark,
                        f"alias *{event.anchor} is inside the node it refers to (a recursive"
                        " alias); a manifest is a finite tree",
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        before = self.expanded
        self._count(1, self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        node = super().compose_node(parent, index)
        self.sizes[id(node)] = self.expanded - before
        return node

    def _count(self, size: int, mark: yaml.Mark | None) -> None:
        self.expanded += size
        if self.expanded > MAX_EXPANDED_NODES:
            raise self._refuse(
                mark,
                f"the manifest expands to more than {MAX_EXPANDED_NODES} YAML nodes (each"
                " alias counted at the size of what it refers to, at every use; limit"
                " MAX_EXPANDED_NODES in stateengine.manifests.parser)",
            )


@dataclass
class _Raw:
    """A node as written: its own (qualified) metadata, before inheritance."""

    path: str
    line: int
    children: dict[str, _Raw]
    meta: dict[str, dict[str, Any] | None]
    static: Any = None
    has_static: bool = False
    meta_lines: dict[str, int] = field(default_factory=dict)


class _Builder:
    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.count = 0
        self.loader = yaml.SafeLoader("")

    def error(self, line: int | None, message: str) -> InvalidManifest:
        return InvalidManifest(f"{self.source}:{line}: {message}", file=self.source, line=line)

    def build(self, root: yaml.Node | None) -> ManifestFile:
        if root is None or (
            isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null"
        ):
            raw = _Raw(self.name, 1, {}, {})
        elif not isinstance(root, yaml.MappingNode):
            raise self.error(
                root.start_mark.line + 1, "the top level of a manifest must be a mapping"
            )
        else:
            raw = self.walk(root, self.name, 0, 1)
        self.qualify(raw, [])
        nodes: dict[str, Node] = {}
        self.flatten(raw, None, {"_store": None, "_load": None, "_state": None}, nodes)
        return ManifestFile(self.name, self.source, nodes)

    # step 1: the tree as written, with metadata validated ----------------------------

    def construct(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise self.error(node.start_mark.line + 1, f"bad value: {exc}") from None
        except (RecursionError, TypeError, ValueError) as exc:
            raise self.error(node.start_mark.line + 1, f"bad value: {exc}") from None

    def walk(self, node: yaml.MappingNode, path: str, depth: int, line: int) -> _Raw:
        if depth > MAX_DEPTH:
            raise self.error(node.start_mark.line + 1, f"nodes nested deeper than {MAX_DEPTH}")
        try:
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys
        except yaml.YAMLError as exc:
            raise self.error(node.start_mark.line + 1, f"bad merge key: {exc}") from None
        raw = _Raw(path, line, {}, {})
        for key_node, value_node in node.value:
            self.count += 1
            if self.count > MAX_NODES:
                raise self.error(key_node.start_mark.line + 1, f"more than {MAX_NODES} keys")
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(line, f"under {path}: a key must be a plain name")
            key = self.construct(key_node)
            if not isinstance(key, str):
                raise self.error(
                    line, f"under {path}: key {key!r} is a {type(key).__name__}, not a name"
                )
            if key in raw.children or key in raw.meta:
                raise self.error(line, f"under {path}: duplicate key {key!r}")
            if key.startswith("_"):
                if key not in META_KEYS:
                    raise self.error(
                        line,
                        f"{path}: unknown metadata key {key!r}; metadata keys are"
                        f" {', '.join(META_KEYS)}",
                    )
                raw.meta[key] = self.meta(key, value_node, f"{path}.{key}")
                raw.meta_lines[key] = line
                continue
            if not _NAME_RE.match(key):
                raise self.error(
                    line,
                    f"under {path}: bad node name {key!r}: use letters, digits, '_' and '-'"
                    " (a dot separates levels in a path)",
                )
            child_path = f"{path}.{key}"
            if isinstance(value_node, yaml.MappingNode):
                raw.children[key] = self.walk(value_node, child_path, depth + 1, line)
            else:
                value = self.construct(value_node)
                child = _Raw(child_path, line, {}, {})
                if value is not None:
                    child.static, child.has_static = _plain(value, self, line), True
                raw.children[key] = child
        load = raw.meta.get("_load")
        if load and isinstance(load.get("map"), dict):
            # Each `map` key is a field of this node, addressable even when not written out.
            for name in load["map"]:
                if name not in raw.children:
                    raw.children[name] = _Raw(f"{path}.{name}", raw.line, {}, {})
        return raw

    def meta(self, key: str, node: yaml.Node, where: str) -> dict[str, Any] | None:
        line = node.start_mark.line + 1
        value = self.construct(node)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(
                line, f"{where} must be a mapping or null, not a {type(value).__name__}"
            )
        allowed = {"_store": STORE_FIELDS, "_load": LOAD_FIELDS, "_state": STATE_FIELDS}[key]
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str) or k not in allowed:
                raise self.error(
                    line, f"{where}: unknown field {k!r}; allowed: {', '.join(sorted(allowed))}"
                )
            out[k] = self.meta_field(key, k, v, f"{where}.{k}", line)
        return out

    def meta_field(self, block: str, k: str, v: Any, where: str, line: int) -> Any:
        if v is None:
            return None  # an explicit null removes an inherited field
        if k == "client":
            canonical = None
            if isinstance(v, str):
                canonical = REFERENCE if v.lower() == REFERENCE.lower() else canonical_client(v)
            allowed = store_client_names() if block == "_store" else load_client_names()
            if canonical not in allowed:
                raise self.error(
                    line, f"{where}: unknown client {v!r}; use one of {', '.join(allowed)}"
                )
            return canonical
        if k == "ttl":
            if type(v) not in (int, float) or not v > 0 or v != v or v == float("inf"):
                raise self.error(line, f"{where}: ttl must be a positive number of seconds")
            return v
        if k == "type":
            try:
                return check_type_name(v, where)
            except SchemaError as exc:
                raise self.error(line, exc.message) from None
        if k == "description":
            if not isinstance(v, str):
                raise self.error(line, f"{where} must be a string")
            return v
        if k in _TEMPLATE_FIELDS:
            if type(v) is int:
                v = str(v)
            if not isinstance(v, str):
                raise self.error(line, f"{where} must be a string, not a {type(v).__name__}")
            return self.template(v, where, line)
        if k == "headers":
            if not isinstance(v, dict) or not all(
                isinstance(a, str) and isinstance(b, str) for a, b in v.items()
            ):
                raise self.error(line, f"{where} must map header names to strings")
            return {a: self.template(b, f"{where}.{a}", line) for a, b in v.items()}
        if k == "map":
            if not isinstance(v, dict) or not all(
                isinstance(a, str) and _NAME_RE.match(a) and isinstance(b, str) and b
                for a, b in v.items()
            ):
                raise self.error(line, f"{where} must map node names to source field names")
            return dict(v)
        if k == "allow_hosts":
            hosts = [normalize_host(h) if isinstance(h, str) else None for h in v or [None]]
            if not isinstance(v, list) or None in hosts:
                raise self.error(
                    line,
                    f"{where} must be a non-empty list of host names or addresses (no"
                    " scheme, port, path or wildcard)",
                )
            return sorted(set(hosts))
        if k == "columns":
            if not isinstance(v, list) or not all(isinstance(c, str) and c for c in v):
                raise self.error(line, f"{where} must be a list of column names")
            return list(v)
        if k == "connection":
            if isinstance(v, str):
                return self.template(v, where, line)
            if isinstance(v, dict) and all(isinstance(a, str) for a in v):
                out: dict[str, Any] = {}
                for a, b in v.items():
                    if isinstance(b, str):
                        out[a] = self.template(b, f"{where}.{a}", line)
                    elif b is None or type(b) in (int, float, bool):
                        out[a] = b
                    else:
                        raise self.error(line, f"{where}.{a} must be a scalar")
                return out
            raise self.error(line, f"{where} must be a string (DSN or ${{path}}) or a mapping")
        raise self.error(line, f"{where}: unexpected field")  # pragma: no cover

    def template(self, text: str, where: str, line: int) -> Template:
        try:
            parts = split_template(text)
        except ValueError as exc:
            raise self.error(line, f"{where}: {exc}") from None
        # Not qualified yet: relative names are looked up once the whole tree is known.
        return Template(tuple(Ref(p) if isinstance(p, str_ref) else p for p in parts))

    # step 2: qualify relative placeholders lexically -----------------------------------

    def qualify(self, raw: _Raw, scopes: list[_Raw]) -> None:
        chain = [*scopes, raw]  # enclosing nodes, outermost first
        for block, config in raw.meta.items():
            if config is None:
                continue
            for k, v in list(config.items()):
                line = raw.meta_lines.get(block, raw.line)
                config[k] = self.qualify_value(v, chain, f"{raw.path}.{block}.{k}", line)
        for child in raw.children.values():
            self.qualify(child, chain)

    def qualify_value(self, v: Any, chain: list[_Raw], where: str, line: int) -> Any:
        if isinstance(v, Template):
            return Template(
                tuple(
                    Ref(self.qualify_name(p.path, chain, where, line)) if isinstance(p, Ref) else p
                    for p in v.parts
                )
            )
        if isinstance(v, dict):
            return {a: self.qualify_value(b, chain, f"{where}.{a}", line) for a, b in v.items()}
        return v

    def qualify_name(self, name: str, chain: list[_Raw], where: str, line: int) -> str:
        if "." in name:
            return name  # absolute, as written (seed 003)
        for scope in reversed(chain):  # the declaring node's children, its siblings, ...
            if name in scope.children:
                return f"{scope.path}.{name}"
        raise self.error(
            line,
            f"{where}: placeholder ${{{name}}} names no node of {self.source} enclosing"
            f" {chain[-1].path}; write an absolute path (file.node) for another file",
        )

    # step 3: inherit metadata and emit nodes --------------------------------------------

    def flatten(
        self,
        raw: _Raw,
        parent: str | None,
        inherited: dict[str, dict[str, Any] | None],
        out: dict[str, Node],
    ) -> None:
        effective = dict(inherited)
        for block in META_KEYS:
            if block in raw.meta:
                effective[block] = _merge(inherited[block], raw.meta[block])
        # SPEC §4: _state is inherited like _store/_load, the child overriding.
        state = effective["_state"]
        own_store = "_store" in raw.meta and (
            raw.meta["_store"] is None
            or any(k in raw.meta["_store"] for k in ("client", "key", "url"))
        )
        own_load = "_load" in raw.meta
        store, load = effective["_store"], effective["_load"]
        adapters = client_adapters()
        for block, config in (("_store", store), ("_load", load)):
            adapter = adapters.get(config.get("client") or "") if config is not None else None
            if config is not None and adapter is not None and adapter.location == "url":
                self.check_http(raw, block, config)
        if store is not None and store.get("ttl") is not None:
            adapter = adapters.get(store.get("client") or "")
            if adapter is not None and not adapter.ttl:
                raise self.error(raw.line, f"{raw.path}: a {store['client']} store has no TTL")
        node = Node(
            path=raw.path,
            file=self.source,
            line=raw.line,
            parent=parent,
            children=tuple(raw.children),
            store=store,
            load=load,
            type=state.get("type") if state else None,
            own_store=own_store,
            own_load=own_load,
            static=raw.static,
            has_static=raw.has_static,
        )
        out[raw.path] = node
        for child in raw.children.values():
            self.flatten(child, raw.path, effective, out)

    def check_http(self, raw: _Raw, block: str, config: Mapping[str, Any]) -> None:
        """A URL-located block's URL (``Http``) must say where it may go (docs/manifests.md
        "Http")."""
        url = config.get("url")
        if not isinstance(url, Template):
            return  # no url: the load or store reports ConfigMissing when used
        literal = url.parts[0] if url.parts and isinstance(url.parts[0], str) else ""
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", literal)
        line = raw.meta_lines.get(block, raw.line)
        if scheme and scheme.group(1).lower() not in ("http", "https"):
            raise self.error(line, f"{raw.path}.{block}.url: only http and https URLs")
        if not config.get("allow_hosts") and url_host(url.parts) is None:
            raise self.error(
                line,
                f"{raw.path}.{block}.url {str(url)!r} takes its host from a placeholder;"
                f" list the hosts it may reach in {block}.allow_hosts",
            )


def _merge(parent: dict[str, Any] | None, own: dict[str, Any] | None) -> dict[str, Any] | None:
    """The child's block over the parent's, key by key (mapping fields merged too)."""
    if own is None:
        return None
    out = dict(parent or {})
    for k, v in own.items():
        if v is None:
            out.pop(k, None)
        elif k in _DEEP_FIELDS and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _plain(value: Any, builder: _Builder, line: int) -> Any:
    """A static YAML value as a msgpack value (dates become ISO strings)."""
    seen = 0

    def conv(v: Any, depth: int) -> Any:
        nonlocal seen
        seen += 1
        if depth > MAX_DEPTH or seen > MAX_NODES:
            raise builder.error(line, "static value nested too deeply or too large")
        if v is None or isinstance(v, (bool, int, float, str, bytes)):
            return v
        if isinstance(v, (datetime.date, datetime.datetime)):
            return v.isoformat()
        if isinstance(v, list):
            return [conv(x, depth + 1) for x in v]
        if isinstance(v, dict):
            out = {}
            for a, b in v.items():
                if not isinstance(a, (str, int)) or isinstance(a, bool):
                    raise builder.error(line, f"static map key {a!r} must be a string")
                out[a] = conv(b, depth + 1)
            return out
        if isinstance(v, set):
            return [conv(x, depth + 1) for x in sorted(v, key=repr)]
        raise builder.error(line, f"static value of type {type(v).__name__} is not supported")

    return conv(value, 0)


__all__ = [
    "META_KEYS",
    "Manifest",
    "ManifestError",
    "ManifestFile",
    "Node",
    "Ref",
    "Template",
    "split_template",
]
