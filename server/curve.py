"""CurveZMQ keys for the TCP endpoint: where they live and who may connect.

``DATA_DIR/curve/`` (mode 0700) holds ``server.key`` (public) and ``server.key_secret``
(the server's secret, 0600), made at the first ``serve --tcp``, and ``clients/``: one
``NAME.key`` public-key file per client allowed in. ``stateengine keygen NAME`` makes a
client's key pair, puts its public key in ``clients/`` and writes the client's secret
certificate where you say; the client also needs ``server.key`` (its socket options:
:func:`stateengine.runtime.client_options`). Remove a client's
``.key`` file and restart the server to revoke it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from stateengine.runtime.discovery import private_dir


def curve_dir(data_dir: Path) -> Path:
    return private_dir(data_dir / "curve")


def server_keys(data_dir: Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` of the server, created on first use."""
    folder = curve_dir(data_dir)
    secret_file = folder / "server.key_secret"
    if not secret_file.exists():
        zmq.auth.create_certificates(str(folder), "server")
        os.chmod(secret_file, 0o600)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    assert secret is not None
    return public, secret


def add_client(data_dir: Path, name: str, out_dir: Path) -> tuple[Path, Path]:
    """Make client *name*'s key pair: its public key goes to ``curve/clients/``.

    :return: ``(client secret certificate, server public key)`` paths to hand to the client.
    """
    server_keys(data_dir)
    clients = private_dir(curve_dir(data_dir) / "clients")
    out_dir.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(str(out_dir), name)
    os.chmod(secret_file, 0o600)
    os.replace(public_file, clients / f"{name}.key")
    return Path(secret_file), curve_dir(data_dir) / "server.key"


class _RefusalsAsWarnings(logging.LoggerAdapter):  # type: ignore[type-arg]
    """pyzmq logs every ZAP decision at debug; a refused client deserves a warning."""

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        denied = isinstance(msg, str) and (
            msg.startswith("DENIED") or (bool(args) and args[0] == "DENIED")
        )
        if denied:
            self.logger.warning("tcp client refused: " + str(msg), *args, **kwargs)
        else:
            self.logger.debug(msg, *args, **kwargs)


def start_authenticator(ctx: zmq.Context[Any], data_dir: Path, log: logging.Logger) -> Any:
    """A ZAP handler admitting only the public keys in ``curve/clients/``."""
    clients = private_dir(curve_dir(data_dir) / "clients")
    auth = ThreadAuthenticator(ctx, log=_RefusalsAsWarnings(log, {}))
    auth.start()
    auth.configure_curve(domain="*", location=str(clients))
    return auth
