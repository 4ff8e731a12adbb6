"""The doors' thread (Gatekeeper): refusals off the writer's loop, and a full ipc door
that stops taking peers in by unlinking its socket file (server/connections.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from stateengine.server.connections import Door, Gatekeeper, RateLimitedLog


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.01)  # a poll interval; bounded by the deadline


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    context.setsockopt(zmq.LINGER, 0)
    yield context
    context.term()


def test_a_full_ipc_door_unlinks_its_socket_file_and_links_it_again(
    tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    path = str(tmp_path / "door.sock")
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{path}")
    door = Door(router, "ipc", 8, RateLimitedLog(3600.0))
    assert (door.pause_at, door.resume_at) == (6, 4)
    gate = Gatekeeper([door], door.rate_log)
    gate.start()
    assert door.monitor is None and gate.running  # the thread owns the monitor now
    assert os.path.exists(path + ".held")
    peers = [ctx.socket(zmq.DEALER) for _ in range(12)]
    try:
        for peer in peers:
            peer.connect(f"ipc://{path}")
        _wait(lambda: door.paused and not os.path.exists(path), "the door pauses")
        time.sleep(0.3)  # three reconnect intervals: a refused peer would be back
        open_now, refused = len(door.live), door.stats["refused"]
        assert 6 <= open_now <= 8, door.info()
        time.sleep(0.3)
        assert door.stats["refused"] == refused, "peers kept out must not come back"
        for peer in peers[:6]:  # down to <= resume_at: linked again, the rest come in
            peer.close(0)
        _wait(lambda: door.stats["pauses"] >= 2, "the door resumes and fills again")
        assert door.stats["accepted"] > open_now
    finally:
        for peer in peers:
            peer.close(0)
        gate.close()
        assert not gate.running
        door.close()
        router.close(0)
    assert not os.path.exists(path + ".held")
    assert door.stopped  # the thread read up to EVENT_MONITOR_STOPPED


def test_a_tcp_door_is_never_paused(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    door = Door(router, "tcp", 2, RateLimitedLog(3600.0))
    gate = Gatekeeper([door], door.rate_log)
    gate.start()
    peers = [ctx.socket(zmq.DEALER) for _ in range(4)]
    try:
        for peer in peers:
            peer.connect(f"tcp://127.0.0.1:{port}")
        _wait(lambda: door.stats["refused"] >= 2, "refusals over the cap")
        assert not door.paused and door.path is None and len(door.live) <= 2
    finally:
        for peer in peers:
            peer.close(0)
        gate.close()
        door.close()
        router.close(0)


def test_monitor_events_parse_as_pyzmq_parses_them() -> None:
    """``connections._monitor_event`` is pyzmq's ``parse_monitor_message`` without the
    import of zmq.asyncio: a real monitor's events read both ways must agree."""
    from zmq.utils.monitor import parse_monitor_message

    from stateengine.server.connections import _monitor_event

    ctx = zmq.Context()
    try:
        router = ctx.socket(zmq.ROUTER)
        monitor = router.get_monitor_socket()
        port = router.bind_to_random_port("tcp://127.0.0.1")
        peer = ctx.socket(zmq.DEALER)
        peer.connect(f"tcp://127.0.0.1:{port}")
        seen = 0
        while seen < 2 and monitor.poll(10_000):  # bounded: LISTENING, then ACCEPTED
            frames = monitor.recv_multipart()
            msg = parse_monitor_message(frames)
            assert _monitor_event(frames) == (msg["event"], msg["value"], msg["endpoint"])
            seen += 1
        assert seen == 2
        router.disable_monitor()
    finally:
        ctx.destroy(linger=0)  # closes every socket: never waits, whatever failed
