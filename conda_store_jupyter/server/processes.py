"""``CondaStoreServer.processes``: several server processes accepting on one listening socket.

With ``processes > 1`` the command runs as::

    conda-store-server (main)      binds the port; then embedded services, migrations, admin token,
    │                              demo; waits for SIGTERM/SIGINT and stops everything below
    └── supervisor                 forked first; forks the N servers, replaces one that dies
        ├── server 1               its own event loop, SQLAlchemy engine and Redis client
        └── server N               (all accept on the same socket, one connection per wake-up;
                                    a busier one leaves new connections to the least loaded:
                                    ``httpserver.SharedLoad``, counts in shared memory)

Why a supervisor forked before anything else: a process that forks must hold no threads, locks,
database connections or event loop, or the child inherits half-held locks and shared sockets.
The main process needs all of these (the embedded services' monitor thread, migrations, the
demo's event loop), so the servers — the first ones and every replacement — are forked by a
process that never had any: the supervisor, forked from the main process before it creates
them (:func:`check_fork_safe` enforces it), and single-threaded for its whole life.

What the main process learns after that fork (the standalone store directory and channels, the
embedded Redis URL: traits it sets on the store) reaches the supervisor once, through a pipe,
in the *go* message; the supervisor forks no server before it. Migrations have run by then, so
the servers skip them.

Nothing is per-process that must be shared: tokens and browser sessions are verified against the
database on every request (a revoked token is refused by every process at once), the cookie
secret is a file the main process creates before *go*, live build logs come from Redis, on-demand
registry waits and ``/metrics`` read the database. What stays per process: hub-token answers
(cached ``HubAuthentication.cache_ttl`` seconds in each process, as with one process), and the
bundle index of the page (immutable files).

Nothing is left behind: the supervisor and servers get SIGTERM from the kernel when their parent
dies (``PR_SET_PDEATHSIG``), and the supervisor also stops when the pipe from the main process
closes.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from .httpserver import SharedLoad

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
"""Seconds the servers get to finish their requests after SIGTERM before they are SIGKILLed."""

RESTART_DELAY_MAX = 10.0
"""Longest pause before replacing a server that keeps dying at start (a broken config must not
turn into a fork loop)."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def default_processes() -> int:
    """The cores this process may run on (affinity and cgroup-limited CPU sets included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class ForkUnsafe(RuntimeError):
    """Something in this process (e.g. code run by the config file) started what a fork must not copy."""


def check_fork_safe(store: Any) -> None:
    """Raise unless this process may fork: one thread, no event loop, no DB engine, no Redis client."""
    problems = []
    if threading.active_count() != 1:
        problems.append(f"threads are running ({', '.join(t.name for t in threading.enumerate())})")
    if getattr(store, "_engine", None) is not None:
        problems.append("the database engine exists")
    if getattr(store, "_redis", None) is not None:
        problems.append("the Redis client exists")
    try:
        asyncio.get_running_loop()
        problems.append("an event loop is running")
    except RuntimeError:
        pass
    if problems:
        raise ForkUnsafe("cannot fork the server processes safely: " + "; ".join(problems)
                         + " (set CondaStoreServer.processes = 1 to serve from this process alone)")


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel for ``sig`` when our parent dies (Linux; elsewhere the pipe EOF covers it)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


@dataclass
class _Slot:
    """One server process the supervisor keeps alive."""

    pid: int = 0
    started: float = 0.0
    restart_at: float = 0.0  # when a dead one is due to be replaced
    delay: float = 0.0  # current back-off for a server that dies at start


@dataclass
class ServerProcesses:
    """The supervisor, seen from the main process (:meth:`fork`, :meth:`go`, :meth:`stop`).

    ``serve(sockets, shared)`` runs one server until SIGTERM/SIGINT; it is called in each forked
    server, with its slot in the open-connection counts all servers share (:class:`SharedLoad`).
    """

    sockets: list[socket.socket]
    count: int
    serve: Callable[[list[socket.socket], SharedLoad], None]
    pid: int = 0
    _control: int = -1
    _slots: list[_Slot] = field(default_factory=list)
    _counts: Any = None  # open connections per server slot, shared with the servers

    # -- the main process ------------------------------------------------------------------------
    def fork(self, store: Any) -> None:
        """Fork the supervisor now (call before creating threads, engines, Redis or a loop)."""
        check_fork_safe(store)
        before = _store_settings(store)
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the supervisor: never returns
            code = 1
            try:
                os.close(write_end)
                set_parent_death_signal()
                self._control = read_end
                code = self._supervise(store, before)
            except BaseException:  # noqa: BLE001 - say why, then exit without running the parent's cleanups
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(read_end)
        self.pid, self._control = pid, write_end
        for sock in self.sockets:  # only the servers accept: a copy here would just hold connections
            sock.close()

    def go(self, store: Any) -> None:
        """Send the supervisor the store's settings as they are now: it starts the servers."""
        message = pickle.dumps({"settings": _store_settings(store), "upgrade_database": False})
        os.write(self._control, len(message).to_bytes(8, "big") + message)

    def exited(self) -> int | None:
        """The supervisor's exit code once it has exited (reaped here), else None."""
        if not self.pid:
            return None
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def stop(self, timeout: float = STOP_TIMEOUT + 5) -> int:
        """SIGTERM the supervisor (it stops the servers) and wait; SIGKILL the group if it hangs."""
        if self._control >= 0:
            os.close(self._control)
            self._control = -1
        if not self.pid:
            return 0
        pid, self.pid = self.pid, 0
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        log.error("the server supervisor (pid %d) did not stop in %g s: killing it", pid, timeout)
        os.kill(pid, signal.SIGKILL)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    # -- the supervisor --------------------------------------------------------------------------
    def _supervise(self, store: Any, before: dict[str, Any]) -> int:
        # Signals are taken synchronously (sigtimedwait): no handler runs between our own steps.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *_STOP_SIGNALS})
        message = self._read_go()
        if message is None:
            return 0  # the main process stopped (or died) before the servers were needed
        for name, value in message["settings"].items():
            if before.get(name, _MISSING) != value:
                setattr(store, name, value)
        store.upgrade_database = message["upgrade_database"]
        # Anonymous shared memory, mapped before the servers are forked: every one sees the others'.
        self._counts = memoryview(mmap.mmap(-1, 8 * self.count)).cast("q")
        self._slots = [_Slot() for _ in range(self.count)]
        for slot in self._slots:
            self._start(slot, store)
        while True:
            sig = signal.sigtimedwait({signal.SIGCHLD, *_STOP_SIGNALS}, 0.5)
            if sig is not None and sig.si_signo in _STOP_SIGNALS:
                break
            if self._main_gone():
                break
            self._reap(store)
        return self._stop_servers()

    def _read_go(self) -> dict | None:
        header = _read_exactly(self._control, 8)
        if header is None:
            return None
        body = _read_exactly(self._control, int.from_bytes(header, "big"))
        return None if body is None else pickle.loads(body)  # noqa: S301 - from our own parent process

    def _main_gone(self) -> bool:
        readable, _, _ = select.select([self._control], [], [], 0)
        return bool(readable) and os.read(self._control, 1) == b""

    def _start(self, slot: _Slot, store: Any) -> None:
        index = self._slots.index(slot)
        self._counts[index] = 0  # a dead one's connections are gone with it
        pid = os.fork()
        if pid == 0:  # a server: never returns
            code = 1
            try:
                os.close(self._control)
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                set_parent_death_signal()
                self.serve(self.sockets, SharedLoad(self._counts, index))
                code = 0
            except BaseException:  # noqa: BLE001 - say why; the supervisor replaces us
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        slot.pid, slot.started = pid, time.monotonic()

    def _reap(self, store: Any) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.pid:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
                if pid == 0:
                    continue
                lived = now - slot.started
                # One that dies at start again and again waits longer each time; one that ran a
                # while is replaced at once.
                slot.delay = min(RESTART_DELAY_MAX, max(0.5, slot.delay * 2)) if lived < 5 else 0.0
                slot.pid, slot.restart_at = 0, now + slot.delay
                self._counts[self._slots.index(slot)] = 2**62  # never "the least loaded" while dead
                log.warning("server process %d exited (%s) after %.1f s: replacing it%s", pid,
                            _describe(status), lived, f" in {slot.delay:g} s" if slot.delay else "")
            if not slot.pid and now >= slot.restart_at:
                self._start(slot, store)

    def _stop_servers(self) -> int:
        pids = [slot.pid for slot in self._slots if slot.pid]
        for pid in pids:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if os.waitpid(pid, os.WNOHANG)[0] == 0]
            if pids:
                signal.sigtimedwait({signal.SIGCHLD}, 0.1)
        for pid in pids:
            log.error("server process %d did not stop in %g s: killing it", pid, STOP_TIMEOUT)
            _kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return 0


_MISSING = object()


def _store_settings(store: Any) -> dict[str, Any]:
    """The store's configurable trait values that can be pickled (what the main process may change)."""
    settings = {}
    for name in store.traits(config=True):
        value = getattr(store, name)
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - e.g. a callable from the config file: inherited by the fork anyway
            continue
        settings[name] = value
    return settings


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
