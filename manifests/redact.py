"""Credential redaction for reprs and error messages (as redis-py's ``SENSITIVE_REPR_KEYS``).

Connection strings lose their password (``postgresql://app:***@db/x``), connection
mappings their ``password``-like fields, HTTP headers their ``Authorization``-like
values and URLs their ``token``-like query parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "MASK",
    "SENSITIVE",
    "redact",
    "redact_mapping",
    "redact_text",
]


SENSITIVE: Final = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|authorization|cookie|credential|auth",
    re.IGNORECASE,
)
_USERINFO: Final = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@"
)
_QUERY: Final = re.compile(
    r"(?P<key>[?&;](?:[^=&;#\s]*(?:pass|secret|token|key|auth)[^=&;#\s]*))=[^&;#\s]*",
    re.IGNORECASE,
)
_KV: Final = re.compile(r"(?P<key>\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
MASK: Final = "***"


def redact_text(text: str) -> str:
    """Mask passwords in URLs/DSNs (``user:pw@``), ``password=...`` and token query params."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['key']}={MASK}", text)
    return _KV.sub(lambda m: f"{m['key']}{MASK}", text)


def redact_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of *mapping* with sensitive keys masked and string values redacted."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if SENSITIVE.search(str(k)):
            out[k] = MASK
        elif isinstance(v, str):
            out[k] = redact_text(v)
        elif isinstance(v, Mapping):
            out[k] = redact_mapping(v)
        else:
            out[k] = v
    return out


def redact(value: Any) -> Any:
    """Redact a string or a mapping; other values are returned as they are."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_mapping(value)
    return value
