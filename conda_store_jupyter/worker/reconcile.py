"""The reconciler: nothing stays QUEUED or BUILDING after the work behind it is gone.

A build's state lives in the database; its work lives in Redis (the RQ job) and in a process on
some worker host. When the process dies with its host (SIGKILL, OOM, reboot) or Redis loses the
job (restart without persistence), nobody is left to record the outcome. :func:`reconcile` finds
such builds and ends them FAILED (or CANCELED, if a cancel was pending) through
:func:`.lifecycle.end`: their log keeps what reached the live stream and ends with the reason. It is cheap and idempotent (every change is a compare-and-set), so every
worker runs it every ``RECONCILE_INTERVAL`` seconds in a thread, and the server may call it too.
The same thread runs :func:`.repair.repair` every ``repair.REPAIR_INTERVAL`` seconds: the repair of
follow-up work (link, log end, image, purge) lost after a build had already reached its final state.

How a BUILDING build is judged: the supervising process refreshes a heartbeat key every
``tasks.HEARTBEAT_INTERVAL`` (2 s), stamped with the Redis server's clock. A heartbeat older than ``stale_after`` seconds, or a job RQ
reports as failed/stopped/gone, means the build is orphaned. RQ's own detection (worker key TTL,
StartedJobRegistry cleanup) takes minutes; ours takes ``stale_after`` (30 s) + one interval.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..schema import BuildStatus
from .lifecycle import end
from .queue import cancel_key, heartbeat_key

if TYPE_CHECKING:
    from ..app import CondaStore
    from .repair import RepairPolicy

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 10.0
"""Seconds between reconciler runs inside each worker."""

STALE_AFTER = 30.0
"""Seconds without a heartbeat after which a BUILDING build counts as orphaned."""

_DEAD_JOB_STATES = {"failed", "stopped", "canceled", "finished", "missing"}

UNCLAIMED_KEY = "conda-store:build:{build_id}:unclaimed"
"""Redis time at which a reconciler first saw the build QUEUED with its job already started."""


def unclaimed_key(build_id: int) -> str:
    return UNCLAIMED_KEY.format(build_id=int(build_id))


@dataclass(frozen=True)
class Verdict:
    status: BuildStatus
    reason: str


@dataclass(frozen=True)
class _Row:
    id: int
    status: BuildStatus
    job_id: str | None
    scheduled_on: datetime
    started_on: datetime | None


def reconcile(store: "CondaStore", *, stale_after: float = STALE_AFTER) -> list[int]:
    """End every QUEUED/BUILDING build whose work is gone; return the ids of the builds changed."""
    from sqlalchemy import select

    from .. import orm
    from ..orm import utcnow

    with store.session() as db:
        rows = [_Row(*r) for r in db.execute(
            select(orm.Build.id, orm.Build.status, orm.Build.job_id, orm.Build.scheduled_on, orm.Build.started_on)
            .where(orm.Build.status.in_([BuildStatus.QUEUED, BuildStatus.BUILDING]))
        )]
    changed = []
    for row in rows:
        verdict = judge(store, row, utcnow(), stale_after)
        if verdict is None:
            continue
        if _end(store, row, verdict):
            log.warning("reconciled build %s -> %s: %s", row.id, verdict.status.value, verdict.reason)
            changed.append(row.id)
    return changed


def judge(store: "CondaStore", row: _Row, now: datetime, stale_after: float) -> Verdict | None:
    """None if the build may still be progressing, else how it must end."""
    state, job_info = _job_state(store, row.job_id)
    if row.status == BuildStatus.QUEUED:
        age = (now - row.scheduled_on).total_seconds()
        if row.job_id is None:
            return _failed("it was never put on the build queue") if age > stale_after else None
        if state == "missing":
            return _failed("its job disappeared from the build queue (was Redis restarted or flushed?)") \
                if age > stale_after else None
        if state in ("failed", "stopped", "canceled", "finished"):
            return _failed(f"its queue job ended ({state}) before the build started{job_info}")
        if state == "started" and _heartbeat_age(store, row.id) is None:
            # A worker just took the job and is loading (its heartbeat comes first thing). How long
            # the build waited in the queue says nothing about that worker, so time this state
            # itself, from the first pass that saw it, on the Redis clock.
            if _unclaimed_for(store, row.id, stale_after) > stale_after:
                return _failed("the worker that took its job died before starting it")
        return None

    # BUILDING
    beat_age = _heartbeat_age(store, row.id)
    if beat_age is not None and beat_age <= stale_after:
        return None  # alive
    since_start = (now - (row.started_on or row.scheduled_on)).total_seconds()
    if beat_age is None and since_start <= stale_after and state not in _DEAD_JOB_STATES:
        return None  # just claimed
    flag = store.redis.get(cancel_key(row.id))
    if flag is not None:
        return Verdict(BuildStatus.CANCELED, flag.decode("utf-8", "replace"))
    if state in ("failed", "stopped"):
        return _failed(f"the worker's job {state}{job_info}")
    if state == "missing":
        return _failed("its job disappeared from the build queue while building (was Redis restarted?)")
    if beat_age is None:
        return _failed(f"the worker running it stopped (no heartbeat since it started {since_start:.0f} s ago)")
    return _failed(f"the worker running it stopped responding (no heartbeat for {beat_age:.0f} s)")


def _failed(reason: str) -> Verdict:
    return Verdict(BuildStatus.FAILED, reason)


def _heartbeat_age(store: "CondaStore", build_id: int) -> float | None:
    """Seconds since the last heartbeat, both ends measured on the Redis server's clock.

    ``tasks.beat`` stamps heartbeats with Redis ``TIME`` too, so a worker host whose clock is off
    by minutes is neither declared dead nor kept alive forever by the reconciler of another host.
    """
    value = store.redis.get(heartbeat_key(build_id))
    if value is None:
        return None
    try:
        return max(0.0, _redis_now(store) - float(value))
    except ValueError:
        return None


def _unclaimed_for(store: "CondaStore", build_id: int, stale_after: float) -> float:
    """Seconds since a reconciler first saw this build started-but-unclaimed (0 on the first pass)."""
    now = _redis_now(store)
    key = unclaimed_key(build_id)
    # The TTL only bounds the leak; it outlives any sensible reconcile interval.
    if store.redis.set(key, f"{now:.6f}", nx=True, ex=int(stale_after) + 3600):
        return 0.0
    try:
        return max(0.0, now - float(store.redis.get(key) or now))
    except ValueError:
        return 0.0


def _redis_now(store: "CondaStore") -> float:
    seconds, micros = store.redis.time()
    return seconds + micros / 1e6


def _job_state(store: "CondaStore", job_id: str | None) -> tuple[str, str]:
    """(RQ status name or "missing", ": <last line of the job's exception>" or "")."""
    if not job_id:
        return "missing", ""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=store.redis)
        status = job.get_status(refresh=False)
    except NoSuchJobError:
        return "missing", ""
    if status is None:
        return "missing", ""
    info = ""
    if str(status.value) in ("failed", "stopped"):
        try:
            exc = (job.latest_result().exc_string if job.latest_result() else None) or ""
        except Exception:  # noqa: BLE001 - the reason is a nicety
            exc = ""
        last = [line for line in exc.strip().splitlines() if line.strip()]
        info = f": {last[-1].strip()}" if last else ""
    return str(status.value), info


def _end(store: "CondaStore", row: _Row, verdict: Verdict) -> bool:
    from .logs import live_lines

    try:
        lines = live_lines(store, row.id)
    except Exception:  # noqa: BLE001 - Redis trouble: record the state with what we have
        lines = []
    body = "".join(f"{line}\n" for line in lines)
    if not end(store, row.id, (row.status,), verdict.status, verdict.reason, body=body):
        return False  # the build moved on meanwhile: its own process recorded the outcome
    _remove_leftovers(store, row.id)
    try:
        store.redis.delete(heartbeat_key(row.id), cancel_key(row.id), unclaimed_key(row.id))
    except Exception:  # noqa: BLE001
        log.warning("could not clear the Redis keys of reconciled build %s", row.id)
    return True


def _remove_leftovers(store: "CondaStore", build_id: int) -> None:
    """Delete the half-built prefix and scratch files of a build we just ended.

    Only after winning the compare-and-set above: the build is final, so no process of ours will
    link into this prefix again (a builder cut off from Redis kills itself when its supervisor goes).
    """
    from .. import orm
    from .tasks import work_dir

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        prefix = build.prefix_path(store.store_path) if build is not None else None
    for path in (prefix, work_dir(store, build_id)):
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


class ReconcileThread(threading.Thread):
    """Runs :func:`reconcile` every ``interval`` seconds, and :func:`.repair.repair` every
    ``repair_interval`` seconds (0 disables it), until :meth:`stop` (daemon thread).

    Repair shares this thread rather than getting its own: both are short, rare database scans,
    and one thread per worker keeps the number of pooled connections the reconciler holds at one.
    """

    def __init__(self, store: "CondaStore", *, interval: float = RECONCILE_INTERVAL,
                 stale_after: float = STALE_AFTER, repair_interval: float | None = None,
                 repair_policy: "RepairPolicy | None" = None) -> None:
        from .repair import REPAIR_INTERVAL, RepairPolicy

        super().__init__(name="conda-store-reconcile", daemon=True)
        self.store = store
        self.interval = interval
        self.stale_after = stale_after
        self.repair_interval = REPAIR_INTERVAL if repair_interval is None else repair_interval
        self.repair_policy = repair_policy or RepairPolicy()
        self._stop_event = threading.Event()

    def run(self) -> None:
        from .repair import repair

        next_repair = time.monotonic()
        while not self._stop_event.is_set():
            try:
                reconcile(self.store, stale_after=self.stale_after)
            except Exception:  # noqa: BLE001 - keep reconciling; Redis/DB may come back
                log.exception("reconcile failed; retrying in %s s", self.interval)
            # After reconcile: builds it just ended are final, so this pass may already see them.
            if self.repair_interval > 0 and time.monotonic() >= next_repair:
                next_repair = time.monotonic() + self.repair_interval
                try:
                    repair(self.store, self.repair_policy)
                except Exception:  # noqa: BLE001
                    log.exception("repair failed; retrying in %s s", self.repair_interval)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
