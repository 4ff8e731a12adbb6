"""docs/manifests.md: every ``yaml`` snippet there is parsed here, as the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stateengine.errors import ManifestError
from stateengine.manifests.parser import Manifest

DOC = Path(__file__).resolve().parents[2] / "docs" / "manifests.md"
SNIPPETS = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)


def test_the_page_has_snippets() -> None:
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.splitlines()[0])
def test_snippet(snippet: str, tmp_path: Path) -> None:
    head = re.fullmatch(r"# (\w+)\.yml( refused)?", snippet.splitlines()[0])
    assert head, f"a snippet starts with '# NAME.yml' or '# NAME.yml refused': {snippet!r}"
    name, refused = head.group(1), bool(head.group(2))
    (tmp_path / f"{name}.yml").write_text(snippet, encoding="utf-8")
    manifest = Manifest(tmp_path)
    if refused:
        with pytest.raises(ManifestError):
            list(manifest.iter_nodes(name))
    else:
        assert list(manifest.iter_nodes(name))
