"""The command line as people use redis-cli: ``--version``, options before or after the
subcommand, case-insensitive command names, ``req_id`` only when asked, and bad input
answered by one line on stderr with the documented exit code, never a traceback.

Most cases run :func:`stateengine.app.cli.main` in this process (milliseconds each, so
hypothesis can try many); a few run the real ``stateengine`` script to show the same
from outside.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateengine import __version__
from stateengine.app import cli
from stateengine.testing import ServerProcess

KEYGEN_OUT = "keys-out"


@pytest.fixture(autouse=True)
def keep_sigpipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() restores SIGPIPE's default for `stateengine stats | head`; not in pytest."""
    monkeypatch.setattr(signal, "signal", lambda *args: None)


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: --version, --help, usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_version(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "--version")
    assert code == 0 and out.strip() == f"stateengine {__version__}"


def test_options_go_before_or_after_the_subcommand(server: ServerProcess) -> None:
    parser = cli.build_parser()
    d = str(server.data_dir)
    forms = [
        ["--data-dir", d, "call", "--req-id", "INCREMENT", "state=c", "id=1", "field=n"],
        ["call", "increment", "state=c", "--data-dir", d, "id=1", "field=n", "--req-id"],
        ["call", "--data-dir=" + d, "Increment", "state=c", "id=1", "field=n", "--req-id"],
    ]
    parsed = []
    for argv in forms:
        args = cli.subcommands(parser)["call"].parse_intermixed_args(
            cli.hoist_command(parser, argv)[1:]
        )
        parsed.append((args.data_dir, args.name.upper(), args.args, args.req_id))
    assert parsed[0] == parsed[1] == parsed[2]
    # A value that is a subcommand's name stays a value.
    assert cli.hoist_command(parser, ["--data-dir", "demo", "stats"])[:3] == [
        "stats",
        "--data-dir",
        "demo",
    ]


def test_call_is_case_insensitive_everywhere_and_prints_req_id_on_request(
    server: ServerProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = str(server.data_dir)
    code, out, _ = run(capsys, monkeypatch, "call", "create_record", "state=c", 'record={"n": 0}')
    assert code == 0 and "req_id" not in out
    lines = (
        '{"command": "increment", "state": "c", "id": 1, "field": "n"}\n'
        '{"command": "Get_Record", "state": "c", "id": 1, "req_id": "mine"}\n'
        '{"command": "batch", "commands": [{"command": "increment", "state": "c", "id": 1,'
        ' "field": "n"}]}\n'
    )
    monkeypatch.setenv("STATEENGINE_DATA_DIR", d)
    code, out, err = run(capsys, monkeypatch, "call", "-", stdin=lines)
    replies = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert [r["ok"] for r in replies] == [True, True, True]
    assert all("req_id" not in r for r in replies)
    code, out, err = run(capsys, monkeypatch, "--req-id", "call", "-", stdin=lines)
    assert code == 0, err
    assert [json.loads(line)["req_id"] for line in out.splitlines()] == [1, "mine", 3]


@pytest.fixture
def server(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """The running server, also the default data directory of the commands below."""
    monkeypatch.setenv("STATEENGINE_DATA_DIR", str(server.data_dir))
    return server


def bad_inputs(tmp: Path, server: ServerProcess) -> list[tuple[list[str], str, int, str]]:
    """``(argv, stdin, exit code, words in the one line)`` for every subcommand."""
    missing = str(tmp / "missing")
    a_file = tmp / "a-file"
    a_file.write_text("x")
    open_dir = tmp / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    gone = str(tmp / "no-server")
    return [
        ([], "", 2, "COMMAND"),
        (["nope"], "", 2, "invalid choice"),
        (["serve", "--store", "nope"], "", 2, "invalid choice"),
        (["serve", "--data-dir", str(open_dir)], "", 1, "chmod 700"),
        (["serve", "--data-dir", str(tmp / "s"), "--http", "nonsense"], "", 1, "HOST:PORT"),
        (["serve", "--data-dir", str(tmp / "s"), "--manifests", missing], "", 1, "not a directory"),
        (["keygen"], "", 2, "required"),
        (["keygen", "a b", "--data-dir", str(tmp / "k"), "--out", str(tmp / "o")], "", 1, "name"),
        (["call"], "", 2, "required"),
        (["call", "get_record", "state"], "", 2, "key=value"),
        (["call", "get_record", 'id={"$b64": 5}'], "", 2, "id:"),
        (["call", "-"], "[1,2]\n", 2, "stdin line 1"),
        (["call", "-"], '{"command": 5}\n', 2, "stdin line 1"),
        (["call", "-"], "{not json\n", 2, "stdin line 1"),
        (["call", "-", "a=1"], "", 2, "stdin"),
        (["call", "--timeout", "0", "list_states"], "", 2, "--timeout"),
        (["call", "--data-dir", gone, "list_states"], "", 2, "no server is running"),
        (["call", "nope_command"], "", 1, ""),  # the server's error reply, on stdout
        (["call", "get_record", "state=t", "id=1"], "", 1, ""),
        (["stats", "--watch", "-1"], "", 2, "--watch"),
        (["stats", "--timeout", "x"], "", 2, "--timeout"),
        (["stats", "--data-dir", gone], "", 2, "no server is running"),
        (["watch"], "", 2, "required"),
        (["watch", "t", "--count", "0"], "", 2, "--count"),
        (["watch", "t", "--data-dir", gone], "", 2, "no server is running"),
        (["call", "--curve-keys", missing, "--endpoint", "tcp://127.0.0.1:1", "x"], "", 2, "keys"),
        (["backup"], "", 2, "required"),
        (["backup", str(tmp / "b"), "--data-dir", gone], "", 2, "no server is running"),
        (["restore"], "", 2, "required"),
        (["restore", missing, "--data-dir", str(tmp / "r")], "", 1, "no backup"),
        (["stats", "--prometheus", "--data-dir", gone], "", 2, "no server is running"),
        (["cleanup", "extra"], "", 2, "unrecognized"),
        (["check", "--data-dir", missing], "", 2, "no such data directory"),
        (["check", "--data-dir", str(a_file)], "", 2, "no such data directory"),
        (["repair", "--data-dir", missing], "", 2, "no such data directory"),
        (["demo", "--linger", "-5"], "", 2, "--linger"),
        (["http", "--bogus"], "", 2, "unrecognized"),
        (["http", "--bind", "nonsense"], "", 1, "HOST:PORT"),
    ]


def test_every_subcommand_answers_bad_input_with_one_line(
    server: ServerProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv, stdin, want, words in bad_inputs(tmp_path, server):
        code, out, err = run(capsys, monkeypatch, *argv, stdin=stdin)
        assert code == want, (argv, code, out, err)
        if words:
            assert words in one_line(err), (argv, err)
        else:  # a failed command: its error reply is the output, as JSON
            assert json.loads(out)["ok"] is False and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "missing").exists()  # nothing was created for a typo
    assert not (tmp_path / "b").exists()


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
TOKENS = st.one_of(
    st.text(max_size=12),
    st.builds(lambda k, v: f"{k}={json.dumps(v)}", st.text(max_size=6), JSONISH),
    st.sampled_from(["state=t", "id=1", "--req-id", "-", "--", "--timeout", "=", "id=", "="]),
)
STDIN = st.lists(
    st.one_of(
        st.text(max_size=30),
        JSONISH.map(json.dumps),
        st.builds(
            lambda c, rest: json.dumps({"command": c, **rest}),
            st.sampled_from(["get_record", "LIST_STATES", "batch", "nope", "increment"]),
            st.dictionaries(st.sampled_from(["state", "id", "commands", "field"]), JSONISH),
        ),
    ),
    max_size=4,
).map(lambda lines: "".join(line.replace("\n", " ") + "\n" for line in lines))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(["get_record", "INCREMENT", "-", "batch", "x"]),
    rest=st.lists(TOKENS, max_size=4),
    stdin=STDIN,
)
def test_call_never_prints_a_traceback(
    server: ServerProcess,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    rest: list[str],
    stdin: str,
) -> None:
    code, out, err = run(capsys, monkeypatch, "call", "--timeout", "2", name, *rest, stdin=stdin)
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "unexpected error" not in err, err
    if code == 2:
        assert len(err.splitlines()) == 1, err
    for line in out.splitlines():
        assert isinstance(json.loads(line)["ok"], bool)


def test_the_real_script_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "STATEENGINE_DATA_DIR": str(tmp_path / "none")}
    for argv, stdin in (
        (["call", "-"], "[1,2]\n"),
        (["check", "--data-dir", str(tmp_path / "missing")], ""),
        (["call", "list_states", "--data-dir", str(tmp_path / "none")], ""),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "stateengine", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert out.returncode == 2, out
        one_line(out.stderr)
