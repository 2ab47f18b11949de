"""A real ``conda-store-server --standalone`` process for the tests that restart it or follow its
console (tests/test_standalone.py, tests/test_readme.py).

The store builds from the local test channel (a config file says so), so no channel is built
on start; the server picks up redis-server and workers itself, exactly as a user's would.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from conda_store_jupyter.testing.config import local_channel_traits, write_config

from .processes import free_port, stop_process, wait_for

BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0
"""Seconds a standalone server may take to answer (redis-server, migrations) on a loaded machine."""


@dataclass
class Standalone:
    proc: subprocess.Popen
    url: str  # no trailing slash
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The first match of ``pattern`` in the server's console output, once it appears."""
        return wait_for(lambda: re.search(pattern, self.output()), timeout, f"{pattern!r} in the server output",
                        0.1, proc=self.proc, log=self.log)


def write_standalone_config(directory: Path, channel, package_cache: Path) -> Path:
    """A config file for a store under ``directory`` that builds from the local test channel."""
    return write_config(directory / "conda_store_config.py",
                        {**local_channel_traits(channel, package_cache), "conda_solve_platforms": ["linux-64"]})


@contextlib.contextmanager
def standalone_server(cwd: Path, *args: str, log_name: str = "server.log") -> Iterator[Standalone]:
    """Start ``conda-store-server --standalone ARGS`` in ``cwd`` on a free port; stop it (SIGTERM,
    then SIGKILL of its process group) on exit, also when the test fails."""
    port = free_port()
    log = cwd / log_name
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "conda-store-server"), "--standalone", f"--port={port}", *args],
                                stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    server = Standalone(proc=proc, url=f"http://127.0.0.1:{port}", log=log)
    try:
        wait_for(lambda: httpx.get(f"{server.url}/api/v1/", timeout=2).status_code == 200, START_TIMEOUT,
                 "conda-store-server to answer", 0.2, proc=proc, log=log, ignore=httpx.HTTPError)
        yield server
    finally:
        stop_process(proc, group=True)
