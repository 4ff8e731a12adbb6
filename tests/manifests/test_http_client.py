"""The Http client's destination policy (issue 14 item 17), against real local servers.

Before: placeholder values were pasted into URLs as they were (``/users/${id}`` with
``../../admin/delete?all=1`` requested ``/admin/delete?all=1``), any host was reachable,
and redirects were followed to other hosts and to ``ftp://``. Now values are encoded as
one path segment or query value, the filled URL must be http(s) on an allowed host
(``allow_hosts``, by default the template's own host), and only same-origin redirects
are followed, at most ``MAX_REDIRECTS``.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateengine.errors import InvalidManifest, LoadError, StoreError
from stateengine.manifests import InMemoryClient, State
from stateengine.manifests import http_client as hc
from stateengine.manifests.http_client import HttpClient

Write = Callable[..., Path]


class Server:
    """A local HTTP server in a thread; ``hits`` holds every raw request path."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes = routes
        self.hits: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                outer.hits.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                code, headers, body = outer.routes.get(path, (200, {}, b'{"ok": true}'))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v.replace("@PORT@", str(outer.port)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def other() -> Iterator[Server]:
    """The server nothing may reach: another origin."""
    with Server({}) as server:
        yield server


@pytest.fixture
def api(other: Server) -> Iterator[Server]:
    moved = lambda loc: (302, {"Location": loc}, b"")  # noqa: E731
    routes = {
        "/same": moved("/hop1"),
        "/hop1": moved("@BASE@/hop2"),
        "/hop2": (200, {}, b'{"arrived": true}'),
        "/to-other-port": moved(f"{other.base}/stolen"),
        "/to-other-host": moved("http://localhost:@PORT@/stolen"),
        "/to-scheme-relative": moved("//localhost:@PORT@/stolen"),
        "/to-ftp": moved("ftp://127.0.0.1/etc/passwd"),
        "/to-file": moved("file:///etc/passwd"),
        "/loop": moved("/loop"),
        "/put-moved": (307, {"Location": "/elsewhere"}, b""),
    }
    with Server(routes) as server:
        for path, (code, headers, body) in list(routes.items()):
            loc = headers.get("Location", "").replace("@BASE@", server.base)
            routes[path] = (code, {"Location": loc} if loc else {}, body)
        yield server


# --- placeholder values are encoded -------------------------------------------------------


def test_traversal_value_stays_one_encoded_segment(write: Write, api: Server) -> None:
    mdir = write(
        "h",
        f"""\
        name:
          _store: {{client: InMemory, key: name}}
        user:
          _load:
            client: Http
            url: "{api.base}/users/${{name}}?q=${{name}}"
        """,
    )
    state = State(mdir, {"InMemory": InMemoryClient()})
    evil = "../../admin/delete?all=1"
    state.set("h.name", evil)
    assert state.get("h.user") == {"ok": True}
    quoted = urllib.parse.quote(evil, safe="")
    assert api.hits == [("GET", f"/users/{quoted}?q={quoted}")]
    assert quoted == "..%2F..%2Fadmin%2Fdelete%3Fall%3D1"


def test_dot_segment_value_refused(write: Write, api: Server) -> None:
    mdir = write(
        "h",
        f"""\
        name:
          _store: {{client: InMemory, key: name}}
        user:
          _load: {{client: Http, url: "{api.base}/users/${{name}}/profile"}}
        """,
    )
    state = State(mdir, {"InMemory": InMemoryClient()})
    state.set("h.name", "..")
    with pytest.raises(LoadError, match=r"'\.' or '\.\.' path segment"):
        state.get("h.user")
    assert api.hits == []


def test_value_in_the_host_part_holds_host_characters_only(write: Write, api: Server) -> None:
    mdir = write(
        "h",
        """\
        port:
          _store: {client: InMemory, key: port}
        user:
          _load: {client: Http, url: "http://127.0.0.1:${port}/users"}
        """,
    )
    state = State(mdir, {"InMemory": InMemoryClient()})
    state.set("h.port", f"{api.port}@localhost:{api.port}")
    with pytest.raises(LoadError, match="only host characters"):
        state.get("h.user")
    state.set("h.port", api.port)
    assert state.get("h.user") == {"ok": True}
    assert api.hits == [("GET", "/users")]


# --- allow_hosts --------------------------------------------------------------------------


def test_host_not_in_allow_list_refused(write: Write, api: Server) -> None:
    mdir = write(
        "h",
        """\
        base:
          _store: {client: InMemory, key: base}
        user:
          _load: {client: Http, url: "${base}/users", allow_hosts: [api.example.com]}
        kept:
          _store: {client: Http, url: "${base}/kv", allow_hosts: [api.example.com]}
        """,
    )
    state = State(mdir, {"InMemory": InMemoryClient()})
    state.set("h.base", api.base)
    with pytest.raises(LoadError, match=r"host '127\.0\.0\.1' .* is not allowed"):
        state.get("h.user")
    with pytest.raises(StoreError, match=r"is not allowed \(allow_hosts: api\.example\.com\)"):
        state.set("h.kept", 1)
    assert api.hits == []


def test_allow_list_admits_its_hosts(write: Write, api: Server) -> None:
    mdir = write(
        "h",
        """\
        base:
          _store: {client: InMemory, key: base}
        user:
          _load: {client: Http, url: "${base}/users", allow_hosts: [LOCALHOST, 127.0.0.1]}
        """,
    )
    state = State(mdir, {"InMemory": InMemoryClient()})
    state.set("h.base", api.base)
    assert state.get("h.user") == {"ok": True}
    state.set("h.base", "http://evil.example")
    state.delete("h.user")
    with pytest.raises(LoadError, match=r"'evil\.example'.* is not allowed"):
        state.get("h.user")


def test_a_whole_url_placeholder_reaches_allowed_hosts_only(write: Write, api: Server) -> None:
    mdir = write(
        "h",
        """\
        whole:
          _store: {client: InMemory, key: whole}
        user:
          _load: {client: Http, url: "${whole}", allow_hosts: [localhost]}
        """,
    )
    state = State(mdir, {"InMemory": InMemoryClient()})
    state.set("h.whole", f"{api.base}/users")  # a whole URL: allowed hosts only
    with pytest.raises(LoadError, match="not allowed"):
        state.get("h.user")
    assert api.hits == []


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ('{client: Http, url: "${base}/users"}', "takes its host from a placeholder"),
        ('{client: Http, url: "http://${base}/users"}', "takes its host from a placeholder"),
        ('{client: Http, url: "ftp://h/x"}', "only http and https"),
        ('{client: Http, url: "http://h/", allow_hosts: []}', "non-empty list"),
        ('{client: Http, url: "http://h/", allow_hosts: ["http://h"]}', "no scheme"),
        ('{client: Http, url: "http://h/", allow_hosts: ["*.h"]}', "no scheme"),
        ('{client: Http, url: "http://h/", allow_hosts: ["h:80"]}', "no scheme"),
        ('{client: Http, url: "http://h/", allow_hosts: h}', "non-empty list"),
    ],
)
def test_policy_mistakes_found_when_parsing(write: Write, load: str, message: str) -> None:
    mdir = write("h", f"base:\n  _store: {{client: InMemory, key: b}}\nuser:\n  _load: {load}\n")
    with pytest.raises(InvalidManifest, match=message):
        State(mdir, {"InMemory": InMemoryClient()}).get("h.user")


# --- redirects ----------------------------------------------------------------------------


def test_same_origin_redirects_are_followed(api: Server) -> None:
    assert HttpClient(timeout=5).get(f"{api.base}/same") == {"arrived": True}
    assert [p for _, p in api.hits] == ["/same", "/hop1", "/hop2"]


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/to-other-port", "another origin"),
        ("/to-other-host", "another origin"),
        ("/to-scheme-relative", "another origin"),
        ("/to-ftp", "scheme 'ftp' is not http(s)"),
        ("/to-file", "scheme 'file' is not http(s)"),
    ],
)
def test_redirect_elsewhere_refused_with_a_load_error_naming_why(
    write: Write, api: Server, other: Server, path: str, why: str
) -> None:
    mdir = write("h", f'user:\n  _load: {{client: Http, url: "{api.base}{path}"}}\n')
    state = State(mdir, {"InMemory": InMemoryClient()})
    with pytest.raises(LoadError) as info:
        state.get("h.user")
    assert other.hits == [] and [p for _, p in api.hits] == [path]
    assert "redirect to" in info.value.message and why in info.value.message


def test_redirect_loop_stops_after_max_redirects(api: Server) -> None:
    with pytest.raises(hc.HttpRedirectRefused, match=f"more than {hc.MAX_REDIRECTS} redirects"):
        HttpClient(timeout=5).get(f"{api.base}/loop")
    assert len(api.hits) == hc.MAX_REDIRECTS + 1


def test_put_follows_no_redirect(api: Server) -> None:
    with pytest.raises(hc.HttpError, match=r"status 307 .*redirect not followed"):
        HttpClient(timeout=5).set(f"{api.base}/put-moved", {"a": 1})
    assert api.hits == [("PUT", "/put-moved")]


def test_client_refuses_other_schemes_itself() -> None:
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd"):
        with pytest.raises(hc.HttpPolicyError, match=r"only http\(s\)"):
            HttpClient().get(url)


# --- the encoding, for any value ----------------------------------------------------------


class Ph:
    pass


PH = Ph()


@settings(max_examples=300, deadline=None)
@given(value=st.text(min_size=1))
def test_any_value_fills_exactly_one_segment_and_one_query_value(value: str) -> None:
    url = hc.render_url(["http://api.example/users/", PH, "/x?q=", PH, "&n=1"], lambda _: value)
    split = urllib.parse.urlsplit(url)
    assert split.hostname == "api.example" and split.port is None
    segments = split.path.split("/")
    assert len(segments) == 4 and segments[:2] == ["", "users"] and segments[3] == "x"
    assert urllib.parse.unquote(segments[2]) == value
    assert urllib.parse.parse_qs(split.query, keep_blank_values=True) == {
        "q": [value],
        "n": ["1"],
    }
    assert split.fragment == ""
    if value in (".", ".."):
        with pytest.raises(hc.HttpPolicyError):
            hc.check_destination(url, ["api.example"])
    else:
        hc.check_destination(url, ["api.example"])


@settings(max_examples=300, deadline=None)
@given(value=st.text())
def test_any_value_in_the_host_part_stays_on_allowed_hosts(value: str) -> None:
    try:
        url = hc.render_url(["http://", PH, ":8080/x"], lambda _: value)
        hc.check_destination(url, ["api.example"])
    except hc.HttpPolicyError:
        return
    assert urllib.parse.urlsplit(url).hostname == "api.example"


def test_url_host_examples() -> None:
    assert hc.url_host(["http://API.example:8080/u/", PH]) == "api.example"
    assert hc.url_host(["http://127.0.0.1:", PH, "/x"]) == "127.0.0.1"
    assert hc.url_host(["http://[::1]:", PH, "/x"]) == "::1"
    assert hc.url_host([PH, "/users"]) is None
    assert hc.url_host(["http://api", PH, ".example/"]) is None
    assert json.dumps(hc.url_host(["http://h"])) == '"h"'
