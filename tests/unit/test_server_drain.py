"""The writer's receive step (``server._drain``): whole messages, in order, up to a limit.

It reads frames with ``copy=False`` and follows ``Frame.more`` instead of pyzmq's
``recv_multipart`` (issue 17): these tests pin that a REQ's and a DEALER's messages
come out with their envelopes exactly as ``recv_multipart`` gives them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from stateengine.server.server import _drain


@pytest.fixture
def sockets(
    tmp_path: Path,
) -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{tmp_path}/r.sock")
    req = ctx.socket(zmq.REQ)
    dealer = ctx.socket(zmq.DEALER)
    req.setsockopt(zmq.IDENTITY, b"req")
    dealer.setsockopt(zmq.IDENTITY, b"dealer")
    for sock in (req, dealer):
        sock.connect(f"ipc://{tmp_path}/r.sock")
    try:
        yield router, req, dealer
    finally:
        ctx.destroy(0)


def _wait_for(router: zmq.Socket[bytes], count: int) -> list[tuple[zmq.Socket[bytes], list[bytes]]]:
    """Drain until *count* messages arrived (bounded: 5 s)."""
    received: list[tuple[zmq.Socket[bytes], list[bytes]]] = []
    for _ in range(50):
        if len(received) >= count:
            break
        router.poll(100)
        _drain(router, received, 1000)
    return received


def test_req_and_dealer_messages_come_out_whole_and_in_order(sockets: tuple) -> None:
    router, req, dealer = sockets
    req.send(b"one")
    dealer.send_multipart([b"two"])
    dealer.send_multipart([b"three", b"extra frame"])
    received = _wait_for(router, 3)
    frames = sorted(f for _sock, f in received)
    assert frames == [
        [b"dealer", b"three", b"extra frame"],
        [b"dealer", b"two"],
        [b"req", b"", b"one"],
    ]
    assert all(sock is router for sock, _f in received)
    dealer_frames = [f for _s, f in received if f[0] == b"dealer"]
    assert dealer_frames == [[b"dealer", b"two"], [b"dealer", b"three", b"extra frame"]]


def test_the_limit_leaves_the_rest_waiting(sockets: tuple) -> None:
    router, _req, dealer = sockets
    for i in range(5):
        dealer.send(b"%d" % i)
    first: list[tuple[zmq.Socket[bytes], list[bytes]]] = []
    for _ in range(50):
        router.poll(100)
        _drain(router, first, 2)
        if len(first) == 2:
            break
    assert [f for _s, f in first] == [[b"dealer", b"0"], [b"dealer", b"1"]]
    rest = _wait_for(router, 3)
    assert [f for _s, f in rest] == [[b"dealer", b"2"], [b"dealer", b"3"], [b"dealer", b"4"]]
    _drain(router, rest, 1000)  # nothing waiting: returns without raising
    assert len(rest) == 3


def test_a_queued_burst_comes_out_in_one_drain_and_a_lone_message_alone() -> None:
    """After the first message the drain asks ``EVENTS`` instead of waiting for an
    ``Again``: a burst already queued must still come out whole in one call (a drain
    that stopped at the first message would return 1), a lone message alone."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        router = ctx.socket(zmq.ROUTER)
        router.bind("inproc://drain-burst")
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, b"d")
        dealer.connect("inproc://drain-burst")  # inproc: a send is in the pipe on return
        for i in range(5):
            dealer.send(b"%d" % i)
        assert router.poll(5000)
        received: list[tuple[zmq.Socket[bytes], list[bytes]]] = []
        _drain(router, received, 1000)
        assert [f for _s, f in received] == [[b"d", b"%d" % i] for i in range(5)]
        dealer.send(b"lone")
        assert router.poll(5000)
        received.clear()
        _drain(router, received, 1000)
        assert [f for _s, f in received] == [[b"d", b"lone"]]
        _drain(router, received, 1000)  # nothing more: returns on the Again
        assert len(received) == 1
    finally:
        ctx.destroy(0)
