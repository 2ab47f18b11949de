"""README.md runs as written: its commands, in order, against a real standalone server.

The README's first block (``scripts/bootstrap && .venv/bin/conda-store-server --standalone
--demo``) is started as the server, with exactly two additions: ``--port`` (a free port, never
8080: the README's ``8080`` is replaced by it everywhere) and ``--config`` pointing at the local
test channel (so the server does not build its own channel first, which takes minutes).
``scripts/bootstrap`` itself is what made this test's ``.venv``; the second block is the test
command (this suite), only checked against ``.ci/run``. Every later ``sh`` block is run, in order,
as one bash script (``set -euo pipefail``), in a directory that looks like the clone (``.venv``
and ``.cache`` link to the real ones), except the lines listed in :data:`SKIPPED`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.testing.channel import cache_root

from .processes import cli_env
from .standalone_server import standalone_server, write_standalone_config

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

SERVER_BLOCK = "scripts/bootstrap && .venv/bin/conda-store-server --standalone --demo"
TEST_BLOCK = "scripts/bootstrap && .venv/bin/python -m pytest -q"

SKIPPED = ('echo "$TOKEN" | docker login ', "docker pull ", "docker run ", "CONDA_STORE_URL=http://localhost:8080 CONDA_STORE_TOKEN=$TOKEN jupyter lab")
"""Line prefixes not run: ``docker`` needs a Docker daemon (none on CI machines; ``skopeo copy``,
the same pull without a daemon, runs); ``jupyter lab`` is a server that runs until stopped (the
extension has its own tests, tests/jupyter/)."""


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.M | re.S)


def usage_script(blocks: list[str], port: int) -> tuple[str, list[str]]:
    """The blocks after Run and Test as one script, skipped lines removed; and what was skipped."""
    kept, skipped = [], []
    for block in blocks:
        for line in block.splitlines():
            (skipped if line.startswith(SKIPPED) else kept).append(line)
    return "\n".join(kept).replace(":8080", f":{port}") + "\n", skipped


def test_readme_commands_run_as_written(tmp_path, local_channel, package_cache_dir):
    blocks = sh_blocks(README.read_text())
    assert [b.strip() for b in blocks[:2]] == [SERVER_BLOCK, TEST_BLOCK], "the first screen changed"
    assert TEST_BLOCK.split("&& ")[1] in (ROOT / ".ci" / "run").read_text(), "README and .ci/run disagree"

    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (clone / ".cache").symlink_to(cache_root())
    config = write_standalone_config(tmp_path, local_channel, package_cache_dir)
    argv = SERVER_BLOCK.split("--standalone ")[1].split() + [f"--config={config}"]
    with standalone_server(clone, *argv) as server:
        port = int(server.url.rsplit(":", 1)[1])
        script, skipped = usage_script(blocks[2:], port)
        assert {prefix for prefix in SKIPPED for line in skipped if line.startswith(prefix)} == set(SKIPPED), \
            "a SKIPPED entry matches no README line any more"
        (tmp_path / "readme.sh").write_text("set -euo pipefail -x\n" + script)
        proc = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=clone, capture_output=True, text=True,
                              env=cli_env(tmp_path / "xdg"), timeout=900)
        assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{server.output()[-3000:]}"
    out = proc.stdout
    assert "authenticated: yes" in out
    assert re.search(r"^alice/ml: build \d+ COMPLETED$", out, re.M)
    assert (clone / "ml" / "index.json").exists()  # skopeo copied the image
    assert (clone / "out").is_dir() and any((clone / "out").iterdir())
