"""CurveZMQ on the client side: the socket options a TCP client connects with.

The server's side (its keys, the authenticator, ``stateengine keygen``) is
``stateengine.server.curve``; a client needs only the files that command hands out.
"""

from __future__ import annotations

from pathlib import Path


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
