"""kill -9 of the server at random points under load from several writer processes (issue 5).

Three spawned writer processes send pipelined batches (creates of records with
deterministic content, and increments of the writer's own counter) and append, to their
own file, each batch *before* sending it (``sent``) and its replies once acknowledged
(``acks``). The test loops: start the server, let the writers run, kill -9 the server at
a random moment (the kit's nemesis: its ``kill-server`` fault, which also restarts the
server), wait until every writer has given up on its in-flight batch (client timeout)
and paused, restart, and check the recovered state before letting them go on:

* every acknowledged create exists with exactly its content; every record that exists
  is one a writer sent (its content, at most once): nothing invented, nothing doubled;
* each counter is at least its highest acknowledged value and at most its value at the
  start of the round plus the increments sent in the round (acknowledged + in flight);
* the recovered ``seq`` is at least every acknowledged ``seq``; every ``seq``
  acknowledged in a round is above the ``seq`` the round started at; auto ids are never
  handed out twice and each round's new ids are above every id that existed before it.

At least 50 kills here (under a minute and a half), 200 with ``STATEENGINE_LONG=1``.
The server runs with small snapshots (``--snapshot-bytes``) so that some kills land
during a snapshot; its forked dumper outlives a kill -9 and holds the data directory's
lock until it is done, so each restart first waits (bounded) for the lock (the nemesis's
restart does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stateengine.client.client import Client
from stateengine.errors import ServerUnavailable
from stateengine.testing import ServerProcess
from stateengine.testing.nemesis import Nemesis, Targets

WRITERS = 3
BATCH = 12  # requests per pipelined batch: 3 of 4 creates, 1 of 4 increments
WRITER_TIMEOUT = 0.4  # how soon a writer gives up on a killed server
LONG = os.environ.get("STATEENGINE_LONG") == "1"
KILLS = 200 if LONG else 50
SERVE_ARGS = ["--store", "log", "--fsync", "always", "--snapshot-bytes", "131072"]


def content(w: int, i: int) -> dict[str, Any]:
    """The record writer *w* creates as its *i*-th create."""
    return {"w": w, "i": i, "h": hashlib.blake2b(f"{w}:{i}".encode(), digest_size=8).hexdigest()}


# --- the writer processes ----------------------------------------------------------------


@dataclass
class Control:
    """Shared values between the test and its writers (made from the spawn context).

    ``go``: the round to write in (> 0), 0 to pause, -1 to exit. A writer that sees 0
    after its last batch finished (acknowledged or failed) copies ``token`` into
    ``paused[w]``; ``batches[w]`` counts its acknowledged batches.
    """

    go: Any
    token: Any
    paused: Any
    batches: Any

    @classmethod
    def make(cls, ctx: Any) -> Control:
        return cls(
            ctx.Value("q", 0),
            ctx.Value("q", 0),
            ctx.Array("q", WRITERS),
            ctx.Array("q", WRITERS),
        )


class Interrupted(Exception):
    """Raised in a writer by SIGUSR1 while it waits for replies: the server was killed."""


def writer_main(w: int, data_dir: str, log_path: str, ctl: Control) -> None:
    """One writer: pipelined batches while ``go > 0``; every step logged (flushed).

    SIGUSR1 (sent by the test right after the kill) interrupts a wait for replies, so
    that the writer need not sit out its client timeout; outside that wait it is ignored
    (the writer then sees ``go == 0`` before its next batch).
    """
    waiting = False

    def interrupt(signum: int, frame: object) -> None:
        if waiting:
            raise Interrupted

    signal.signal(signal.SIGUSR1, interrupt)
    client: Client | None = None
    i = 0
    deadline = time.monotonic() + 3600  # a bound, should the test die without saying so
    with open(log_path, "a", encoding="utf-8") as out:

        def log(entry: dict[str, Any]) -> None:
            out.write(json.dumps(entry) + "\n")
            out.flush()

        try:
            while time.monotonic() < deadline:
                go = ctl.go.value
                if go < 0:
                    return
                if go == 0:
                    if client is not None:
                        client.close()
                        client = None
                    ctl.paused[w] = ctl.token.value
                    time.sleep(0.002)
                    continue
                if client is None:
                    client = Client(data_dir=data_dir, timeout=WRITER_TIMEOUT, arena=False)
                    try:  # makes the socket now: never interrupted half-made
                        client.execute({"command": "LIST_STATES"})
                    except ServerUnavailable:
                        client.close()
                        client = None
                        continue
                reqs: list[dict[str, Any]] = []
                sent: list[int] = []  # create index, or -1 for an increment
                for j in range(BATCH):
                    if j % 4 == 3:
                        reqs.append(
                            {
                                "command": "INCREMENT",
                                "state": "counters",
                                "id": f"w{w}",
                                "field": "n",
                            }
                        )
                        sent.append(-1)
                    else:
                        reqs.append(
                            {"command": "CREATE_RECORD", "state": "items", "record": content(w, i)}
                        )
                        sent.append(i)
                        i += 1
                log({"e": go, "sent": sent})
                try:
                    waiting = True
                    try:
                        results = client.send_many(reqs)
                    finally:
                        waiting = False
                except (ServerUnavailable, Interrupted):
                    # close() drops whatever is still queued: a server started later never
                    # gets these requests.
                    client.close()
                    client = None
                    log({"e": go, "failed": True})
                    continue
                acks: list[list[Any]] = []
                for s, result in zip(sent, results, strict=True):
                    if isinstance(result, Exception):
                        log({"e": go, "error": repr(result)})
                        return
                    if s >= 0:
                        acks.append([s, result["id"], result["_version"]])
                    else:
                        acks.append([-1, result, None])
                log({"e": go, "acks": acks, "seq": client.seen_seq})
                ctl.batches[w] += 1
        finally:
            if client is not None:
                client.close()


# --- what the logs say, and the checker ----------------------------------------------------


@dataclass
class WriterLog:
    """One writer's log, read incrementally (only complete lines)."""

    path: Path
    offset: int = 0
    sent_creates: set[int] = field(default_factory=set)
    acked_creates: dict[int, int] = field(default_factory=dict)  # index -> id
    acked_round: dict[int, int] = field(default_factory=dict)  # index -> round acked in
    incs_sent: dict[int, int] = field(default_factory=dict)  # round -> increments sent
    max_acked_inc: int = 0
    ack_seqs: dict[int, list[int]] = field(default_factory=dict)  # round -> every acked seq
    errors: list[str] = field(default_factory=list)

    def read(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            entry = json.loads(line)
            e = entry["e"]
            if "sent" in entry:
                self.sent_creates.update(s for s in entry["sent"] if s >= 0)
                self.incs_sent[e] = self.incs_sent.get(e, 0) + entry["sent"].count(-1)
            elif "acks" in entry:
                seqs = self.ack_seqs.setdefault(e, [])
                for s, value, version in entry["acks"]:
                    if s >= 0:
                        self.acked_creates[s] = value
                        self.acked_round[s] = e
                        seqs.append(version)  # a created record's _version is its seq
                    else:
                        self.max_acked_inc = max(self.max_acked_inc, value)
                seqs.append(entry["seq"])
            elif "error" in entry:
                self.errors.append(entry["error"])


@dataclass
class History:
    """What the checker carries from one round to the next."""

    logs: list[WriterLog]
    base: dict[str, int] = field(default_factory=dict)  # counter values at round start
    start_seq: dict[int, int] = field(default_factory=dict)  # round -> seq at its start
    max_id_before: dict[int, int] = field(default_factory=dict)  # round -> max id at start
    acked_ids: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (w, i)


def fetch(client: Client) -> tuple[int, dict[Any, dict[str, Any]], dict[str, int], int]:
    """``(seq, items by id, counters, next_id)`` from the server (over the socket)."""
    items = client.execute({"command": "LIST_RECORDS", "state": "items"})
    counters = client.execute({"command": "LIST_RECORDS", "state": "counters"})
    info = client.execute({"command": "GET_STATE_INFO", "state": "items"})
    assert items["ok"] and counters["ok"] and info["ok"], (items, counters, info)
    return (
        int(info["seq"]),
        {r["id"]: r for r in items["result"]},
        {r["id"]: r["n"] for r in counters["result"]},
        int(info["result"]["next_id"]),
    )


def check_round(history: History, client: Client, finished: int) -> list[str]:
    """Check the restarted server after round *finished* (0: the initial state).

    Call with the writers paused. Reads the writers' logs; records the new round's bases.
    """
    failures: list[str] = []
    seq, items, counters, next_id = fetch(client)
    by_content: dict[tuple[int, int], Any] = {}
    for rid, rec in items.items():
        w, i = rec.get("w"), rec.get("i")
        key = (w, i)
        if not isinstance(w, int) or not 0 <= w < WRITERS or i not in history.logs[w].sent_creates:
            failures.append(f"items/{rid} was never sent by a writer: {rec}")
        elif {k: v for k, v in rec.items() if k not in ("id", "_version")} != content(w, i):
            failures.append(f"items/{rid} has content {rec}, not {content(w, i)}")
        if key in by_content:
            failures.append(f"create {key} applied twice: ids {by_content[key]} and {rid}")
        by_content[key] = rid
    if items and next_id <= max(items):
        failures.append(f"next id {next_id} would reuse an existing id (max {max(items)})")
    for w, wlog in enumerate(history.logs):
        failures += [f"writer {w} got an error reply: {e}" for e in wlog.errors]
        for i, rid in wlog.acked_creates.items():
            if rid in history.acked_ids and history.acked_ids[rid] != (w, i):
                failures.append(f"id {rid} acknowledged twice: {history.acked_ids[rid]}, {(w, i)}")
            history.acked_ids[rid] = (w, i)
            if items.get(rid, {}).get("i") != i or items[rid].get("w") != w:
                failures.append(f"acknowledged create {(w, i)} as items/{rid} is missing")
        n = counters.get(f"w{w}", -1)
        if n < wlog.max_acked_inc:
            failures.append(f"counter w{w} is {n} < acknowledged {wlog.max_acked_inc}")
        if finished:
            upper = history.base[f"w{w}"] + wlog.incs_sent.get(finished, 0)
            if n > upper:
                failures.append(f"counter w{w} is {n} > start of round + sent = {upper}")
            seqs = wlog.ack_seqs.get(finished, [])
            if seqs and min(seqs) <= history.start_seq[finished]:
                failures.append(
                    f"round {finished}: seq {min(seqs)} acknowledged, not above the "
                    f"round's start {history.start_seq[finished]}"
                )
            if seqs and max(seqs) > seq:
                failures.append(f"recovered seq {seq} < acknowledged seq {max(seqs)}")
            for i, rid in wlog.acked_creates.items():
                if wlog.acked_round[i] == finished and rid <= history.max_id_before[finished]:
                    failures.append(
                        f"round {finished}: id {rid} acknowledged for {(w, i)}, not above the "
                        f"largest id {history.max_id_before[finished]} before the round"
                    )
    history.base = dict(counters)
    history.start_seq[finished + 1] = seq
    history.max_id_before[finished + 1] = max(items, default=0)
    return failures


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


@pytest.mark.timeout(1800 if LONG else 240)
def test_kill_9_under_load_keeps_acknowledged_writes(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("STATEENGINE_SEED", "kill-9"))
    data = tmp_path / "data"
    ctx = mp.get_context("spawn")
    ctl = Control.make(ctx)
    logs = [WriterLog(tmp_path / f"writer{w}.jsonl") for w in range(WRITERS)]
    for wlog in logs:
        wlog.path.touch()
    history = History(logs)
    procs = [
        ctx.Process(target=writer_main, args=(w, str(data), str(logs[w].path), ctl), daemon=True)
        for w in range(WRITERS)
    ]
    server: ServerProcess | None = None
    stats = {"kills": 0, "acked_batches": 0, "failed_batches": 0}
    started = time.monotonic()
    try:
        server = ServerProcess(data, *SERVE_ARGS).start()
        nemesis = Nemesis([], Targets(server))  # no schedule: the faults come from the rounds
        with server.connect(timeout=10) as client:
            assert client.execute({"command": "CREATE_STATE", "state": "items"})["ok"]
            for w in range(WRITERS):
                rec = {"id": f"w{w}", "n": 0}
                reply = client.execute(
                    {"command": "CREATE_RECORD", "state": "counters", "record": rec}
                )
                assert reply["ok"], reply
            assert check_round(history, client, 0) == []
        ctl.token.value = -1
        for p in procs:
            p.start()
        # Each writer has installed its SIGUSR1 handler once it shows the token.
        wait_until(
            lambda: all(ctl.paused[w] == -1 for w in range(WRITERS)), 60, "the writers to start"
        )
        for round_ in range(1, KILLS + 1):
            before = sum(ctl.batches[:])
            ctl.go.value = round_
            # Kill under load: once some batch of this round was acknowledged, then at a
            # random moment (the kill point, not a wait for anything).
            wait_until(lambda b=before: sum(ctl.batches[:]) > b, 20, "a first acknowledged batch")
            time.sleep(rng.uniform(0.0, 0.12))
            ctl.token.value = round_
            ctl.go.value = 0
            # The kit's nemesis kills -9 the server, and restarts it when the block ends
            # (on the same data directory, once the killed server's snapshot child let go
            # of its lock).
            with nemesis.fault("kill-server"):
                stats["kills"] += 1
                for p in procs:
                    assert p.pid is not None
                    os.kill(p.pid, signal.SIGUSR1)
                wait_until(
                    lambda r=round_: all(ctl.paused[w] == r for w in range(WRITERS)),
                    WRITER_TIMEOUT + 10,
                    "the writers to pause",
                )
                assert all(p.is_alive() for p in procs), [p.exitcode for p in procs]
            for wlog in logs:
                wlog.read()
            with server.connect(timeout=10) as client:
                failures = check_round(history, client, round_)
            assert not failures, f"after kill {round_}:\n" + "\n".join(failures[:20])
        stats["acked_batches"] = sum(ctl.batches[:])
        stats["failed_batches"] = sum(
            1 for wlog in logs for line in wlog.path.read_text().splitlines() if '"failed"' in line
        )
        records = len(history.acked_ids)
        print(
            f"\n{stats['kills']} kills in {time.monotonic() - started:.1f} s; "
            f"{stats['acked_batches']} batches acknowledged, {stats['failed_batches']} in "
            f"flight at a kill; {records} acknowledged creates checked"
        )
        assert records > 0

        # The control: take an acknowledged create away and push the counters out of
        # their bounds through the API; the checker must say so.
        with server.connect(timeout=10) as client:
            rid = next(iter(history.acked_ids))
            assert client.execute({"command": "DELETE_RECORD", "state": "items", "id": rid})["ok"]
            low = logs[0].max_acked_inc - 1
            high = history.base["w1"] + 1
            for name, value in (("w0", low), ("w1", high)):
                req = {"command": "PATCH_RECORD", "state": "counters", "id": name}
                assert client.execute({**req, "fields": {"n": value}})["ok"]
            logs[1].incs_sent[KILLS + 1] = 0
            history.start_seq[KILLS + 1] = 10**18  # no acks this round: unused
            failures = check_round(history, client, KILLS + 1)
        assert any(f"as items/{rid} is missing" in f for f in failures), failures
        assert any("counter w0" in f and "< acknowledged" in f for f in failures), failures
        assert any("counter w1" in f and "> start of round" in f for f in failures), failures
    finally:
        ctl.go.value = -1
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop(10)
            server.kill()
            server.cleanup()
