"""Start and stop a private Debian ``redis-server`` for tests and benchmarks.

A real server (not fakeredis) because RQ workers are separate processes that need INFO, SCRIPT,
blocking pops and streams exactly as production Redis has them. It binds 127.0.0.1 on a free port
(never a fixed one), keeps nothing on disk, and lives in a temporary directory removed on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .processes import free_port, stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0
"""Seconds to wait for PONG before giving up (it normally answers in < 0.5 s)."""


def available() -> bool:
    return Path(REDIS_SERVER).is_file()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield ``redis://127.0.0.1:<port>`` of a fresh redis-server; stop it afterwards."""
    import redis

    tmp = Path(tempfile.mkdtemp(prefix="redis-"))
    # A port is free when picked but may be taken before redis binds it: retry a few times.
    for _attempt in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp), "--logfile", str(tmp / "redis.log"), "--databases", "64"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        client.close()
        if proc.poll() is None:
            break
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"redis-server did not start; log: {tmp / 'redis.log'}")
    try:
        yield url
    finally:
        stop_process(proc, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
