"""The change feed: 3 subscribers see 10,000 writes from 2 processes exactly once, in
commit order; a slow subscriber is told about its gap instead of stalling the writer."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from stateengine.client.client import Client
from stateengine.client.watch import Watcher
from stateengine.testing import ServerProcess

SPAWN = mp.get_context("spawn")
PER_WRITER = 5000


def writer(endpoint: str, wid: int) -> None:
    with Client(endpoint, timeout=30) as client:
        for start in range(0, PER_WRITER, 100):
            client.send_many(
                [
                    {"command": "CREATE_RECORD", "state": "t", "record": {"w": wid, "i": i}}
                    for i in range(start, start + 100)
                ]
            )


def synced(client: Client, watchers: list[Watcher]) -> int:
    """Write markers until every watcher got one (subscriptions take a moment); the seq."""
    deadline = time.monotonic() + 10
    waiting = set(range(len(watchers)))
    seq = 0
    while waiting and time.monotonic() < deadline:
        seq = client.create_record("t", {"w": -1, "i": -1})["_version"]
        for n in list(waiting):
            change = watchers[n].next(timeout=0.05)
            if change is not None:
                waiting.discard(n)
    assert not waiting, "subscriptions never reached the writer"
    return seq


def test_three_subscribers_see_every_change_once_in_order(server: ServerProcess) -> None:
    with server.connect() as client:
        client.create_state("t")
        watchers = [client.watch("t") for _ in range(3)]
        try:
            start = synced(client, watchers)
            for w in watchers:
                w.start_after(start, ["t"])
            procs = [SPAWN.Process(target=writer, args=(server.endpoint, i)) for i in range(2)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(120)
                assert p.exitcode == 0
            expected = {(w, i) for w in range(2) for i in range(PER_WRITER)}
            for w in watchers:
                seen: list[tuple[int, int]] = []
                seqs: list[int] = []
                for change in w.iter(timeout=5):
                    assert not change.gap
                    seqs.append(change.seq)
                    for rec in change.puts:
                        assert rec["_version"] == change.seq
                        if rec["w"] >= 0:
                            seen.append((rec["w"], rec["i"]))
                    if len(seen) == len(expected):
                        break
                assert len(seen) == len(set(seen)) == len(expected)  # exactly once
                assert set(seen) == expected
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # commit order
                # Per writer, its own records arrive in the order it wrote them.
                for wid in range(2):
                    assert [i for w_, i in seen if w_ == wid] == list(range(PER_WRITER))
        finally:
            for w in watchers:
                w.close()


def test_a_slow_subscriber_detects_its_gap(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", "--feed-hwm", "50") as server, server.connect() as client:
        client.create_state("t")
        with client.watch("t", hwm=50) as slow:
            start = synced(client, [slow])
            slow.start_after(start, ["t"])
            big = "x" * 2000
            for chunk in range(30):  # ~6 MB of changes that the slow one does not read
                client.send_many(
                    [
                        {"command": "CREATE_RECORD", "state": "t", "record": {"w": chunk, "i": big}}
                        for _ in range(100)
                    ]
                )
            changes = list(slow.iter(timeout=2))
            # A gap shows in the first message after the drops: when the queue was full
            # to the end of the flood (a loaded machine), only the next write tells.
            client.create_record("t", {"w": 30, "i": 0})
            changes += list(slow.iter(timeout=2))
            assert changes, "the subscriber received nothing at all"
            assert any(c.gap for c in changes), "messages were dropped but no gap was flagged"
            assert len(changes) < 3000
        # Every write landed: the markers (seq 2..start), the 3000 records and the last one.
        assert client.get_state_info("t")["size"] == 3000 + (start - 1) + 1
