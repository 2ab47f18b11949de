"""``conda-store-server`` as a real process: config file, listening URL printed, clean SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from conda_store_jupyter.server.testing import bearer
from conda_store_jupyter.testing.config import write_config


@contextlib.contextmanager
def server_process(config) -> Iterator[tuple[subprocess.Popen, str]]:
    """``conda-store-server --config CONFIG --port 0`` and the URL it printed; SIGKILLed if still alive."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from conda_store_jupyter.server.app import main; main()",
         "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            m = re.search(r"listening on (\S+)", proc.stdout.readline())
            url = m.group(1) if m else None
        assert url, "the server did not start"
        yield proc, url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_server_process_config_and_sigterm(tmp_path, redis_url):
    config = write_config(
        tmp_path / "conda_store_config.py",
        {"store_directory": str(tmp_path / "store"), "redis_url": redis_url},
        CondaStoreServer={"url_prefix": "/conda-store"},
        AuthenticationBackend={"predefined_tokens": {
            "proc-test-token-0123": {"primary_namespace": "x", "role_bindings": {"*/*": ["viewer"]}}}},
    )
    with server_process(config) as (proc, url):
        assert url.endswith("/conda-store/"), url
        r = httpx.get(url + "api/v1/permission", headers=bearer("proc-test-token-0123"))
        assert r.json()["data"]["primary_namespace"] == "x"
        assert httpx.get(url.replace("/conda-store/", "/api/v1/")).status_code == 404  # prefix applies
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_server_log_lines_have_timestamps_and_one_line_per_request(tmp_path, redis_url):
    """Every log line says when; an unknown route or a bad request is one line (the access log),
    not a tornado warning plus the access line."""
    config = write_config(tmp_path / "conda_store_config.py",
                          {"store_directory": str(tmp_path / "store"), "redis_url": redis_url})
    with server_process(config) as (proc, url):
        assert httpx.get(url + "no/such/route").status_code == 404
        assert httpx.get(url + "api/v1/build/abc/").status_code == 400
        assert httpx.patch(url + "api/v1/environment/").status_code == 405
        assert httpx.patch(url + "v2/").status_code == 405  # the registry's routes too
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    lines = output.splitlines()
    stamp = r"^\[[DIWEC] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+\] "
    assert lines and all(re.match(stamp, line) for line in lines), output
    for needle in ("/no/such/route", "/api/v1/build/abc/", "PATCH /api/v1/environment/", "PATCH /v2/"):
        matching = [line for line in lines if needle in line]
        assert len(matching) == 1, (needle, output)
    assert re.match(stamp + r"404 GET /no/such/route ", [x for x in lines if "/no/such" in x][0])
