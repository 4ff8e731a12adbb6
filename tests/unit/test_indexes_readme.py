"""The README's "Indexes" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_indexes_example_runs() -> None:
    section = README.read_text().split("### Indexes", 1)[1].split("\n### ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    exec(compile(snippet, "README.md", "exec"), {})
