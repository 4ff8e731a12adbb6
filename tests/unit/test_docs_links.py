"""README.md and docs/: every relative link and anchor resolves, no page points at a
document the reader does not have, and every runnable snippet has a test that runs it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: page → the test files that run its ``python``/``sh`` snippets (each reads the page);
#: a README section not listed under its own name is not allowed to hold a snippet.
RUNNERS = {
    "README.md#two-commands": ["tests/unit/test_readme.py"],  # the demo: test_demo.py
    "README.md#a-five-minute-tour": ["tests/cross_process/test_doc_snippets.py"],
    "README.md#wire-protocol": ["tests/cross_process/test_doc_snippets.py"],
    "README.md#several-machines": ["tests/cluster/test_cluster_doc.py"],
    "docs/client.md": ["tests/cross_process/test_doc_snippets.py"],
    "docs/protocol.md": ["tests/cross_process/test_doc_snippets.py"],
    "docs/server.md": ["tests/cross_process/test_doc_snippets.py"],
    "docs/manifests.md": ["tests/cross_process/test_doc_snippets.py"],
    "docs/http.md": ["tests/http/test_feed_and_auth.py"],
    "docs/testing.md": ["tests/kit/test_docs.py"],
    "docs/extending.md": ["tests/unit/test_store_plugin.py"],
    "docs/operations.md": ["tests/cross_process/test_operations_doc.py"],
    "docs/cluster.md": ["tests/cluster/test_cluster_doc.py"],
}
RUNNABLE = {"python", "sh", "bash", "shell", "console"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fenced_out = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", fenced_out, flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def strip_code(text: str) -> str:
    """*text* without fenced blocks and inline code (no links or headings in those)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def broken_links(page: Path, text: str) -> list[str]:
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", strip_code(text)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s)://, mailto:: not checked (no network in tests)
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{page.name}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            out.append(f"{page.name}: {target}: no heading #{anchor} in {dest.name}")
    return out


def test_every_relative_link_and_anchor_resolves() -> None:
    problems = [p for page in PAGES for p in broken_links(page, page.read_text())]
    assert problems == []


def test_the_link_check_can_fail() -> None:
    page = ROOT / "README.md"
    text = "[a](docs/nope.md) [b](docs/client.md#no-such-heading) [c](#running-the-server)"
    assert broken_links(page, text) == [
        "README.md: docs/nope.md: no such file",
        "README.md: docs/client.md#no-such-heading: no heading #no-such-heading in client.md",
    ]
    assert slug("Leases and `CLAIM_RECORD`") == "leases-and-claim_record"


def test_no_page_points_at_documents_outside_the_repository() -> None:
    outside = re.compile(r"SPEC ?§|\bseeds? \d{3}\b|\bissues? \d+\b|once the server lands")
    found = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in PAGES
        for m in outside.finditer(page.read_text())
    ]
    assert found == []


def units(page: Path) -> list[tuple[str, str]]:
    """``(runner key, language)`` of each fenced block of *page*."""
    rel = page.relative_to(ROOT).as_posix()
    text = page.read_text()
    if rel != "README.md":
        return [(rel, lang) for lang in re.findall(r"^```(\w*)\n.*?^```", text, re.M | re.S)]
    out = []
    for part in re.split(r"\n(?=## )", text):
        title = part.split("\n", 1)[0].removeprefix("## ") if part.startswith("## ") else ""
        for lang in re.findall(r"^```(\w*)\n.*?^```", part, flags=re.M | re.S):
            out.append((f"README.md#{slug(title)}", lang))
    return out


def test_every_snippet_has_a_test_that_runs_it() -> None:
    missing = []
    for page in PAGES:
        for key, lang in units(page):
            if lang not in RUNNABLE:
                continue  # text, yaml (tests/manifests/test_manifest_docs.py), toml
            runners = RUNNERS.get(key, [])
            if not runners:
                missing.append(f"{key}: a {lang} snippet no test runs")
            page_name = key.split("#")[0]
            for runner in runners:
                source = (ROOT / runner).read_text()
                assert Path(page_name).name in source, (runner, page_name)
    assert missing == []
