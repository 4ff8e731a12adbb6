"""docs/testing.md shows the kit's tests: every ```python block there is code here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_every_python_snippet_is_tested_code() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)
    assert len(blocks) >= 6
    sources = [
        "\n" + "\n".join(_lines(p.read_text())) + "\n"
        for p in sorted(Path(__file__).parent.glob("*.py"))
    ]
    for block in blocks:
        wanted = "\n" + "\n".join(_lines(block)) + "\n"
        assert any(wanted in source for source in sources), f"not in tests/kit:\n{block}"
