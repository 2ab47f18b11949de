"""``conda-store-server`` as a real process: config file, listening URL printed, clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from conda_store_jupyter.server.testing import bearer
from conda_store_jupyter.testing.config import write_config


def test_server_process_config_and_sigterm(tmp_path, redis_url):
    config = write_config(
        tmp_path / "conda_store_config.py",
        {"store_directory": str(tmp_path / "store"), "redis_url": redis_url},
        CondaStoreServer={"url_prefix": "/conda-store"},
        AuthenticationBackend={"predefined_tokens": {
            "proc-test-token-0123": {"primary_namespace": "x", "role_bindings": {"*/*": ["viewer"]}}}},
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", "from conda_store_jupyter.server.app import main; main()",
         "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"listening on (\S+)", line)
            url = m.group(1) if m else None
        assert url and url.endswith("/conda-store/"), url
        r = httpx.get(url + "api/v1/permission", headers=bearer("proc-test-token-0123"))
        assert r.json()["data"]["primary_namespace"] == "x"
        assert httpx.get(url.replace("/conda-store/", "/api/v1/")).status_code == 404  # prefix applies
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
