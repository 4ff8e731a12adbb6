"""Blocking claims (README "Blocking claims"): ``CLAIM_RECORD`` with ``wait`` parks in the
writer and is answered by the pass that makes a record claimable, in arrival order among
waiters, or null when its wait ends; parked claims never hold up other clients."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from stateengine.client.aio import AsyncClient
from stateengine.client.client import Client
from stateengine.errors import BadRequest
from stateengine.testing import ServerProcess

SPAWN = mp.get_context("spawn")
CLAIM = {"where": {"status": "pending"}, "fields": {"status": "running"}}


def waiting_worker(endpoint: str, wid: int, wait: float, out: Any) -> None:
    with Client(endpoint, timeout=10) as client:
        out.put(("parked", wid))
        task = client.claim_record("q", **CLAIM, wait=wait)  # type: ignore[arg-type]
        out.put(("got", wid, task and task["id"], time.monotonic()))


def parked(client: Client, n: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until the server holds *n* parked claims."""
    deadline = time.monotonic() + timeout
    while client.stats()["parked_claims"] != n:
        assert time.monotonic() < deadline, f"expected {n} parked claims"
        time.sleep(0.01)


def setup(client: Client) -> None:
    client.create_state("q", schema={"status": "string"}, indexes=["status"])


def test_a_wait_that_finds_nothing_answers_null_when_it_ends(server: ServerProcess) -> None:
    with server.connect() as client:
        setup(client)
        started = time.monotonic()
        assert client.claim_record("q", **CLAIM, wait=0.3) is None  # type: ignore[arg-type]
        assert 0.25 <= time.monotonic() - started < 5
        assert client.stats()["parked_claims"] == 0


def test_waiters_are_woken_by_creates_in_arrival_order(server: ServerProcess) -> None:
    out = SPAWN.Queue()
    with server.connect() as client:
        setup(client)
        workers = []
        for wid in range(3):  # parked one after the other: arrival order is wid order
            p = SPAWN.Process(target=waiting_worker, args=(server.endpoint, wid, 30, out))
            p.start()
            workers.append(p)
            parked(client, wid + 1)
        got = {}
        for expected_wid in range(3):
            rec = client.create_record("q", {"status": "pending"})
            msg = out.get(timeout=10)
            while msg[0] == "parked":
                msg = out.get(timeout=10)
            _, wid, task_id, _ = msg
            assert wid == expected_wid and task_id == rec["id"]
            got[wid] = task_id
        for p in workers:
            p.join(10)
            assert p.exitcode == 0
        assert client.stats()["parked_claims"] == 0


def test_a_lease_running_out_wakes_a_waiter(server: ServerProcess) -> None:
    with server.connect() as client, server.connect() as other:
        setup(client)
        client.create_record("q", {"status": "pending"})
        first = client.claim_record("q", **CLAIM, lease_seconds=0.4)  # type: ignore[arg-type]
        started = time.monotonic()
        again = other.claim_record("q", **CLAIM, wait=20)  # type: ignore[arg-type]
        assert again is not None and again["id"] == first["id"]
        assert time.monotonic() - started < 10  # woken by the deadline, not the wait's end


def test_fifty_parked_claims_do_not_hold_up_other_writes(server: ServerProcess) -> None:
    """50 claims parked at once (in flight on one asyncio client), while another client's
    writes to the same table and another are all answered; then each gets its own task."""
    results: list[Any] = []

    async def fifty() -> None:
        async with AsyncClient(server.endpoint, timeout=10) as aclient:
            claims = [aclient.claim_record("q", **CLAIM, wait=60) for _ in range(50)]
            results.extend(await asyncio.gather(*claims))

    with server.connect() as client:
        setup(client)
        thread = threading.Thread(target=asyncio.run, args=(fifty(),))
        thread.start()
        parked(client, 50)
        client.create_state("other")
        for i in range(200):  # each answered at once; none wakes a waiter
            client.create_record("other", {"n": i})
            client.create_record("q", {"status": "done"})
        assert client.stats()["parked_claims"] == 50
        client.set_state("q", [{"status": "pending"} for _ in range(50)])
        thread.join(30)
        assert not thread.is_alive()
    assert len({r["id"] for r in results}) == 50  # each its own task


def test_wait_is_refused_in_a_batch_and_when_malformed(server: ServerProcess) -> None:
    with server.connect() as client:
        setup(client)
        for bad in (-1, float("nan"), "5", 10**6, True):
            with pytest.raises(BadRequest, match="wait"):
                client.claim_record("q", **CLAIM, wait=bad)  # type: ignore[arg-type]
        reply = client.execute(
            {
                "command": "BATCH",
                "commands": [{"command": "CLAIM_RECORD", "state": "q", **CLAIM, "wait": 1}],
            }
        )
        assert not reply["ok"] and "BATCH" in reply["error"]["message"]
        assert client.stats()["parked_claims"] == 0


def test_parked_claims_are_answered_null_when_the_server_stops(
    stateengine_server_factory: Any,
) -> None:
    server = stateengine_server_factory()
    out = SPAWN.Queue()
    with server.connect() as client:
        setup(client)
        p = SPAWN.Process(target=waiting_worker, args=(server.endpoint, 0, 300, out))
        p.start()
        parked(client, 1)
    server.stop()
    msg = out.get(timeout=10)
    while msg[0] == "parked":
        msg = out.get(timeout=10)
    assert msg[:3] == ("got", 0, None)
    p.join(10)


def test_wait_through_call(server: ServerProcess) -> None:
    with server.connect() as client:
        setup(client)
        client.create_record("q", {"status": "pending"})
    request = {"command": "CLAIM_RECORD", "state": "q", **CLAIM, "wait": 2}
    out = subprocess.run(
        [sys.executable, "-m", "stateengine", "call", "--data-dir", str(server.data_dir), "-"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"running"' in out.stdout
