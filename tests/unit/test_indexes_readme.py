"""The "Indexes" example of docs/protocol.md runs as written (in one process: no server)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_indexes_example_runs() -> None:
    section = DOC.read_text().split("### Indexes", 1)[1].split("\n### ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    exec(compile(snippet, "docs/protocol.md", "exec"), {})
