"""Liveness.fast's ``access`` gives every outcome the ``stat`` it replaced gave.

The cross-process behaviour (a stopped or killed server fails a call at once) is
tests/cross_process/test_fail_fast.py; here, the one check before each send, against the
``stat`` version kept as the reference, over the states a socket path can be in.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from stateengine.client.liveness import Liveness


def fast_by_stat(live: Liveness) -> str | None:
    """Liveness.fast as it was: one ``os.stat`` (the reference)."""
    if live.socket_path is None:
        return None
    try:
        os.stat(live.socket_path)
    except FileNotFoundError:
        return live.gone()
    except OSError:
        return None
    return None


@pytest.mark.parametrize("state", ["socket", "missing", "not_a_dir", "too_long", "loop"])
def test_fast_answers_as_stat_did(tmp_path: Path, state: str) -> None:
    path = tmp_path / "s.sock"
    if state == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.close()
    elif state == "not_a_dir":  # a path through a regular file: ENOTDIR, "cannot tell"
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "s.sock"
    elif state == "too_long":  # ENAMETOOLONG: "cannot tell"
        path = tmp_path / ("x" * 300)
    elif state == "loop":  # ELOOP: "cannot tell"
        os.symlink(tmp_path / "a", tmp_path / "b")
        os.symlink(tmp_path / "b", tmp_path / "a")
        path = tmp_path / "a" / "s.sock"
    live = Liveness(f"ipc://{path}", None)
    expected = fast_by_stat(live)
    assert live.fast() == expected
    # the control: the states differ, so a fast() that always said one thing would fail
    if state == "missing":
        assert expected is not None and "socket file is gone" in expected
    else:
        assert expected is None


def test_fast_asks_nothing_of_tcp_or_abstract_endpoints() -> None:
    for endpoint in ("tcp://127.0.0.1:1", "ipc://@abstract-name"):
        assert Liveness(endpoint, None).fast() is None
