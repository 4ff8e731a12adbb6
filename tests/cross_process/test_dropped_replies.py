"""A client that never reads its replies: counted, logged at a bounded rate (issue 14,
item 7). Before, every dropped reply was one WARNING line (281,710 lines, 34 MB of log
in 11 s from one such client)."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import zmq

from stateengine.testing import ServerProcess

N = 60_000


def test_a_client_that_never_reads_gets_a_bounded_log(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        deaf = ctx.socket(zmq.DEALER)
        deaf.setsockopt(zmq.RCVHWM, 1)  # reads nothing: replies pile up in the server
        deaf.setsockopt(zmq.SNDHWM, 0)
        deaf.setsockopt(zmq.LINGER, 0)
        deaf.connect(server.endpoint)
        body = msgpack.packb({"command": "LIST_STATES"})
        try:
            with server.connect(timeout=10) as other:
                for i in range(N):
                    deaf.send(body)
                    if i % 10_000 == 0:  # the other client is answered meanwhile
                        assert other.create_record("t", {"i": i})["i"] == i
                deadline = time.monotonic() + 60
                while True:
                    stats = other.execute({"command": "STATS"})["result"]
                    if stats["requests"] >= N or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                assert stats["requests"] >= N
                dropped = stats["dropped_replies"]
                assert dropped >= N // 2, stats
                assert other.create_record("t", {"i": -1})["i"] == -1
        finally:
            deaf.close(0)
            ctx.term()
        assert server.stop() == 0
    lines = [line for line in server.output().splitlines() if "reply dropped" in line]
    # One line per 10 s (REPEAT_LOG_SECONDS), plus the summary written at stop.
    assert 1 <= len(lines) <= 10, f"{len(lines)} lines for {dropped} dropped replies"
    assert "replies dropped since start" in lines[-1]
    assert f"{dropped} replies dropped" in server.output()  # the stop line's count
