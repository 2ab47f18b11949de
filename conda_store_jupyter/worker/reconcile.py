"""The reconciler: nothing stays QUEUED or BUILDING after the work behind it is gone.

A build's state lives in the database, the source of truth; its work lives in Redis (the RQ job)
and in a process on some worker host. Either can vanish without anyone recording it: a host dies
(SIGKILL, OOM, reboot), a worker is stopped, Redis restarts without its data. :func:`reconcile`
finds such builds and repairs them, every change a compare-and-set so any number of reconcilers
(one per worker) may race:

* a QUEUED build whose job is missing from Redis gets that same job enqueued again. Job ids are
  ``build-<build id>-<attempt>`` and RQ's unique enqueue is atomic, so this happens exactly once
  however many reconcilers (and the original ``enqueue_build``) try;
* a build *interrupted* from outside (its job failed or was stopped, its worker went silent, it
  was claimed by a worker that died) is queued again as its next attempt (:func:`interrupt`),
  until ``CondaStore.build_max_attempts``; only then is it FAILED (:func:`.lifecycle.end`: its
  log keeps what reached the live stream, then the reason). A BUILDING build with a pending
  cancel is CANCELED instead.

How a BUILDING build is judged: the supervising process refreshes a heartbeat key every
``tasks.HEARTBEAT_INTERVAL`` (2 s), stamped with the Redis server's clock. A job RQ reports as
failed or stopped is dead at once (RQ saw its work horse die: no need to wait for the heartbeat
to go stale). Otherwise a heartbeat older than ``stale_after`` seconds, or none for
``stale_after`` seconds since a reconciler first missed it (Redis restarted empty: a live
supervisor writes it again within seconds), means the build is orphaned.

Workers run :func:`reconcile` every ``RECONCILE_INTERVAL`` seconds in their main process, between
jobs and while supervising one (``worker/runner.py``): never in a thread, because that process
forks work horses.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..schema import BuildStatus
from . import lifecycle
from .queue import (
    BUILD_QUEUE,
    BuildQueue,
    QueueUnavailableError,
    build_job_id,
    cancel_key,
    heartbeat_key,
    job_attempt,
    work_dir,
)

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 10.0
"""Seconds between reconciler runs inside each worker."""

STALE_AFTER = 30.0
"""Seconds without a heartbeat after which a BUILDING build counts as orphaned."""

UNCLAIMED_KEY = "conda-store:build:{build_id}:unclaimed"
"""Redis time at which a reconciler first saw the build QUEUED with its job taken but not started."""

SILENT_KEY = "conda-store:build:{build_id}:silent"
"""Redis time at which a reconciler first saw the build BUILDING without any heartbeat key."""


def unclaimed_key(build_id: int) -> str:
    return UNCLAIMED_KEY.format(build_id=int(build_id))


def silent_key(build_id: int) -> str:
    return SILENT_KEY.format(build_id=int(build_id))


@dataclass(frozen=True)
class Verdict:
    """What a reconciler does to a build: ``enqueue`` its current job (Redis lost it), ``interrupt``
    it (queue its next attempt, or fail it), or ``cancel`` it (a cancel was pending)."""

    action: str
    reason: str


@dataclass(frozen=True)
class _Row:
    id: int
    status: BuildStatus
    job_id: str | None
    scheduled_on: datetime
    started_on: datetime | None


def reconcile(store: "CondaStore", *, stale_after: float = STALE_AFTER) -> list[int]:
    """Repair every QUEUED/BUILDING build whose work is gone; return the ids of the builds changed."""
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
        if verdict.action == "enqueue":
            done = _enqueue_current(store, row)
        elif verdict.action == "cancel":
            done = _end(store, row.id, row.status, BuildStatus.CANCELED, verdict.reason)
        else:
            done = interrupt(store, row.id, row.status, row.job_id, verdict.reason)
        if done:
            log.warning("reconciled build %s (%s): %s", row.id, verdict.action, verdict.reason)
            changed.append(row.id)
    return changed


def judge(store: "CondaStore", row: _Row, now: datetime, stale_after: float) -> Verdict | None:
    """None if the build may still be progressing, else what to do about it."""
    if row.status == BuildStatus.QUEUED:
        if row.job_id is None:
            return Verdict("enqueue", "it was never put on the build queue")
        state, job_info = _job_state(store, row.job_id)
        if state == "missing":
            return Verdict("enqueue", "its job disappeared from the build queue (Redis restarted or flushed)")
        if state in ("failed", "stopped", "canceled", "finished"):
            return Verdict("interrupt", f"its queue job ended ({state}) before the build started{job_info}")
        if (state == "started" and _heartbeat_age(store, row.id) is None) or \
                (state == "queued" and not _in_queue(store, row.job_id)):
            # A worker took the job and is loading (its heartbeat comes first thing), or is between
            # taking it and marking it started. How long the build waited in the queue says nothing
            # about that worker, so time this state itself, from the first pass that saw it.
            if _first_seen_ago(store, unclaimed_key(row.id), stale_after) > stale_after:
                return Verdict("interrupt", "the worker that took its job died before starting it")
        return None

    # BUILDING
    state, job_info = _job_state(store, row.job_id)
    dead = state in ("failed", "stopped")  # RQ saw the work horse (the supervisor) end
    if not dead:
        beat_age = _heartbeat_age(store, row.id)
        if beat_age is not None and beat_age <= stale_after:
            return None  # alive
        since_start = (now - (row.started_on or row.scheduled_on)).total_seconds()
        if beat_age is None:
            silent_for = _first_seen_ago(store, silent_key(row.id), stale_after)
            if since_start <= stale_after or silent_for <= stale_after:
                return None  # just claimed, or its heartbeat was lost with Redis and will come back
    flag = store.redis.get(cancel_key(row.id))
    if flag is not None:
        return Verdict("cancel", flag.decode("utf-8", "replace"))
    if dead:
        return Verdict("interrupt", f"the worker's job {state}{job_info}")
    if state == "missing":
        return Verdict("interrupt", "its job disappeared from the build queue while building (was Redis restarted?)")
    if beat_age is None:
        return Verdict("interrupt",
                       f"the worker running it stopped (no heartbeat since it started {since_start:.0f} s ago)")
    return Verdict("interrupt", f"the worker running it stopped responding (no heartbeat for {beat_age:.0f} s)")


def interrupt(store: "CondaStore", build_id: int, expected: BuildStatus, job_id: str | None, reason: str) -> bool:
    """The attempt ``job_id`` of a build was interrupted from outside: queue the next attempt, or
    FAIL the build if it has been started ``build_max_attempts`` times. True if this call did it.

    Compare-and-set on (status, job id), so of several reconcilers and the supervisor itself
    exactly one moves the build on; the new job id is in the database before the job is
    enqueued, so if that enqueue is lost the next reconcile pass enqueues it.
    """
    from .. import orm
    from .logs import publish_line

    if job_id is None:
        with store.session() as db:
            build = db.get(orm.Build, int(build_id))
            job_id = build.job_id if build is not None else None
    if expected == BuildStatus.BUILDING:
        try:
            flag = store.redis.get(cancel_key(build_id))
        except Exception:  # noqa: BLE001 - Redis down (its restart is what interrupted us): no flag known
            flag = None
        if flag is not None:  # a cancel was pending: that is the outcome, not another attempt
            return _end(store, build_id, expected, BuildStatus.CANCELED, flag.decode("utf-8", "replace"),
                        job_id=job_id)
    attempt, most = job_attempt(job_id), int(store.build_max_attempts)
    if attempt >= most:
        if most > 1:
            reason = f"{reason} (started {attempt} times, CondaStore.build_max_attempts = {most})"
        return _end(store, build_id, expected, BuildStatus.FAILED, reason, job_id=job_id)
    next_id = build_job_id(build_id, attempt + 1)
    if not lifecycle.requeue(store, build_id, expected, job_id, next_id, reason):
        return False
    _clear(store, build_id)
    with contextlib.suppress(Exception):  # the live log is a convenience
        publish_line(store, build_id, f"BUILD INTERRUPTED: {reason}; queued again (attempt {attempt + 1} of {most})")
    try:
        BuildQueue(store).enqueue_build_job(build_id, next_id)
    except QueueUnavailableError as exc:  # the database says QUEUED as next_id: the next pass enqueues it
        log.warning("build %s: could not enqueue attempt %s yet: %s", build_id, attempt + 1, exc)
    return True


def _enqueue_current(store: "CondaStore", row: _Row) -> bool:
    """Enqueue the job the database names for a QUEUED build (exactly once: unique job ids)."""
    job_id = row.job_id
    if job_id is None:  # a build row created without a job (an older server, a crash in between)
        job_id = build_job_id(row.id)
        if not lifecycle.assign_job(store, row.id, job_id):
            return False
    return BuildQueue(store).enqueue_build_job(row.id, job_id)


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


def _first_seen_ago(store: "CondaStore", key: str, stale_after: float) -> float:
    """Seconds since a reconciler first saw the condition ``key`` stands for (0 on the first pass),
    on the Redis clock."""
    now = _redis_now(store)
    # The TTL only bounds the leak; it outlives any sensible reconcile interval.
    if store.redis.set(key, f"{now:.6f}", nx=True, ex=int(stale_after) + 3600):
        return 0.0
    try:
        return max(0.0, now - float(store.redis.get(key) or now))
    except ValueError:
        return 0.0


def _in_queue(store: "CondaStore", job_id: str) -> bool:
    """Is ``job_id`` waiting in the build queue's list (``LPOS``, Redis >= 6.0.6)?"""
    from rq import Queue

    return store.redis.lpos(Queue(BUILD_QUEUE, connection=store.redis).key, job_id) is not None


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


def _end(store: "CondaStore", build_id: int, expected: BuildStatus, status: BuildStatus, reason: str,
         job_id: str | None = None) -> bool:
    from .logs import live_lines

    try:
        lines = live_lines(store, build_id)
    except Exception:  # noqa: BLE001 - Redis trouble: record the state with what we have
        lines = []
    body = "".join(f"{line}\n" for line in lines)
    if not lifecycle.end(store, build_id, (expected,), status, reason, body=body, job_id=job_id):
        return False  # the build moved on meanwhile: its own process recorded the outcome
    _clear(store, build_id)
    return True


def _clear(store: "CondaStore", build_id: int) -> None:
    """After winning a compare-and-set that ended or re-queued a build: remove its half-built
    prefix, scratch files and liveness keys, so the next attempt (or nobody) starts clean."""
    _remove_leftovers(store, build_id)
    try:
        store.redis.delete(heartbeat_key(build_id), cancel_key(build_id), unclaimed_key(build_id),
                           silent_key(build_id))
    except Exception:  # noqa: BLE001
        log.warning("could not clear the Redis keys of reconciled build %s", build_id)


def _remove_leftovers(store: "CondaStore", build_id: int) -> None:
    """Delete the half-built prefix and scratch files of a build we just ended.

    Only after winning the compare-and-set above: the build is final, so no process of ours will
    link into this prefix again (a builder cut off from Redis kills itself when its supervisor goes).
    """
    from .. import orm

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        prefix = build.prefix_path(store.store_path) if build is not None else None
    for path in (prefix, work_dir(store, build_id)):
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
