"""docs/cluster.md runs as written: its ``sh`` block starts the two nodes (host A and
host B: data dirs mapped into the test's directory, the Redis URL to the test's own
``redis-server``), then each ``python`` block runs on its host's node, in order, and
prints what its comments say. README.md's "Several machines" section holds the same two
commands: they start two nodes that share their tables."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from cluster_harness import RedisServer

from stateengine.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cluster.md"
README = ROOT / "README.md"
DOC_REDIS = "redis://redis.internal:6379"


def blocks(lang: str, text: str | None = None) -> list[str]:
    text = DOC.read_text() if text is None else text
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def readme_section() -> str:
    (section,) = re.findall(r"^## Several machines\n(.*?)(?=^## )", README.read_text(), re.M | re.S)
    return section


def start_nodes(shell: str, tmp_path: Path, url: str) -> list[ServerProcess]:
    """One node per ``stateengine serve`` line of *shell*, its data dir under *tmp_path*."""
    nodes: list[ServerProcess] = []
    try:
        for line in shell.splitlines():
            if not line.startswith("stateengine serve"):
                continue
            args = shlex.split(line.replace(DOC_REDIS, url))[2:]
            i = args.index("--data-dir")
            data_dir = tmp_path / Path(args[i + 1]).name
            del args[i : i + 2]
            node = ServerProcess(data_dir, *args)
            nodes.append(node)
            node.start()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def expected_output(code: str) -> list[str]:
    """The values the snippet's ``print(...)  # value`` comments promise."""
    return re.findall(r"^print\(.*\)\s+# (.+)$", code, flags=re.M)


def test_cluster_doc_runs(tmp_path: Path, redis_server: RedisServer) -> None:
    (shell,) = blocks("sh")
    nodes = start_nodes(shell, tmp_path, redis_server.url)
    try:
        assert len(nodes) == 2, shell
        snippets = blocks("python")
        assert len(snippets) == 2
        for node, code in zip(nodes, snippets, strict=True):
            env = {**os.environ, "STATEENGINE_DATA_DIR": str(node.data_dir)}
            out = subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout.split() == expected_output(code), out.stdout
    finally:
        for node in nodes:
            node.stop()


def test_readme_cluster_commands_start_two_nodes_that_share_their_tables(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    (shell,) = blocks("sh", readme_section())
    assert shell == blocks("sh")[0], "README and docs/cluster.md start a cluster alike"
    a, b = start_nodes(shell, tmp_path, redis_server.url)
    try:
        with a.connect() as on_a, b.connect() as on_b:
            on_a.create_state("orders")
            on_a.create_record("orders", {"item": "lamp"})
            on_b.sync()
            assert on_b.get_record("orders", 1)["item"] == "lamp"
    finally:
        a.stop()
        b.stop()
