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

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from stateengine.runtime.discovery import private_dir, write_private_file

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def curve_dir(data_dir: Path) -> Path:
    private_dir(data_dir)  # keygen before the first serve: the data dir is made 0700 too
    return private_dir(data_dir / "curve")


def write_certificate(path: Path, public: bytes, secret: bytes | None = None) -> None:
    """A certificate in ZeroMQ's format (what ``zmq.auth.load_certificate`` reads),
    written 0600 from its creation (:func:`~stateengine.runtime.discovery.write_private_file`;
    pyzmq's ``create_certificates`` writes with the umask and would need a chmod after,
    a window in which another user can open the secret). Replaces *path* atomically.
    """
    lines = [
        "#   ZeroMQ CURVE " + ("**Secret** Certificate" if secret else "Public Certificate"),
        "#   " + ("DO NOT PROVIDE THIS FILE TO OTHER USERS" if secret else "Exchange securely"),
        "#   made by stateengine",
        "metadata",
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    write_private_file(tmp, ("\n".join(lines) + "\n").encode(), exclusive=True)
    os.replace(tmp, path)


def server_keys(data_dir: Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` of the server, created on first use (both files 0600)."""
    folder = curve_dir(data_dir)
    secret_file = folder / "server.key_secret"
    if not secret_file.exists():
        new_public, new_secret = zmq.curve_keypair()
        write_certificate(folder / "server.key", new_public)
        write_certificate(secret_file, new_public, new_secret)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    assert secret is not None
    return public, secret


def add_client(data_dir: Path, name: str, out_dir: Path) -> tuple[Path, Path]:
    """Make client *name*'s key pair: its public key goes to ``curve/clients/``.

    The client's secret certificate, ``OUT/NAME.key_secret``, is created 0600 in a
    private *out_dir* (made 0700 if missing). An existing *out_dir* that group or others
    may access is refused, not used: a secret belongs in a directory only its owner can
    list or change (issue 14 item 13). An existing ``NAME.key_secret`` is never
    overwritten.

    :return: ``(client secret certificate, server public key)`` paths to hand to the client.
    :raises ValueError: *name* is not a plain file name (letters, digits, ``_ . -``).
    :raises PermissionError: *out_dir* is another user's or open to others.
    :raises FileExistsError: ``OUT/NAME.key_secret`` exists.
    """
    if not _NAME.match(name):
        raise ValueError(f"client name {name!r}: use letters, digits, '_', '.' and '-' only")
    private_dir(out_dir)
    secret_file = out_dir / f"{name}.key_secret"
    if os.path.lexists(secret_file):
        raise FileExistsError(f"{secret_file} exists; remove it or choose another name")
    server_keys(data_dir)
    clients = private_dir(curve_dir(data_dir) / "clients")
    public, secret = zmq.curve_keypair()
    write_private_file(secret_file, b"", exclusive=True)  # claim the name first
    write_certificate(secret_file, public, secret)
    write_certificate(clients / f"{name}.key", public)
    return secret_file, curve_dir(data_dir) / "server.key"


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
