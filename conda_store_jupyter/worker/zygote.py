"""The warm build runner: build children forked from a pre-imported process, not started afresh.

A build used to run in a fresh interpreter (``python -m ...worker.tasks run-build``): about a
second of interpreter start-up, imports (rattler, pydantic models, conda-lock, SQLAlchemy, the
config file) and connection set-up on every build's critical path, for a pipeline whose solve
and install take tens of milliseconds. Now the ``conda-store-worker`` process is the *zygote*:
it imports everything a build needs once (:func:`preload`), RQ forks a work horse from it per
job, and the horse (the build's supervisor) forks the build child from itself, which starts with
every module imported and its configuration loaded.

A fork copies the memory of the forking thread only, so the rules that make it safe are:

* **No thread and no lock held at fork time.** The worker runs no other thread (see
  ``runner.py``); :func:`preload` only imports, and checks that no import started a thread. Native
  runtimes that start threads on first *use* (rattler's tokio runtime) are never used by the
  worker or the supervisor: only by the child, after the fork.
* **No connection shared with the parent.** The child disposes of the inherited database pool
  without closing the parent's connections (SQLAlchemy's ``dispose(close=False)``), opens its own
  Redis connections (redis-py also re-checks the pid) and storage client.
* **Nothing of the parent's runs in the child**: its signal handlers are reset to the defaults,
  stdio points at the build's ``child.stderr``, and the child leaves through ``os._exit`` only, so
  no ``finally``, ``atexit`` or RQ code of the supervisor runs twice.

Isolation stays what it was: the child is its supervisor's child, in its own session and process
group (the supervisor stops it and everything it started with one ``killpg``), watching its
parent; a crash or SIGKILL of the child ends only the child. A Python-level logging handler is
safe: its lock is re-created in the child (``logging`` registers an at-fork hook).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

PRELOAD = (
    # the pipeline and every step it imports lazily
    "rattler",
    "conda_store_jupyter.builder.pipeline",
    "conda_store_jupyter.builder.solve",
    "conda_store_jupyter.builder.install",
    "conda_store_jupyter.builder.lockfile",
    "conda_store_jupyter.builder.export",
    "conda_store_jupyter.builder.pip",
    "conda_store_jupyter.builder.pack",
    "conda_store_jupyter.builder.log",
    "conda_store_jupyter.schema",
    "conda_lock.lockfile",  # its import is most of what writing a lockfile used to cost (0.6 s)
    "conda_lock.lockfile.v1.models",
    "conda_lock.lockfile.v2prelim.models",
    "conda_lock.models.channel",
    "conda_pack",
    "uv",
    "packaging.requirements",
    "packaging.utils",
    "yaml",
    # what the build child and its supervisor use around the pipeline
    "conda_store_jupyter.orm",
    "conda_store_jupyter.worker.tasks",
    "conda_store_jupyter.worker.lifecycle",
    "conda_store_jupyter.worker.logs",
    "conda_store_jupyter.worker.record",
    "conda_store_jupyter.worker.links",
    "conda_store_jupyter.worker.settings",
    "conda_store_jupyter.storage.base",
    "conda_store_jupyter.storage.local",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "rq.job",
    "rq.exceptions",
)
"""Modules the zygote imports once; a build child then starts with them all loaded."""

CHILD_NAME = "csj-build"
"""The build child's process name (``/proc/<pid>/comm``, as ``ps`` and ``top`` show it)."""

_RESET_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2", "SIGCHLD")
"""Handlers of the supervisor (and RQ) that must not run in the child. SIGPIPE stays ignored, as
Python sets it: a closed socket is an exception, not the death of the build."""


def modules_for(store: "CondaStore") -> tuple[str, ...]:
    """:data:`PRELOAD`, plus the storage backend of ``store`` (boto3 only where S3 is used)."""
    extra = [store.storage_class.__module__]
    if "s3" in store.storage_class.__module__.rsplit(".", 1)[-1]:
        extra += ["boto3", "botocore.config", "botocore.exceptions"]
    return (*PRELOAD, *extra)


def preload(modules: tuple[str, ...] = PRELOAD) -> float:
    """Import ``modules`` (those missing are skipped); return the seconds it took.

    Raises RuntimeError if an import left a second thread running: every fork from this process
    would copy that thread's locks in whatever state they were in.
    """
    start = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - e.g. an optional extra not installed: the build
            log.debug("preload: %s not imported: %s", name, exc)  # imports it (or fails) itself
    threads = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    with contextlib.suppress(OSError):  # native threads too (a Rust runtime), where /proc says so
        native = len(os.listdir("/proc/self/task")) - 1 - len(threads)
        threads += [f"{native} native thread(s)"] if native > 0 else []
    if threads:
        raise RuntimeError(f"preloading started thread(s) {threads}: forking build children would not be safe")
    return time.perf_counter() - start


def _set_process_name(name: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name[:15])


class ForkedChild:
    """A forked build child, with the part of ``subprocess.Popen``'s interface the supervisor uses.

    Waiting uses a pidfd where the kernel has them, so the supervisor learns of the child's exit
    at once rather than at its next poll.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self._set(255)
                return self.returncode
            if pid == self.pid:
                self._set(os.waitstatus_to_exitcode(status))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"build child {self.pid}", timeout)
            if self._pidfd is not None:
                poller = select.poll()
                poller.register(self._pidfd, select.POLLIN)
                poller.poll(None if left is None else max(1, int(left * 1000)))
            else:
                time.sleep(min(0.01, left) if left is not None else 0.01)
        return self.returncode  # type: ignore[return-value]

    def _set(self, code: int) -> None:
        self.returncode = code
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None


def fork_child(target: Callable[[], int], *, output: Path, name: str = CHILD_NAME) -> ForkedChild:
    """Fork a child that runs ``target()`` in its own session with stdout/stderr into ``output``,
    and exits with its return value (1 and a traceback in ``output`` if it raises)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # or the child would write the parent's buffered output again
    out_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        for fd in (out_fd, ready_r, ready_w):
            os.close(fd)
        raise
    if pid == 0:  # the child: never returns into the parent's code
        code = 1
        try:
            os.close(ready_r)
            os.setsid()  # its own session and process group: the supervisor's killpg stops it all
            os.close(ready_w)  # tells the parent its process group exists
            for sig in _RESET_SIGNALS:
                if hasattr(signal, sig):
                    signal.signal(getattr(signal, sig), signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(null)
            os.close(out_fd)
            # Python-level streams on the new fds 1 and 2 (the inherited objects may write elsewhere);
            # a logging handler made from the old sys.stderr still writes to fd 2 in a worker.
            sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
            sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
            _set_process_name(name)
            code = int(target() or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported in the output, which the supervisor quotes
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            try:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
            finally:
                os._exit(code)
    os.close(out_fd)
    os.close(ready_w)
    try:  # until the child has its own process group (EOF: setsid done, or the child died)
        os.read(ready_r, 1)
    finally:
        os.close(ready_r)
    return ForkedChild(pid)


def detach_store(store: "CondaStore") -> None:
    """In a forked child: stop using the parent's connections (see the module docstring)."""
    if store._engine is not None:
        store._engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    store._redis = None
    store._storage = None  # an S3 client holds a connection pool of its own


# -- the zygote's own store, shared with the jobs forked from it ---------------------------------
_ZYGOTE: tuple[int, str | None, "CondaStore"] | None = None


def adopt(store: "CondaStore", config_path: str | None) -> None:
    """Make ``store`` (loaded from ``config_path``) the store of every job forked from this process:
    no config file read, no engine built, no SQL statement compiled again per job. Every fork
    detaches it from this process's connections (:func:`detach_store`)."""
    global _ZYGOTE
    _ZYGOTE = (os.getpid(), config_path, store)
    os.register_at_fork(after_in_child=lambda: detach_store(store))


def adopted_store(config_path: str | None) -> "CondaStore | None":
    """The zygote's store, in a process forked from it, if it was loaded from ``config_path``."""
    if _ZYGOTE is None or _ZYGOTE[0] == os.getpid() or _ZYGOTE[1] != config_path:
        return None
    return _ZYGOTE[2]
