"""The ``stateengine`` command line.

``serve`` runs the writer; the other subcommands talk to one or look at its data
directory. Used as people use ``redis-cli``: options go before or after the subcommand
(:func:`hoist_command`), command names are case-insensitive, errors are one line on
stderr with the exit codes of :data:`EXIT_CODES`, never a traceback (:func:`main`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from stateengine import __version__, defaults, jsoncodec
from stateengine.errors import BadRequest, StateEngineError
from stateengine.protocol import encode_reply
from stateengine.runtime import discovery as paths
from stateengine.server.engine import TableEngine
from stateengine.server.persistence import (
    DEFAULT_STORE,
    FSYNC_POLICIES,
    PersistenceError,
    Store,
    check,
    open_store,
    repair,
    store_backends,
)
from stateengine.server.publish import ArenaPublisher, arena_unavailable
from stateengine.server.server import DEFAULT_MAX_REQUEST, DataDirLocked, Server
from stateengine.shm import blocks as _blocks
from stateengine.shm import cleanup_stale

if TYPE_CHECKING:
    from stateengine.client.client import Client

#: The exit codes of every subcommand (README "Running the server"); ``repair`` adds 3.
EXIT_CODES = {
    0: "success",
    1: "the command ran and failed (an error reply, damage found, a refused start or value)",
    2: "the command line or input is malformed, a data directory is missing, or no server answered",
}
#: set to 1 to see the traceback of an unexpected error instead of its one line
TRACEBACK_ENV = "STATEENGINE_TRACEBACK"


class UsageError(Exception):
    """Bad usage or input: one line on stderr, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``stateengine call: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the subcommand and ``--help``; exit 2."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _write_path() -> str:
    """Which code builds the arena's blocks: the compiled C loops or their Python twin."""
    if _blocks.COMPILED:
        return "compiled C (shm/_speedups.c; STATEENGINE_PURE_PYTHON=1 runs pure Python)"
    why = "asked by STATEENGINE_PURE_PYTHON=1" if _blocks.FORCED else "C extension not built"
    return f"pure Python ({why})"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of *parser*, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def hoist_command(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """*argv* with the subcommand first: ``--data-dir D stats`` is ``stats --data-dir D``.

    Tokens before the subcommand are options of some subcommand; one that takes a value
    (``--data-dir D``, not ``--data-dir=D``) carries the next token along, so a value
    that happens to be a subcommand's name (``--data-dir demo``) is not taken for one.
    """
    choices = subcommands(parser)
    takes_value = {
        flag: action.nargs != 0
        for sub_parser in choices.values()
        for flag, action in sub_parser._option_string_actions.items()
    }
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in choices:
            return [token, *argv[:i], *argv[i + 1 :]]
        if token == "--" or not token.startswith("-"):
            return argv  # a positional before any subcommand: argparse says what is wrong
        i += 2 if "=" not in token and takes_value.get(token, False) else 1
    return argv


def _open_store(args: argparse.Namespace, data_dir: Path) -> Store | None:
    """The ``--store`` backend with its own options (``--pg-dsn``, ``--snapshot-bytes``)."""
    if args.store == "none":
        return None
    backend = store_backends()[args.store]  # argparse's choices came from the same registry
    options = {o.name: getattr(args, o.dest) for o in backend.options}
    return open_store(data_dir, args.store, fsync=args.fsync, **options)


def _add_store_arguments(p: argparse.ArgumentParser) -> None:
    """``--store`` over the registry (built-ins and installed plugins) and their options."""
    backends = store_backends()
    p.add_argument(
        "--store",
        choices=[*backends, "none"],
        default=DEFAULT_STORE,
        help="persistence backend (default: log = write-ahead log + snapshots; none: memory "
        "only); docs/extending.md adds one",
    )
    p.add_argument("--fsync", choices=FSYNC_POLICIES, default=defaults.FSYNC)
    for backend in backends.values():
        for option in backend.options:
            try:
                p.add_argument(
                    option.flag, type=option.type, default=option.default, help=option.help
                )
            except argparse.ArgumentError as exc:  # a plugin's flag taken by another
                logging.getLogger("stateengine").warning(
                    "store %s: option %s left out: %s", backend.name, option.flag, exc
                )


def check_manifests(directory: Path) -> tuple[int, int, list[str]]:
    """Parse every manifest file of *directory* and walk every node (``serve --manifests``).

    :return: ``(files, keys, errors)``; each error names file, line, node and reason. A
        placeholder naming a node no manifest of the directory defines is an error too
        (the parser checks relative names; absolute ones are checked here).
    """
    from stateengine.errors import ManifestError
    from stateengine.manifests.parser import Manifest, Template

    if not directory.is_dir():
        return 0, 0, [f"{directory}: not a directory"]
    manifest = Manifest(directory)
    names = sorted({p.stem for p in directory.iterdir() if p.suffix in (".yml", ".yaml")})
    errors: list[str] = []
    files = keys = 0
    for name in names:
        try:
            nodes = list(manifest.iter_nodes(name))
        except ManifestError as exc:
            errors.append(exc.message)
            continue
        files += 1
        keys += sum(1 for node in nodes if node.parent is not None)
        for node in nodes:
            for block, config in (("_store", node.store), ("_load", node.load)):
                for field_name, value in (config or {}).items():
                    values = value.values() if isinstance(value, dict) else [value]
                    refs = [r for v in values if isinstance(v, Template) for r in v.refs]
                    for ref in refs:
                        try:
                            manifest.node(ref.path)
                        except ManifestError:
                            errors.append(
                                f"{node.where}: node {node.path}: {block}.{field_name}"
                                f" placeholder ${{{ref.path}}} names no node of {directory}"
                            )
    return files, keys, list(dict.fromkeys(errors))


def serve(args: argparse.Namespace) -> int:
    """Run the writer until SIGINT/SIGTERM; exit 0 after answering what was received."""
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    manifest_line = None
    if args.manifests is not None:
        # Every manifest error surfaces before anything binds (file, line, node, reason).
        n_files, n_keys, errors = check_manifests(Path(args.manifests))
        if errors:
            for error in errors:
                print(f"stateengine serve: manifest error: {error}", file=sys.stderr)
            return 1
        manifest_line = f"  manifests: {args.manifests} ({n_files} files, {n_keys} keys)"
    data_dir = paths.resolve_data_dir(args.data_dir)
    server: Server | None = None
    gateway: subprocess.Popen[bytes] | None = None
    http_url = http_token = None
    try:
        paths.private_dir(data_dir)
        if args.http:
            from stateengine.app.gateway.__main__ import split_bind
            from stateengine.app.gateway.auth import resolve_token

            split_bind(args.http)  # a clear error before anything starts

            missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
            if missing:
                raise ValueError(f"--http needs {' and '.join(missing)}: pip install -e '.[http]'")
            http_token = resolve_token(args.http_token, data_dir, args.http_token_file)
        engine = TableEngine()
        publisher = None
        arena_off = "--no-arena" if args.no_arena else arena_unavailable()
        if arena_off is None:
            publisher = ArenaPublisher(
                engine,
                args.arena_size,
                max_size=args.arena_max_size,
                reader_slots=args.reader_slots,
            )
        options: dict[str, Any] = {
            "engine": engine,
            "publisher": publisher,
            "store": None,
            "max_request_bytes": args.max_request_bytes,
            "feed_hwm": args.feed_hwm,
            "tcp": args.tcp,
            "slow_ms": args.slow_ms,
        }
        if args.cluster:  # a node of a cluster: the stream is its log (docs/cluster.md)
            if importlib.util.find_spec("redis") is None:
                raise ValueError("--cluster needs redis-py: pip install -e '.[redis]'")
            from stateengine.server.cluster import ClusterNode

            server = ClusterNode(
                data_dir,
                args.endpoint,
                cluster=args.cluster,
                replicas=args.cluster_replicas,
                snapshot_seconds=args.cluster_snapshot_seconds,
                poll_ms=args.cluster_poll_ms,
                **options,
            )
            args.store, args.fsync = f"the cluster stream {args.cluster}", "by Redis"
        else:
            server = Server(data_dir, args.endpoint, **options)
        server.lock()  # before the store is opened: a second server must not touch it
        if not args.cluster:
            server.store = _open_store(args, data_dir)
        # Before start() writes server.json (the readiness signal): a SIGTERM from a
        # supervisor that just saw the server start must still be a clean stop.
        server.install_signal_handlers()
        server.freeze_after_start = True  # this process is the server's alone
        server.start()
        if args.http:
            gateway, http_url = start_gateway(
                server.data_dir, args.http, http_token, args.max_request_bytes
            )
    except (
        DataDirLocked,
        OSError,
        PersistenceError,
        StateEngineError,
        ValueError,
        RuntimeError,
    ) as exc:
        print(f"stateengine serve: {exc}", file=sys.stderr)
        if server is not None:
            server.close()
        return 1
    print(f"stateengine {__version__} serving", flush=True)
    print(f"  data dir: {server.data_dir}", flush=True)
    print(f"  endpoint: {server.endpoint}", flush=True)
    print(f"  store:    {args.store} (fsync {args.fsync})", flush=True)
    if server.recovery is not None:
        print(f"  recovery: {server.recovery.summary()}", flush=True)
    if server.publisher is not None:
        print(f"  arena:    {server.publisher.name}", flush=True)
        print(f"  blocks:   {_write_path()}", flush=True)
    else:
        print(f"  arena:    off ({arena_off}; workers read over the socket)", flush=True)
    if args.tcp:
        print(f"  tcp:      tcp://{args.tcp} (CurveZMQ; keys in {data_dir / 'curve'})", flush=True)
        feed = paths.read_server_file(server.data_dir).get("tcp_feed")
        print(f"  tcp feed: {feed or 'off (its port is taken: see the log)'}", flush=True)
    if manifest_line is not None:
        print(manifest_line, flush=True)
    if http_url is not None:  # the login URL, as Jupyter prints it; also in DIR/http.json
        print(
            f"  http:     {http_url} (dashboard; API token: {data_dir / 'http.json'})", flush=True
        )
    code = 0
    try:
        server.serve_forever()
    except PersistenceError as exc:
        print(f"stateengine serve: cannot persist, stopping: {exc}", file=sys.stderr)
        code = 1
    finally:
        if gateway is not None:
            stop_gateway(gateway)
        server.close()
    st = server.stats
    print(
        f"stateengine: stopped after {st['requests']} requests in {st['passes']} passes;"
        f" {st['dropped_replies']} replies dropped",
        flush=True,
    )
    return code


def start_gateway(
    data_dir: Path, bind: str, token: str | None, max_body_bytes: int
) -> tuple[subprocess.Popen[bytes], str]:
    """``serve --http``: the gateway as a child process, once the server is up.

    Never inside the writer's loop: HTTP parsing and JSON encoding must not slow the
    writer. The child reads the arena and writes through the queue like any worker, gets
    the token through its environment (not argv, which ``ps`` shows), and writes
    ``DIR/http.json`` when it listens; this waits for that (bounded) and returns its login
    URL (``?token=T``).
    Its body limit is the server's request limit (``--max-request-bytes``).

    :raises RuntimeError: the gateway exited or did not come up within 30 s.
    """
    from stateengine.app.gateway import HTTP_FILE

    env = dict(os.environ)
    if token:
        env["STATEENGINE_HTTP_TOKEN"] = token
    # -P: the gateway runs the installed package, whatever the working directory holds
    cmd = [sys.executable, "-P", "-m", "stateengine.app.gateway", "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [*cmd, "--bind", bind, "--max-body-bytes", str(max_body_bytes)],
        stdin=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTP gateway exited with {proc.returncode}")
        for name in (HTTP_FILE, f"http.{proc.pid}.json"):  # another gateway may hold http.json
            try:
                info = json.loads((data_dir / name).read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == proc.pid:
                return proc, str(info["login_url"])
        time.sleep(0.05)
    stop_gateway(proc)
    raise RuntimeError("the HTTP gateway did not start within 30 s")


def stop_gateway(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait (bounded), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        print("stateengine serve: the HTTP gateway did not stop in 10 s; killed", file=sys.stderr)
        proc.kill()
        proc.wait(10)


def existing_data_dir(args: argparse.Namespace) -> Path:
    """The data directory of a command that reads one (``check``, ``repair``).

    :raises UsageError: it does not exist (nothing is created for a typo).
    """
    data_dir = paths.resolve_data_dir(args.data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir}: no such data directory")
    return data_dir


def check_command(args: argparse.Namespace) -> int:
    data_dir = existing_data_dir(args)
    try:
        report = check(data_dir)
    except (OSError, PersistenceError) as exc:  # unreadable, or a store not reachable
        print(f"stateengine check: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, default=str))
    return 0 if report.get("ok") else 1


def repair_command(args: argparse.Namespace) -> int:
    data_dir = existing_data_dir(args)
    probe = Server(data_dir)
    try:
        probe.lock()
    except (DataDirLocked, OSError) as exc:  # in use, or not private (chmod 700 DIR)
        print(f"stateengine repair: {exc}", file=sys.stderr)
        return 1
    try:
        report = repair(data_dir)
    except (OSError, PersistenceError) as exc:
        print(f"stateengine repair: {exc}", file=sys.stderr)
        return 1
    finally:
        probe.close()
    print(json.dumps(report, indent=2, default=str))
    for line in report["lost"] + report["problems"]:
        print(f"stateengine repair: {line}", file=sys.stderr)
    return int(report["exit_code"])


def _curve(args: argparse.Namespace) -> dict[str, bytes] | None:
    """A client subcommand's CurveZMQ options: ``--curve-keys DIR`` or the two files.

    :raises StateEngineError: half a key pair, or keys that cannot be read (exit 2).
    """
    from stateengine.runtime.curve import client_options, find_keys

    server_key, secret = args.curve_server_key, args.curve_secret
    try:
        if args.curve_keys:
            found = find_keys(args.curve_keys)
            server_key, secret = server_key or found[0], secret or found[1]
        if not server_key and not secret:
            return None
        if not (server_key and secret):
            raise ValueError("give both --curve-server-key and --curve-secret (or --curve-keys)")
        return client_options(server_key, secret)
    except (OSError, ValueError) as exc:
        raise StateEngineError(f"CurveZMQ keys: {exc}") from None


def _client(args: argparse.Namespace, timeout: float | None = None) -> Client:
    from stateengine.client.client import Client  # here: serve never imports it

    given_endpoint_only = args.endpoint is not None and not args.data_dir
    data_dir = None if given_endpoint_only else paths.resolve_data_dir(args.data_dir)
    return Client(
        args.endpoint, data_dir, timeout=timeout or args.timeout, arena=False, curve=_curve(args)
    )


def _add_client_arguments(p: argparse.ArgumentParser, timeout: bool = True) -> None:
    """Where a client subcommand finds the server: locally, or over TCP with CurveZMQ."""
    p.add_argument("--data-dir")
    p.add_argument("--endpoint", help="a local server's ipc://, or tcp://HOST:PORT (remote)")
    p.add_argument("--curve-server-key", metavar="FILE", help="the server's server.key")
    p.add_argument("--curve-secret", metavar="FILE", help="this client's NAME.key_secret")
    p.add_argument(
        "--curve-keys",
        metavar="DIR",
        help="a directory with server.key and one NAME.key_secret (keygen --out)",
    )
    if timeout:
        p.add_argument(
            "--timeout", type=positive, default=defaults.CLI_TIMEOUT, help="seconds per reply"
        )


def _argument(text: str) -> tuple[str, Any]:
    """``key=value``: the value is JSON when it parses (with the wire's escapes), else
    the string itself (``state=leads``).

    :raises UsageError: not ``key=value``, or a malformed escape.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"arguments are key=value, not {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw  # a bare string: state=leads
    try:
        return key, jsoncodec.from_json(value)  # the wire's escapes: {"$b64": ...} is bytes
    except BadRequest as exc:  # a malformed escape: malformed input, exit 2 (README)
        raise UsageError(f"{key}: {exc.message}") from None


def normalized(request: Any, where: str) -> dict[str, Any]:
    """*request* with its command names in upper case (a ``BATCH``'s too): one rule for
    command names, case-insensitive, in ``call NAME`` and in ``call -`` alike.

    :raises UsageError: not a JSON object with a string ``command``.
    """
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise UsageError(f'{where}: a request is a JSON object with a "command" name')
    out = {**request, "command": request["command"].upper()}
    if out["command"] == "BATCH" and isinstance(out.get("commands"), list):
        out["commands"] = [
            {**c, "command": c["command"].upper()}
            if isinstance(c, dict) and isinstance(c.get("command"), str)
            else c  # the server says what is wrong with it
            for c in out["commands"]
        ]
    return out


def call_command(args: argparse.Namespace) -> int:
    """Send commands; print each reply as one JSON line. Exit 1 if any failed.

    A reply's ``req_id`` is printed with ``--req-id`` only: the one the stdin line gave,
    else the request's number (1, 2, ...).
    """
    if args.name == "-":
        if args.args:
            raise UsageError("call - reads requests from stdin and takes no key=value")
        requests = []
        for n, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:  # as a JSON body on the wire
                requests.append(normalized(jsoncodec.loads(line), f"stdin line {n}"))
            except BadRequest as exc:
                raise UsageError(f"stdin line {n}: {exc.message}") from None
    else:
        requests = [{"command": args.name.upper(), **dict(map(_argument, args.args))}]
    failed = False
    try:
        with _client(args) as client:
            for n, request in enumerate(requests, 1):
                reply = client.execute(request)
                failed |= not reply.get("ok")
                reply.pop("req_id", None)
                if args.req_id:
                    reply = {"req_id": request.get("req_id", n), **reply}
                print(encode_reply(reply, as_json=True).decode(), flush=True)
    except StateEngineError as exc:  # ServerUnavailable: no server, or it did not answer
        print(f"stateengine call: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def stats_command(args: argparse.Namespace) -> int:
    """Print the server's STATS; with --watch N, refresh every N seconds until Ctrl-C."""
    try:
        with _client(args) as client:
            while True:
                reply = client.execute({"command": "STATS"})
                if args.watch:
                    print("\x1b[2J\x1b[H", end="")
                if args.prometheus and reply.get("ok"):
                    from stateengine.app.metrics import render

                    print(render(reply["result"]).decode(), end="", flush=True)
                else:
                    print(json.dumps(reply.get("result", reply), indent=2, default=str), flush=True)
                if not args.watch:
                    return 0
                time.sleep(args.watch)
    except StateEngineError as exc:
        print(f"stateengine stats: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"stateengine stats: --prometheus needs prometheus_client ({exc}):"
            " pip install -e '.[metrics]' (from the checkout)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 0


def watch_command(args: argparse.Namespace) -> int:
    """Print each committed change of the tables as a JSON line (gaps flagged)."""
    try:  # a server known to be gone is an error at once, not a silent wait on its feed
        with _client(args, timeout=5.0) as probe:
            probe.execute({"command": "LIST_STATES"})
    except StateEngineError as exc:
        print(f"stateengine watch: {exc}", file=sys.stderr)
        return 2
    count = 0
    try:
        with _client(args, timeout=5.0) as client, client.watch(*args.tables) as watcher:
            for change in watcher.iter(timeout=args.timeout):
                line = {
                    "seq": change.seq,
                    "table": change.table,
                    "puts": change.puts,
                    "deletes": change.deletes,
                    "dropped": change.dropped,
                    "gap": change.gap,
                }
                print(encode_reply(line, as_json=True).decode(), flush=True)
                count += 1
                if args.count and count >= args.count:
                    break
    except StateEngineError as exc:
        print(f"stateengine watch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def backup_command(args: argparse.Namespace) -> int:
    """Ask the server for an online backup; move it to DEST (local) or name it (remote)."""
    from stateengine.server.backup import BACKUP_COMMAND, move_backup

    try:
        with _client(args) as client:
            reply = client.execute({"command": BACKUP_COMMAND})
    except StateEngineError as exc:
        print(f"stateengine backup: {exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"stateengine backup: {reply['error']['message']}", file=sys.stderr)
        return 1
    done = reply["result"]
    written = Path(done["path"])
    where = f"{written} on the server (copy it from there)"
    if written.is_dir():  # a local server: the backup is ours to move
        try:
            where = str(move_backup(written, Path(args.dest).absolute()).parent)
        except OSError as exc:
            print(f"stateengine backup: {exc}; the backup stays in {written}", file=sys.stderr)
            return 1
    print(f"backup at seq {done['seq']}: {done['records']} records in {done['tables']} tables")
    print(f"  {where} ({done['bytes']} bytes, {done['seconds']} s)")
    return 0


def restore_command(args: argparse.Namespace) -> int:
    """Load a backup into an empty data directory (no server may run on it)."""
    from stateengine.server.backup import restore

    data_dir = paths.resolve_data_dir(args.data_dir)
    if args.store == "none":
        print("stateengine restore: --store none keeps nothing to restore into", file=sys.stderr)
        return 2
    probe = Server(data_dir)
    try:
        probe.lock()
        options = {o.name: getattr(args, o.dest) for o in store_backends()[args.store].options}
        done = restore(Path(args.backup), data_dir, args.store, args.fsync, **options)
    except (DataDirLocked, OSError, PersistenceError) as exc:
        print(f"stateengine restore: {exc}", file=sys.stderr)
        return 1
    finally:
        probe.close()
    print(
        f"restored seq {done['seq']}: {done['records']} records in {done['tables']} tables"
        f" into {data_dir} (store {done['store']})"
    )
    return 0


def keygen_command(args: argparse.Namespace) -> int:
    """Make a client key pair; its public key is allowed in at the next server start."""
    from stateengine.server import curve

    data_dir = paths.resolve_data_dir(args.data_dir)
    try:
        secret, server_key = curve.add_client(data_dir, args.name, Path(args.out).absolute())
    except (OSError, ValueError) as exc:
        print(f"stateengine keygen: {exc}", file=sys.stderr)
        return 1
    print(f"client certificate (secret, keep private): {secret}")
    print(f"server public key (give to the client):    {server_key}")
    # The public key beside the secret: `--curve-keys OUT` then names both.
    paths.write_private_file(secret.parent / "server.key", server_key.read_bytes())
    print(f"both, for a client's --curve-keys:          {secret.parent}")
    print("restart the server for the new client to be allowed in")
    return 0


def cleanup_command(args: argparse.Namespace) -> int:
    """Remove what dead servers left: arena segments, and server.json/socket of a data dir."""
    removed = cleanup_stale()
    data_dir = paths.resolve_data_dir(args.data_dir)
    gone, left = paths.remove_leftovers(data_dir)
    removed += gone
    for name in removed:
        print(f"removed {name}")
    for reason in left:
        print(f"left {reason}")
    print(f"stateengine cleanup: {len(removed)} leftovers of dead servers removed")
    return 0


def positive(text: str) -> float:
    """An argparse type: a number of seconds or a count above zero."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


positive.__name__ = "positive number"  # argparse's message: "invalid positive number value"


def count(text: str) -> int:
    """An argparse type: a whole number above zero."""
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


count.__name__ = "positive integer"


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand but ``http`` (its own parser: the gateway's); defaults from
    :mod:`stateengine.defaults` and the store registry."""
    parser = OneLineParser(
        prog="stateengine",
        description="A local state server for Python processes.",
        epilog="Options go before or after the subcommand. Exit codes: "
        + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
        + " (repair: 3 startable but entries lost).",
    )
    parser.add_argument("--version", action="version", version=f"stateengine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the writer server")
    p.add_argument("--data-dir", help="default: $STATEENGINE_DATA_DIR or ./.stateengine")
    p.add_argument("--endpoint", help="default: a private ipc:// socket for the data dir")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST)
    _add_store_arguments(p)
    p.add_argument(
        "--no-arena",
        action="store_true",
        help="no shared-memory arena: workers read over the socket",
    )
    p.add_argument(
        "--arena-size",
        type=int,
        default=defaults.ARENA_SIZE,
        help="initial arena size in bytes (it grows as needed, up to --arena-max-size)",
    )
    p.add_argument(
        "--arena-max-size",
        type=int,
        default=defaults.ARENA_MAX_SIZE,
        help="the arena grows up to this many bytes; past it writes are refused",
    )
    p.add_argument(
        "--reader-slots",
        type=int,
        default=defaults.READER_SLOTS,
        help="processes (each client with the arena on) that can read the arena at once",
    )
    p.add_argument(
        "--feed-hwm",
        type=int,
        default=defaults.FEED_HWM,
        help="change-feed messages queued per subscriber before it misses some",
    )
    p.add_argument(
        "--manifests",
        metavar="DIR",
        help="a manifest directory to check at start: any error stops the server (exit 1)",
    )
    p.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="also serve remote clients on TCP, authenticated with CurveZMQ (off by default)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also run the HTTP gateway and dashboard (the 'http' extra; off by default)",
    )
    p.add_argument(
        "--http-token-file",
        metavar="PATH",
        help="the --http token, read from PATH (mode 0600); default: $STATEENGINE_HTTP_TOKEN,"
        " else one made in DIR/http.token",
    )
    p.add_argument("--http-token", help="the --http token itself (shown by ps: use the file)")
    p.add_argument(
        "--cluster",
        metavar="URL",
        help="a node of cluster NAME: writes ordered by a Redis stream (docs/cluster.md);"
        " URL is redis://HOST:PORT/NAME, or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER/NAME"
        " to find the master through Sentinel and follow its failovers",
    )
    p.add_argument(
        "--cluster-replicas",
        type=int,
        default=0,
        metavar="N",
        help="--cluster: answer a write once N Redis replicas have it (WAIT)",
    )
    p.add_argument(
        "--cluster-poll-ms",
        type=int,
        default=20,
        metavar="MS",
        help="--cluster: an idle node reads the stream every MS (client.sync() reads now)",
    )
    p.add_argument(
        "--cluster-snapshot-seconds",
        type=positive,
        default=30.0,
        metavar="S",
        help="--cluster: seconds between this node's snapshots (local and in Redis)",
    )
    p.add_argument(
        "--slow-ms",
        type=float,
        default=defaults.SLOW_MS,
        help="log requests slower than this (key=value lines)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: start, recovery, refusals; -vv: also every failed request",
    )
    p = sub.add_parser("keygen", help="allow a remote client: make its CurveZMQ key pair")
    p.add_argument("name")
    p.add_argument("--data-dir")
    p.add_argument(
        "--out",
        default=defaults.KEYS_DIR,
        help="a private directory (made 0700; an existing one must be 0700) for the "
        "client's secret certificate (default: ./stateengine-keys)",
    )
    p = sub.add_parser(
        "call",
        help="send one command (key=value arguments, values as JSON) or, with '-', "
        "one JSON request per stdin line; print replies as JSON lines",
    )
    p.add_argument("name", help="a command, in any case (create_record, LIST_STATES, ...), or '-'")
    p.add_argument("args", nargs="*", help="key=value; the value is JSON if it parses")
    p.add_argument("--req-id", action="store_true", help="print each reply's req_id")
    watch_parser = sub.add_parser("watch", help="stream committed changes of tables")
    watch_parser.add_argument("tables", nargs="+")
    watch_parser.add_argument("--count", type=count, help="exit after N changes")
    watch_parser.add_argument("--timeout", type=positive, help="exit after S quiet seconds")
    stats_parser = sub.add_parser("stats", help="the server's figures")
    backup_parser = sub.add_parser("backup", help="an online, consistent backup to DEST")
    backup_parser.add_argument("dest", help="a new or empty directory")
    for q in (p, stats_parser, watch_parser, backup_parser):
        _add_client_arguments(q, timeout=q not in (watch_parser, backup_parser))
    backup_parser.add_argument("--timeout", type=positive, default=600.0, help="seconds to wait")
    p = sub.add_parser("restore", help="load a backup into an empty data directory")
    p.add_argument("backup", help="a backup directory (stateengine backup DEST)")
    p.add_argument("--data-dir", help="default: $STATEENGINE_DATA_DIR or ./.stateengine")
    _add_store_arguments(p)
    stats_parser.add_argument("--watch", type=positive, metavar="SECONDS")
    stats_parser.add_argument(
        "--prometheus", action="store_true", help="Prometheus's text format (the metrics extra)"
    )
    p = sub.add_parser("cleanup", help="remove segments and run files of dead servers")
    p.add_argument("--data-dir")
    p = sub.add_parser("check", help="verify a data directory (exit 1 on damage)")
    p.add_argument("--data-dir")
    p = sub.add_parser(
        "repair",
        help="make a damaged data dir startable: rebuild a damaged snapshot from the "
        "previous one, cut a damaged log (exit 0 nothing lost, 3 entries lost, 1 failed)",
    )
    p.add_argument("--data-dir")
    p = sub.add_parser("demo", help="start a server and a worker pool, kill a worker, watch")
    p.add_argument(
        "--data-dir",
        help="default: a temporary directory, removed afterwards; a given one must not"
        " hold the demo's tables (tasks, counters) nor be in use by a server",
    )
    p.add_argument(
        "--wire",
        action="store_true",
        help="instead: send a short session to a real server over a plain ZeroMQ socket"
        " and print each frame sent and received",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the dashboard there (needs the 'http' extra), to watch the demo",
    )
    p.add_argument(
        "--linger",
        type=positive,
        default=defaults.DEMO_LINGER,
        metavar="SECONDS",
        help="with --http: keep the server and dashboard up this long after the demo",
    )
    sub.add_parser(
        "http",
        help="attach the HTTP gateway and dashboard to a running server",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``stateengine``: run a subcommand; its exit code (:data:`EXIT_CODES`).

    Every error is one line on stderr: a usage error or bad input exits 2, an
    unexpected error 1 (``STATEENGINE_TRACEBACK=1`` shows its traceback instead).
    """
    parser = build_parser()
    argv = hoist_command(parser, list(sys.argv[1:] if argv is None else argv))
    name = argv[0] if argv and not argv[0].startswith("-") else ""
    prog = f"stateengine {name}".strip()
    try:
        if name == "http":  # its own parser: python -m stateengine.app.gateway
            from stateengine.app.gateway.__main__ import main as http_main
            from stateengine.app.gateway.__main__ import parser as http_parser

            check_args = http_parser()
            check_args.error = OneLineParser(prog=prog).error  # type: ignore[method-assign]
            check_args.parse_args(argv[1:])  # one line on bad usage, before anything starts
            return http_main(argv[1:])
        chosen = subcommands(parser).get(name)
        if chosen is not None:  # options may come between positionals: call x a=1 --req-id b=2
            args = chosen.parse_intermixed_args(argv[1:])
            args.command = name
        else:  # --version, --help, or no or an unknown subcommand: the parser says so
            args = parser.parse_args(argv)
        return dispatch(args)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback (unless asked for)
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {exc}"
            f" ({TRACEBACK_ENV}=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; its exit code."""
    if args.command != "serve":
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `stateengine stats | head` is fine
    if args.command == "serve":
        return serve(args)
    if args.command == "check":
        return check_command(args)
    if args.command == "call":
        return call_command(args)
    if args.command == "stats":
        return stats_command(args)
    if args.command == "cleanup":
        return cleanup_command(args)
    if args.command == "watch":
        return watch_command(args)
    if args.command == "backup":
        return backup_command(args)
    if args.command == "restore":
        return restore_command(args)
    if args.command == "keygen":
        return keygen_command(args)
    if args.command == "repair":
        return repair_command(args)
    from stateengine.app import demo as pool_demo  # imported on use

    if args.wire:
        return pool_demo.wire()
    return pool_demo.run(args.data_dir, http=args.http, linger=args.linger)


if __name__ == "__main__":
    sys.exit(main())
