"""Start and stop a private Debian ``redis-server`` for tests and benchmarks.

A real server (not fakeredis) because RQ workers are separate processes that need INFO, SCRIPT,
blocking pops and streams exactly as production Redis has them. It binds 127.0.0.1 on a free port
(never a fixed one) and lives in a temporary directory removed on exit. By default it keeps
nothing on disk; :class:`RedisServer` can also keep an append-only file, and be SIGKILLed and
started again on the same port (fault tests).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
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


class RedisServer:
    """One redis-server process on a fixed (free) port of 127.0.0.1 and a private directory."""

    def __init__(self, *, appendonly: bool = False) -> None:
        self.appendonly = appendonly
        self.dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start it (on a new free port the first time, on the same port afterwards); return its URL."""
        # A port is free when picked but may be taken before redis binds it: retry a few times.
        for _attempt in range(5):
            self.port = self.port or free_port()
            if self._launch():
                return self.url
            if self.proc is not None and self.proc.poll() is None:
                stop_process(self.proc, timeout=5)
            self.port = 0
        raise RuntimeError(f"redis-server did not start; log: {self.dir / 'redis.log'}")

    def _launch(self) -> bool:
        import redis

        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly else \
            ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"), "--databases", "64"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    client.ping()
                    return True
                except redis.exceptions.ConnectionError:  # incl. LOADING the append-only file
                    time.sleep(0.05)
        finally:
            client.close()
        return False

    def kill(self) -> None:
        """SIGKILL it (no shutdown save, no goodbye to clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def restartable_redis_server(*, appendonly: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped and removed afterwards."""
    server = RedisServer(appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield ``redis://127.0.0.1:<port>`` of a fresh redis-server; stop it afterwards."""
    with restartable_redis_server() as server:
        yield server.url
