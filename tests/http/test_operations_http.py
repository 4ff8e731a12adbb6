"""Operations on the gateway (issue 18): Prometheus metrics, offline API docs, and a
second gateway that leaves the first one's ``http.json`` alone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gwutil import Gateway, client, start
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    server, info = start(tmp_path_factory.mktemp("ops"))
    try:
        with client(info) as http:
            yield Gateway(server, info, http)
    finally:
        assert server.stop() == 0, server.output()
        server.cleanup()


def metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample, parsed by prometheus_client's own parser (a malformed line raises)."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_scraped_and_parsed(gateway: Gateway) -> None:
    http = gateway.http
    http.post("/api/states", json={"state": "m", "schema": {"n": "integer"}}).raise_for_status()
    for n in range(3):
        http.post("/api/states/m/records", json={"n": n}).raise_for_status()
    http.post(
        "/api/states/m/claim", json={"where": {"n": 0}, "fields": {}, "lease_seconds": 60}
    ).raise_for_status()
    reply = http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = metrics(reply.text)
    assert got["stateengine_table_records"][(("table", "m"),)] == 3
    assert got["stateengine_table_leases"][(("table", "m"),)] == 1
    assert got["stateengine_seq"][()] >= 5
    assert got["stateengine_requests_total"][()] >= 5
    [(labels, value)] = got["stateengine_store_info"].items()
    assert dict(labels)["backend"] == "log" and value == 1  # the --store name
    assert got["stateengine_arena_on"][()] == 1
    # Behind the token, as every route.
    assert httpx.get(gateway.url + "metrics").status_code == 401


def test_api_docs_load_nothing_from_the_network(gateway: Gateway) -> None:
    page = gateway.http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text and not re.search(r"""(src|href)=["']https?:""", page.text)
    assets = re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", page.text)
    assert len(assets) >= 2
    for asset in assets:
        got = gateway.http.get(asset)
        assert got.status_code == 200 and len(got.content) > 500, asset
    assert gateway.http.get("/openapi.json").json()["paths"]["/metrics"]
    assert gateway.http.get("/redoc").status_code == 404  # no ReDoc: it needs a CDN


def test_a_second_gateway_leaves_http_json_alone(gateway: Gateway) -> None:
    data = gateway.data_dir
    first = json.loads((data / "http.json").read_text())
    env = {**os.environ, "STATEENGINE_HTTP_TOKEN": gateway.info.token}
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stateengine",
            "http",
            "--data-dir",
            str(data),
            "--bind",
            "127.0.0.1:0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    try:
        own = data / f"http.{second.pid}.json"
        deadline = time.monotonic() + 30
        while not own.exists():
            assert second.poll() is None, "the second gateway exited"
            assert time.monotonic() < deadline, "the second gateway never described itself"
            time.sleep(0.05)
        assert json.loads((data / "http.json").read_text()) == first
        url = json.loads(own.read_text())["url"]
        assert httpx.get(url + "api/health", headers=gateway.info.headers).status_code == 200
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    assert second.returncode == 0
    assert not own.exists()  # its own file, removed at exit
    assert json.loads((data / "http.json").read_text()) == first  # the first one's, still


def test_stats_prometheus_and_live_leases(tmp_path: Path) -> None:
    """`stats --prometheus`; a lease that ran out is not counted (STATS and metrics)."""
    from stateengine.testing import ServerProcess

    with ServerProcess(tmp_path / "d", "--fsync", "no") as server, server.connect() as db:
        db.create_state("q")
        db.create_record("q", {"s": "new"})
        db.create_record("q", {"s": "new"})
        db.claim_record("q", {"s": "new"}, {"s": "run"}, lease_seconds=0.2)
        db.claim_record("q", {"s": "new"}, {"s": "run"}, lease_seconds=60)
        time.sleep(0.3)  # the first lease runs out: what is measured
        assert db.stats()["tables"]["q"]["leases"] == 1
        assert db.stats()["store"]["backend"] == "log"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "stateengine",
                "stats",
                "--prometheus",
                "--data-dir",
                str(server.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert metrics(run.stdout)["stateengine_table_leases"][(("table", "q"),)] == 1


def test_cleanup_removes_the_files_of_dead_gateways_only(tmp_path: Path) -> None:
    """A gateway killed with -9 leaves its http.json / http.<pid>.json: `cleanup`
    removes those of gateways that are gone, once no server runs there."""
    from stateengine.testing import ServerProcess

    data = tmp_path / "data"
    with ServerProcess(data, "--fsync", "no"):
        pass  # makes the data dir (0700) as a server does
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    (data / "http.json").write_text(json.dumps({"pid": dead.pid}))
    (data / f"http.{dead.pid}.json").write_text(json.dumps({"pid": dead.pid}))
    (data / "http.99.json").write_text(json.dumps({"pid": os.getpid()}))  # alive: this test
    (data / "httpx.json").write_text("{}")  # not a gateway's name: never touched
    run = subprocess.run(
        [sys.executable, "-m", "stateengine", "cleanup", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    left = sorted(p.name for p in data.glob("http*.json"))
    assert left == ["http.99.json", "httpx.json"], run.stdout
    assert f"its gateway (pid {os.getpid()}) is alive" in run.stdout
