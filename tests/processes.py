"""Process helpers for tests and benchmarks: free ports, waiting on conditions, environments for
the CLI, and stopping what a test started (politely first, then for sure)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (once this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1, *,
             proc: subprocess.Popen | None = None, log: Path | None = None,
             ignore: type[BaseException] | tuple[type[BaseException], ...] = ()):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s.

    Fails at once if ``proc`` has exited; exceptions of the ``ignore`` types count as "not yet";
    failure messages end with the last 4000 characters of ``log``.
    """
    def tail() -> str:
        return f":\n{log.read_text(errors='replace')[-4000:]}" if log is not None else ""

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            args = proc.args if isinstance(proc.args, (list, tuple)) else [proc.args]
            raise AssertionError(f"{Path(str(args[0])).name} exited with {proc.returncode} before {what}{tail()}")
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail()}")
        time.sleep(interval)


def cli_env(xdg: Path, **extra: str | None) -> dict[str, str]:
    """A clean environment for the ``conda-store`` CLI: this process's environment without any
    ``CONDA_STORE*``/``JUPYTERHUB*``/``CONDA_PREFIX*`` variable, ``XDG_CACHE_HOME=xdg``, then
    ``extra`` (a ``None`` value leaves the variable unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA_STORE", "JUPYTERHUB", "CONDA_PREFIX"))}
    env["XDG_CACHE_HOME"] = str(xdg)
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (via /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to ``pid`` and all its descendants (snapshotted first); return the pids."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def stop_process(proc: subprocess.Popen, *, timeout: float = 30, group: bool = False) -> int:
    """SIGTERM ``proc``, wait up to ``timeout`` s, then SIGKILL it (its whole process group when
    ``group``, for processes started with ``start_new_session=True``). Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        return proc.wait(10)


def process_group(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (via /proc; zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def stop_group(pgid: int, *, timeout: float = 30) -> None:
    """SIGTERM every process of group ``pgid`` (also those whose parent has exited, which
    :func:`descendants` cannot find), wait up to ``timeout`` s for all of them, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 10)
        while process_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not process_group(pgid):
            return
    raise AssertionError(f"processes of group {pgid} survived SIGKILL: {process_group(pgid)}")
