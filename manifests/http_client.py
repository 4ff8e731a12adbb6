"""``Http``: load from and store to HTTP endpoints, with urllib (standard library).

* ``get(url, headers)``: ``GET``; a JSON body is parsed, other text returned as a
  string; 404 is a miss (None); other statuses raise.
* ``set(url, body, headers)``: ``PUT`` with a JSON body; any 2xx is success.
* ``delete(url, headers)``: ``DELETE``; 2xx → True, 404 → False.

Only ``http``/``https`` URLs are accepted. Headers such as ``Authorization`` and
passwords in URLs are masked in every error message. Thread-safe: no shared state.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from stateengine.errors import LoadParseError
from stateengine.manifests.redact import redact_text


class HttpError(RuntimeError):
    """A failed request; the State reports it as a Load or Store error."""


class HttpClient:
    """:param timeout: seconds for each request. :param max_bytes: largest body read."""

    def __init__(self, timeout: float = 10.0, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"HttpClient(timeout={self.timeout})"

    def _request(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> tuple[int, bytes, str]:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise HttpError(f"Http: only http(s) URLs, not {redact_text(url)!r}")
        all_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read(self.max_bytes + 1)
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code, b"", ""
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HttpError(f"Http {method} {redact_text(url)}: {reason}") from None
        if len(data) > self.max_bytes:
            raise HttpError(f"Http {method} {redact_text(url)}: body over {self.max_bytes} bytes")
        return status, data, ctype

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        status, data, ctype = self._request("GET", url, None, headers)
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise HttpError(f"Http GET {redact_text(url)}: status {status}")
        text = data.decode("utf-8", errors="replace")
        if "json" in ctype or text.lstrip()[:1] in ("{", "[", '"') or not ctype:
            try:
                return json.loads(text)
            except ValueError:
                if "json" in ctype:
                    raise LoadParseError(
                        f"Http GET {redact_text(url)}: invalid JSON body"
                    ) from None
        return text

    def set(self, url: str, body: Any, headers: Mapping[str, str] | None = None) -> bool:
        payload = json.dumps(body).encode("utf-8")
        status, _, _ = self._request("PUT", url, payload, headers)
        if not 200 <= status < 300:
            raise HttpError(f"Http PUT {redact_text(url)}: status {status}")
        return True

    def delete(self, url: str, headers: Mapping[str, str] | None = None) -> bool:
        status, _, _ = self._request("DELETE", url, None, headers)
        if status == 404:
            return False
        if not 200 <= status < 300:
            raise HttpError(f"Http DELETE {redact_text(url)}: status {status}")
        return True
