"""``Http``: load from and store to HTTP endpoints, with urllib (standard library).

* ``get(url, headers)``: ``GET``; a JSON body is parsed, other text returned as a
  string; 404 is a miss (None); other statuses raise.
* ``set(url, body, headers)``: ``PUT`` with a JSON body; any 2xx is success.
* ``delete(url, headers)``: ``DELETE``; 2xx → True, 404 → False.

Destinations (issue 14 item 17; docs/manifests.md "Http"):

* Only ``http``/``https`` URLs are requested.
* Redirects are followed only to the same origin (scheme, host and port), at most
  :data:`MAX_REDIRECTS` in a row; a redirect elsewhere (another host, port or scheme,
  ``ftp://`` and ``file://`` included) is an :class:`HttpRedirectRefused` naming it.
  ``PUT`` and ``DELETE`` follow no redirect at all (urllib's rule).
* URL templates are filled by :func:`render_url`: a placeholder in the path, query or
  fragment is percent-encoded as one segment or value (``quote(value, safe="")``), so a
  value cannot add segments, climb with ``..`` or start a query; a placeholder in the
  scheme or authority may hold host characters only.
* :func:`check_destination` allows a filled URL only to the hosts of ``allow_hosts``;
  the default (:func:`url_host`) is the one host written literally in the template.

Headers such as ``Authorization`` and passwords in URLs are masked in every error
message. Thread-safe: no state is shared between requests.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from http.client import HTTPMessage
from typing import IO, Any, Final

from stateengine.errors import LoadParseError
from stateengine.manifests.clients import ABSENT, ClientAdapter, LoadRequest, Slot
from stateengine.manifests.redact import redact_text

#: Redirects followed in a row (same origin only) before a request fails.
MAX_REDIRECTS: Final = 5
SCHEMES: Final = ("http", "https")

_ORIGIN_DONE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*[/?#]")
_HOST_CHARS: Final = re.compile(r"[A-Za-z0-9.\-:\[\]]*\Z")
_LEADING_ORIGIN: Final = re.compile(r"(?:https?://)?[A-Za-z0-9.\-:\[\]]*\Z", re.I)
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?\Z")
_IPV6: Final = re.compile(r"\[?[0-9A-Fa-f:.]+\]?\Z")


class HttpError(RuntimeError):
    """A failed request; the State reports it as a Load or Store error."""


class HttpPolicyError(HttpError):
    """A URL outside the destination policy: not http(s), a host not allowed, a dot
    segment, or a placeholder value that does not fit where it stands."""


class HttpRedirectRefused(HttpError):
    """A redirect to another origin or scheme, or more than :data:`MAX_REDIRECTS`."""


# --- URL templates and the destination policy ---------------------------------------------


def _in_origin(prefix: str) -> bool:
    """Whether text appended to *prefix* lands in the URL's scheme or authority."""
    return _ORIGIN_DONE.match(prefix) is None


def url_host(parts: Sequence[object]) -> str | None:
    """The host name written literally in a URL template, lowercased; None when a
    placeholder supplies any of it (or the template does not start ``scheme://host``).

    *parts* alternates literal ``str`` parts and placeholders (any other object), as
    :class:`~stateengine.manifests.parser.Template` holds them. A placeholder for the
    port alone (``http://127.0.0.1:${port}/``) leaves the host literal. This is only
    the default of ``allow_hosts``: :func:`check_destination` judges the filled URL.
    """
    literal, complete = "", True
    for part in parts:
        if not isinstance(part, str):
            complete = False
            break
        literal += part
    m = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)([/?#])?", literal)
    if m is None:
        return None
    authority = m.group(1).rpartition("@")[2]
    if m.group(2) is None and not complete:  # a placeholder continues the authority
        if authority.startswith("["):
            if "]" not in authority:
                return None
            authority = authority[: authority.index("]") + 1]
        elif ":" in authority:
            authority = authority.partition(":")[0]
        else:
            return None  # the placeholder continues the host name
    try:
        host = urllib.parse.urlsplit(f"http://{authority}/").hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def normalize_host(entry: str) -> str | None:
    """An ``allow_hosts`` entry in the form :func:`urllib.parse.urlsplit` reports a
    hostname (lowercase, IPv6 without brackets); None when it is not a host name or
    address (a URL, a port, a wildcard)."""
    if _HOST_NAME.match(entry):
        return entry.lower().rstrip(".") or None
    if ":" in entry and _IPV6.match(entry):
        return entry.strip("[]").lower()
    return None


def render_url(parts: Sequence[object], fill: Callable[[object], str]) -> str:
    """The URL of a template, each placeholder filled by ``fill(placeholder)``.

    * A placeholder in the path, query or fragment is percent-encoded whole
      (``quote(text, safe="")``): ``../../admin?all=1`` stays one segment, or one query
      value, ``..%2F..%2Fadmin%3Fall%3D1``.
    * A placeholder in the scheme or authority (``${base}/users``,
      ``http://127.0.0.1:${port}/``) may hold only host characters (letters, digits,
      ``.``, ``-``, ``:``, ``[``, ``]``), after a leading ``http://``/``https://`` when
      it starts the URL.
    * A template that is one placeholder alone takes the whole URL from it.

    :raises HttpPolicyError: a value that does not fit its place.
    """
    if len(parts) == 1 and not isinstance(parts[0], str):
        return fill(parts[0])
    out = ""
    for part in parts:
        if isinstance(part, str):
            out += part
            continue
        text = fill(part)
        if not _in_origin(out):
            out += urllib.parse.quote(text, safe="")
            continue
        pattern = _LEADING_ORIGIN if out == "" else _HOST_CHARS
        if not pattern.match(text):
            raise HttpPolicyError(
                f"a placeholder in the URL's scheme or host holds {redact_text(text)!r};"
                " only host characters (and a leading http:// or https://) may stand there"
            )
        out += text
    return out


def check_destination(url: str, allow_hosts: Collection[str]) -> None:
    """Refuse *url* unless it is http(s), its host is one of *allow_hosts* (as
    :func:`normalize_host` gives them) and its path has no ``.``/``..`` segment.

    :raises HttpPolicyError: naming the reason.
    """
    shown = redact_text(url)
    try:
        split = urllib.parse.urlsplit(url)
        split.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise HttpPolicyError(f"Http: bad URL {shown!r}: {exc}") from None
    if split.scheme.lower() not in SCHEMES:
        raise HttpPolicyError(f"Http: only http(s) URLs, not {shown!r}")
    host = (split.hostname or "").lower().rstrip(".")
    if host not in allow_hosts:
        allowed = ", ".join(sorted(allow_hosts)) or "none"
        raise HttpPolicyError(
            f"Http: host {host!r} of {shown!r} is not allowed (allow_hosts: {allowed})"
        )
    if any(seg in (".", "..") for seg in split.path.split("/")):
        raise HttpPolicyError(f"Http: {shown!r} has a '.' or '..' path segment")


def _origin(url: str) -> tuple[str, str, int | None]:
    split = urllib.parse.urlsplit(url)
    scheme = split.scheme.lower()
    port = split.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (split.hostname or "").lower(), port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the request's own origin, :data:`MAX_REDIRECTS` deep."""

    # urllib's own loop limits sit above ours, so ours is the one that speaks.
    max_repeats = max_redirections = MAX_REDIRECTS + 5

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
    ) -> Any:
        location = headers.get("Location") or headers.get("URI")
        if location:
            target = urllib.parse.urljoin(req.full_url, location.strip())
            why = None
            try:
                same = _origin(target) == _origin(req.full_url)
            except ValueError:
                same, why = False, "an invalid URL"
            if urllib.parse.urlsplit(target).scheme.lower() not in SCHEMES:
                why = f"scheme {urllib.parse.urlsplit(target).scheme or '(none)'!r} is not http(s)"
            elif not same and why is None:
                why = "another origin (only same-origin redirects are followed)"
            if why is not None:
                fp.close()
                raise HttpRedirectRefused(
                    f"Http {req.get_method()} {redact_text(req.full_url)}: {code} redirect to"
                    f" {redact_text(target)!r} refused: {why}"
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        hops = getattr(req, "stateengine_redirects", 0) + 1
        why = None
        try:
            if _origin(newurl) != _origin(req.full_url):  # the URL urllib will open
                why = f"redirect to {redact_text(newurl)!r} refused: another origin"
        except ValueError:
            why = f"redirect to {redact_text(newurl)!r} refused: an invalid URL"
        if why is None and hops > MAX_REDIRECTS:
            why = f"more than {MAX_REDIRECTS} redirects"
        if why is not None:
            fp.close()
            raise HttpRedirectRefused(f"Http {req.get_method()} {redact_text(req.full_url)}: {why}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.stateengine_redirects = hops  # type: ignore[attr-defined]
        return new


class HttpClient:
    """:param timeout: seconds for each request. :param max_bytes: largest body read."""

    def __init__(self, timeout: float = 10.0, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._opener = urllib.request.build_opener(_SameOriginRedirects())

    def __repr__(self) -> str:
        return f"HttpClient(timeout={self.timeout})"

    def _request(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> tuple[int, bytes, str]:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            raise HttpPolicyError(f"Http: only http(s) URLs, not {redact_text(url)!r}")
        all_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
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
            raise HttpError(f"Http GET {redact_text(url)}: status {status}{_why(status)}")
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
            raise HttpError(f"Http PUT {redact_text(url)}: status {status}{_why(status)}")
        return True

    def delete(self, url: str, headers: Mapping[str, str] | None = None) -> bool:
        status, _, _ = self._request("DELETE", url, None, headers)
        if status == 404:
            return False
        if not 200 <= status < 300:
            raise HttpError(f"Http DELETE {redact_text(url)}: status {status}{_why(status)}")
        return True


def _why(status: int) -> str:
    if 300 <= status < 400:
        return (
            " (a redirect not followed: PUT and DELETE follow none, and a GET at most"
            f" {MAX_REDIRECTS})"
        )
    return ""


__all__ = [
    "MAX_REDIRECTS",
    "HttpClient",
    "HttpError",
    "HttpPolicyError",
    "HttpRedirectRefused",
    "check_destination",
    "normalize_host",
    "render_url",
    "url_host",
]


class HttpAdapter(ClientAdapter):
    """``Http``: JSON bodies (the client encodes and decodes them); the slot is a URL the
    destination policy checks (``allow_hosts``); no TTL."""

    name = "Http"
    ttl = False
    location = "url"

    @classmethod
    def default(cls) -> HttpClient:
        return HttpClient()

    def load(self, request: LoadRequest) -> Any:
        return self.client.get(request.url(), request.headers())

    def get(self, slot: Slot) -> Any:
        value = self.client.get(slot.key, slot.headers)
        return ABSENT if value is None else value

    def set(self, slot: Slot, value: Any, ttl: float | None) -> bool:
        return bool(self.client.set(slot.key, value, slot.headers))

    def delete(self, slot: Slot) -> bool:
        return bool(self.client.delete(slot.key, slot.headers))


ADAPTER = HttpAdapter
