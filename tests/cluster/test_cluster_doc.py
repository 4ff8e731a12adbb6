"""docs/cluster.md runs as written: its ``sh`` block starts the two nodes (host A and
host B: data dirs mapped into the test's directory, the Redis URL to the test's own
``redis-server``), then each ``python`` block runs on its host's node, in order, and
prints what its comments say."""

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
DOC_REDIS = "redis://redis.internal:6379"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


def expected_output(code: str) -> list[str]:
    """The values the snippet's ``print(...)  # value`` comments promise."""
    return re.findall(r"^print\(.*\)\s+# (.+)$", code, flags=re.M)


def test_cluster_doc_runs(tmp_path: Path, redis_server: RedisServer) -> None:
    (shell,) = blocks("sh")
    nodes: list[ServerProcess] = []
    try:
        for line in shell.splitlines():
            if not line.startswith("stateengine serve"):
                continue
            args = shlex.split(line.replace(DOC_REDIS, redis_server.url))[2:]
            i = args.index("--data-dir")
            data_dir = tmp_path / Path(args[i + 1]).name
            del args[i : i + 2]
            node = ServerProcess(data_dir, *args)
            node.start()
            nodes.append(node)
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
