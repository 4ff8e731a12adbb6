"""CurveZMQ on the client side: the socket options a TCP client connects with.

The server's side (its keys, the authenticator, ``stateengine keygen``) is
``stateengine.server.curve``; a client needs only the files that command hands out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def client_options(server_key_file: str | Path, client_secret_file: str | Path) -> dict[str, bytes]:
    """Socket options for a client (``connect(..., curve=...)``): its key pair and the
    server's public key.

    :raises ValueError: *client_secret_file* holds no secret key.
    :raises OSError: a file cannot be read.
    """
    import zmq.auth  # here: reading server.json through this package needs no ZeroMQ

    server_public, _ = zmq.auth.load_certificate(str(server_key_file))
    public, secret = zmq.auth.load_certificate(str(client_secret_file))
    if secret is None:
        raise ValueError(f"{client_secret_file} holds no secret key")
    return {"curve_serverkey": server_public, "curve_publickey": public, "curve_secretkey": secret}


def find_keys(key_dir: str | Path) -> tuple[Path, Path]:
    """``(server key, client secret)`` in a key directory: ``server.key`` and the one
    ``NAME.key_secret`` beside it (what ``stateengine keygen --out DIR`` leaves there).

    :raises ValueError: no ``server.key``, or not exactly one ``*.key_secret``.
    """
    folder = Path(key_dir)
    secrets = sorted(folder.glob("*.key_secret"))
    if not (folder / "server.key").is_file():
        raise ValueError(f"{folder}: no server.key (copy DATA_DIR/curve/server.key there)")
    if len(secrets) != 1:
        raise ValueError(
            f"{folder}: {len(secrets)} *.key_secret files; name one with --curve-secret"
        )
    return folder / "server.key", secrets[0]


#: Handshake failures a retry cannot cure, by monitor event: the reason told to the user.
_REFUSALS = {
    "HANDSHAKE_FAILED_AUTH": "the server refused this client's CurveZMQ key (not in its "
    "allow-list: `stateengine keygen NAME` on the server, then restart it)",
    "HANDSHAKE_FAILED_PROTOCOL": "the CurveZMQ handshake failed: the server and this client "
    "disagree on security (a TCP server needs --curve-server-key/--curve-secret or curve=)",
    "HANDSHAKE_FAILED_NO_DETAIL": "the CurveZMQ handshake failed: wrong server public key "
    "(use the server's DATA_DIR/curve/server.key)",
}

_NO_CURVE = (
    "the handshake failed: this client uses no CurveZMQ and a TCP server requires it "
    "(--curve-keys DIR, or --curve-server-key/--curve-secret; curve= in Python)"
)


class ConnectionProbe:
    """Why a remote socket gets no replies, read from its ZeroMQ monitor events.

    A refused CurveZMQ client otherwise just times out: libzmq retries the handshake
    forever and never tells the socket's user. Clients attach one probe per TCP socket
    (local ``ipc://`` sockets need none: no handshake to fail) and ask :meth:`refusal`
    while they wait. Not thread-safe; close it before its socket.
    """

    def __init__(self, sock: Any) -> None:
        import zmq

        events = (
            zmq.EVENT_CONNECTED
            | zmq.EVENT_CONNECT_RETRIED
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )
        address = f"inproc://stateengine-probe-{id(self):x}-{os.getpid()}"
        sock.monitor(address, events)
        # A blocking PAIR on the same libzmq context (an asyncio socket's too): inproc
        # needs one context, and a probe is read without awaiting.
        self._ctx: zmq.Context[Any] = zmq.Context.shadow(sock.context.underlying)
        self._mon = self._ctx.socket(zmq.PAIR)
        self._mon.setsockopt(zmq.LINGER, 0)
        self._mon.connect(address)
        self._sock = sock
        self._plain = sock.get(zmq.MECHANISM) != zmq.CURVE
        self.handshaken = False
        self.connected = False
        self.retried = 0
        self._refusal: str | None = None

    def _drain(self) -> None:
        import zmq
        from zmq.utils.monitor import parse_monitor_message

        while True:
            try:
                frames = self._mon.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:  # Again, or closed
                return
            name = zmq.Event(parse_monitor_message(frames)["event"]).name
            if name == "HANDSHAKE_SUCCEEDED":
                self.handshaken, self._refusal = True, None
            elif name == "CONNECTED":
                self.connected = True
            elif name == "CONNECT_RETRIED":
                self.retried += 1
            elif name in _REFUSALS:
                self._refusal = _NO_CURVE if self._plain else _REFUSALS[name]

    def refusal(self) -> str | None:
        """The reason the last handshake failed, or None (none failed, or one succeeded
        since). Raises nothing."""
        self._drain()
        return self._refusal

    def hint(self, endpoint: str) -> str:
        """Why nothing came back, for a timeout's message ("" if the link is up)."""
        reason = self.refusal()
        if reason:
            return f"; {reason}"
        if not self.connected and self.retried:
            return f"; nothing accepts connections at {endpoint} (connection refused)"
        if not self.handshaken:
            return "; no CurveZMQ handshake completed"
        return ""

    def close(self) -> None:
        """Stop monitoring; safe twice. Call before closing the socket."""
        import zmq

        if self._mon.closed:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:  # the socket is closed already
            pass
        self._mon.close(0)
