"""The one record shape every benchmark uses, so their figures compare.

Six fields, about 70–85 bytes of msgpack: what an ETL lookup row or a task looks like.
"""

from __future__ import annotations

from typing import Any


def record(i: int) -> dict[str, Any]:
    return {
        "name": f"user{i:06d}",
        "email": f"u{i}@example.com",
        "status": "pending",
        "score": i * 0.5,
        "tries": 0,
        "tag": "etl",
    }
