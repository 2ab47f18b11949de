"""Stopping what a test started: politely first, then for sure."""

from __future__ import annotations

import os
import signal
import subprocess


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
