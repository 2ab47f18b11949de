"""``BuildWorker``: the RQ worker of ``conda-store-worker``: flat, watchful, and Redis-tolerant.

**Flat.** RQ forks a work horse for every job. A fork copies every lock of the parent in the state
it is in, but only the forking thread: a lock another thread held at that instant stays held in
the child forever. (Seen: the job child blocked for good in SQLAlchemy's mapper-configuration
mutex, held by the reconciler thread of its worker at the fork.) So the process that forks runs
no other thread at all:

* the reconciler and repair (``reconcile.py``, ``repair.py``) run here, in the main thread, every
  ``interval`` seconds: between blocking dequeues while idle (the dequeue wait is capped at the
  interval) and from RQ's job-monitoring loop while a job runs;
* RQ's pubsub thread (the ``rq`` command channel: kill-horse, shutdown) is not started; nothing
  here uses those commands (a cancel is the build's cancel key, read by its supervisor);
* the work horse disposes of the database pool it inherited (``__main__``), and mappers are
  configured before the first fork.

**Watchful.** A build job's supervisor refreshes the build's heartbeat every 2 s. If the heartbeat
of the job this worker runs makes no progress for ``stale_after`` seconds, the horse is stuck
(deadlock, stopped process): it is stopped, the worker slot is free again, and the reconciler
queues the build again (RQ saw the job fail). Detection takes at most ``stale_after`` + one
monitoring interval (30 + 10 s by default), well within a minute.

**Stopping a horse** (cold shutdown, RQ's own job timeout) sends SIGTERM first: the supervisor
stops its build's process group and queues the build again, then exits. SIGKILL follows after
``HORSE_STOP_GRACE`` seconds if it did not. The watchdog kills a stuck horse at once.

**Redis-tolerant.** Redis restarting (or being restarted by ``EmbeddedServices``) must not kill a
worker in the middle of a build: failed heartbeats and maintenance are logged and retried, and
the dequeue loop waits for Redis with a back-off capped at ``MAX_CONNECTION_WAIT``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING

import redis
from rq import Worker

from .queue import heartbeat_key
from .reconcile import RECONCILE_INTERVAL, STALE_AFTER, reconcile

if TYPE_CHECKING:
    from ..app import CondaStore
    from .repair import RepairPolicy

log = logging.getLogger(__name__)

HORSE_STOP_GRACE = 10.0
"""Seconds a work horse gets after SIGTERM (its supervisor stops the build: up to 2 x 5 s of
``tasks.TERM_GRACE`` in the worst case, normally well under a second) before SIGKILL."""

MAX_CONNECTION_WAIT = 5.0
"""Longest wait (s) between two attempts to reach Redis again (RQ's default is 60 s)."""

BUILD_JOB_FUNC = "conda_store_jupyter.worker.tasks.build_environment"

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class BuildWorker(Worker):
    """An RQ ``Worker`` that never runs a second thread; see the module docstring."""

    max_connection_wait_time = MAX_CONNECTION_WAIT

    def __init__(self, *args, store: "CondaStore", interval: float = RECONCILE_INTERVAL,
                 stale_after: float = STALE_AFTER, repair_interval: float | None = None,
                 repair_policy: "RepairPolicy | None" = None, **kwargs) -> None:
        from .repair import REPAIR_INTERVAL, RepairPolicy

        self.store = store
        self.interval = float(interval)  # before RQ's __init__, which reads dequeue_timeout
        if interval > 0:
            kwargs.setdefault("job_monitoring_interval", max(1, min(30, int(interval))))
        super().__init__(*args, **kwargs)
        self.stale_after = float(stale_after)
        self.repair_interval = REPAIR_INTERVAL if repair_interval is None else float(repair_interval)
        self.repair_policy = repair_policy or RepairPolicy()
        self.stop_signaled = False
        self._housekeeping = False
        self._pending_stop: tuple | None = None  # a stop signal that arrived during housekeeping
        self._next_reconcile = 0.0
        self._next_repair = 0.0  # the first pass repairs too
        self._progress: tuple[str, bytes | None, float] | None = None  # (job id, heartbeat, when it changed)

    # -- no threads --------------------------------------------------------------------------------
    def subscribe(self) -> None:
        """No pubsub thread (see the module docstring)."""

    def unsubscribe(self) -> None:
        pass

    # -- housekeeping in the main thread --------------------------------------------------------------
    @property
    def dequeue_timeout(self) -> int:
        if self.interval > 0:
            return max(1, int(self.interval))
        return super().dequeue_timeout

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return super().should_run_maintenance_tasks or self._housekeeping_due()

    def run_maintenance_tasks(self) -> None:
        if super().should_run_maintenance_tasks:
            try:
                super().run_maintenance_tasks()
            except _REDIS_DOWN as exc:
                log.warning("RQ maintenance skipped, Redis unavailable: %s", exc)
        self.housekeep()

    def _housekeeping_due(self) -> bool:
        return self.interval > 0 and time.monotonic() >= self._next_reconcile

    def housekeep(self) -> None:
        """Reconcile (and repair, when due) now if due; never raises."""
        if not self._housekeeping_due():
            return
        from .repair import repair

        self._next_reconcile = time.monotonic() + self.interval
        self._housekeeping = True
        try:
            try:
                reconcile(self.store, stale_after=self.stale_after)
            except Exception as exc:  # noqa: BLE001 - Redis or the database may come back
                log.warning("reconcile failed (retrying in %.0f s): %s: %s", self.interval, type(exc).__name__, exc)
            if self.repair_interval > 0 and time.monotonic() >= self._next_repair:
                self._next_repair = time.monotonic() + self.repair_interval
                try:
                    repair(self.store, self.repair_policy)
                except Exception as exc:  # noqa: BLE001
                    log.warning("repair failed (retrying in %.0f s): %s: %s", self.repair_interval,
                                type(exc).__name__, exc)
        finally:
            self._housekeeping = False
            pending, self._pending_stop = self._pending_stop, None
            if pending is not None:  # now RQ may raise StopRequested (idle) or flag the stop (busy)
                super().request_stop(*pending)

    # -- while a job runs -------------------------------------------------------------------------
    def maintain_heartbeats(self, job, execution) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except _REDIS_DOWN as exc:
            log.warning("could not refresh the worker's heartbeat, Redis unavailable: %s", exc)
            self._progress = None  # no news is not bad news while Redis is away
        self.housekeep()
        self._watch_progress(job)

    def heartbeat(self, *args, **kwargs) -> None:
        try:
            super().heartbeat(*args, **kwargs)
        except _REDIS_DOWN as exc:
            log.warning("could not refresh the worker's heartbeat, Redis unavailable: %s", exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except _REDIS_DOWN:
            pass  # the dequeue right after waits for Redis

    def _watch_progress(self, job) -> None:
        """Stop the horse if the build it supervises stopped making progress (see the docstring)."""
        if self.stale_after <= 0 or job.func_name != BUILD_JOB_FUNC or not self.horse_pid:
            return
        now = time.monotonic()
        try:
            value = self.store.redis.get(heartbeat_key(job.args[0]))
        except _REDIS_DOWN:
            self._progress = None
            return
        if self._progress is None or self._progress[0] != job.id or (value is not None and value != self._progress[1]):
            self._progress = (job.id, value, now)
            return
        silent = now - self._progress[2]
        if silent > self.stale_after:
            log.error("job %s (build %s) made no progress for %.0f s; killing its work horse %s",
                      job.id, job.args[0], silent, self.horse_pid)
            self._progress = None
            # A stuck process would not act on SIGTERM either: SIGKILL its group. Its build child
            # sees its parent gone and kills its own group; the reconciler queues the build again.
            super().kill_horse(signal.SIGKILL)

    # -- stopping ---------------------------------------------------------------------------------
    def request_stop(self, signum, frame) -> None:
        self.stop_signaled = True
        if self._housekeeping:
            # RQ raises StopRequested from the signal handler when idle; inside a reconcile pass
            # some ``except Exception`` would swallow it. Deliver it when the pass is over.
            self._pending_stop = (signum, frame)
            return
        super().request_stop(signum, frame)

    def kill_horse(self, sig: int = signal.SIGKILL) -> None:
        """SIGTERM the horse (its supervisor queues its build again and exits), SIGKILL its
        process group if it is still there after ``HORSE_STOP_GRACE``."""
        pid = self.horse_pid
        if pid and sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + HORSE_STOP_GRACE
                while time.monotonic() < deadline and not _exited(pid):
                    time.sleep(0.05)
        if pid and not _exited(pid):
            super().kill_horse(sig)


def _exited(pid: int) -> bool:
    """Has our child ``pid`` exited? (WNOWAIT: RQ still reaps it and reads its status.)"""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
