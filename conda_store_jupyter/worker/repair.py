"""Repair: finished builds whose follow-up work was lost get it done after all.

:mod:`.reconcile` ends builds whose *build* work is gone. This module covers what is lost *after* a
build reached its final state, which nothing else ever retries:

* the worker died between the child's COMPLETED commit and the end of its tail
  (``tasks.finish_completed``): the environment link still points at an older build, the live log
  never gets its end marker, the artifact jobs (archive, image) were never queued;
* an artifact job was lost: its worker was SIGKILLed mid-pack (RQ still says "started", but its
  alive key expired), its work horse died (RQ says "failed"), or Redis lost it: the artifact,
  PENDING in the database, gets its job queued again (a few times at most, then it is FAILED);
* a link job (rollback) or a delete job was lost after the database change committed (Redis
  restarted without persistence, or the enqueue failed with 503): the link disagrees with
  ``Environment.current_build_id``, or a soft-deleted build keeps its prefix and artifacts.

:func:`repair` is one pass over those cases. It never looks at QUEUED/BUILDING builds (those are
the reconciler's, and a running build owns its prefix). Each step is idempotent and reuses the
function the lost job would have run, so a pass that races the real job, or another worker's pass,
does the same thing twice at worst: links are switched under ``sync_environment_link``'s file lock,
and every Redis-side action (tail, image, purge) is claimed per build with ``SET NX`` first, which
also spaces out retries of an action that keeps failing.

Grace periods keep a pass from doing the normal path's work while the normal path is still on it
(a build finishing its tail, an image job waiting in the artifacts queue, a delete job in a busy
maintenance queue). Times are compared on the database's clock as written by the worker hosts
(``ended_on``/``deleted_on`` are ``orm.utcnow()``), like the reconciler's ``scheduled_on``; the
graces are minutes, far beyond sane clock skew.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..schema import BuildArtifactType, BuildStatus
from . import lifecycle
from .logs import LIVE_LOG_TTL
from .tasks import TAIL_GRACE

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

REPAIR_INTERVAL = 60.0
"""Seconds between repair passes inside each worker's reconcile thread. Lost follow-up work is
rare and never urgent for correctness (the build's state is already final), so once a minute."""

TAIL_REPAIR_GRACE = 2 * TAIL_GRACE
"""Seconds after ``ended_on`` before a missing end marker counts as lost: a COMPLETED child gets
``TAIL_GRACE`` for its tail, then its supervisor redoes it; only after both is it ours."""

IMAGE_REPAIR_GRACE = 600.0
"""Seconds after ``ended_on`` before a COMPLETED build whose artifact (archive, image) has no row or
no job record at all gets its job queued (again): the normal job may still be on its way. A job RQ
saw end, or one whose worker died (its alive key expired), is queued again at once."""

PURGE_REPAIR_GRACE = 600.0
"""Seconds after ``deleted_on`` before a soft-deleted build that still has files is purged here:
the normal delete job may wait behind other maintenance jobs."""

PURGE_RECHECK_WINDOW = 24 * 3600.0
"""Seconds after ``deleted_on`` during which a deleted build's prefix is also checked on disk
(a purge killed between its commit and ``rmtree``). Older deleted builds are only found by SQL
(artifact rows a purge would have removed), so a pass never stats every build ever deleted."""

REPAIR_BATCH = 50
"""Most actions of each kind per pass; the rest waits for the next pass (bounds a pass's cost
after an outage that lost many jobs)."""

SCAN_LIMIT = 1000
"""Most candidate rows read per query (newest first)."""

CLAIM_KEY = "conda-store:repair:{action}:{id}"
"""``SET NX`` claim of one repair action on one build: one worker acts, the others skip it."""


@dataclass(frozen=True)
class RepairPolicy:
    """Grace periods (s) and batch size of a pass; tests shorten the graces."""

    tail_grace: float = TAIL_REPAIR_GRACE
    """Also the age a current build must have before its link is repaired."""
    image_grace: float = IMAGE_REPAIR_GRACE
    purge_grace: float = PURGE_REPAIR_GRACE
    batch: int = REPAIR_BATCH


@dataclass
class RepairReport:
    """What one pass changed (ids), for logs and tests."""

    links_fixed: list[int] = field(default_factory=list)
    """Environments whose ``envs/<name>`` link was missing or pointed at another build."""
    tails_finished: list[int] = field(default_factory=list)
    """Builds whose live log had no end marker (for COMPLETED ones the whole tail was redone)."""
    images_queued: list[int] = field(default_factory=list)
    """COMPLETED builds whose image job was queued again."""
    archives_queued: list[int] = field(default_factory=list)
    """COMPLETED builds whose conda-pack archive job was queued again."""
    artifacts_failed: list[int] = field(default_factory=list)
    """Builds with an artifact whose job was lost ``MAX_REQUEUES`` times: now FAILED."""
    purged: list[int] = field(default_factory=list)
    """Soft-deleted builds whose prefix and non-kept artifacts were removed."""

    def __bool__(self) -> bool:
        return bool(self.links_fixed or self.tails_finished or self.images_queued or self.archives_queued
                    or self.artifacts_failed or self.purged)


def repair(store: "CondaStore", policy: RepairPolicy = RepairPolicy()) -> RepairReport:
    """One repair pass (see the module docstring); returns what it changed."""
    report = RepairReport()
    on_store_host = store.store_path.is_dir()  # a worker without the shared store must not "fix" links
    if on_store_host:
        report.links_fixed = _fix_links(store, policy)
    report.tails_finished = _finish_tails(store, policy)
    queued = _queue_artifacts(store, policy, report)
    report.images_queued = queued.get(BuildArtifactType.DOCKER_MANIFEST, [])
    report.archives_queued = queued.get(BuildArtifactType.CONDA_PACK, [])
    if on_store_host:
        report.purged = _purge_deleted(store, policy)
    if report:
        log.warning("repair: %s", report)
    return report


def _claim(store: "CondaStore", action: str, build_id: int, ttl: float) -> bool:
    """True if this process may do ``action`` on the build now (nobody did within ``ttl`` s)."""
    key = CLAIM_KEY.format(action=action, id=int(build_id))
    return bool(store.redis.set(key, "1", nx=True, ex=max(1, int(ttl))))


def _ago(seconds: float):
    from ..orm import utcnow

    return utcnow() - timedelta(seconds=seconds)


# -- 1. links -----------------------------------------------------------------------------------
def _fix_links(store: "CondaStore", policy: RepairPolicy) -> list[int]:
    """Re-point links of live environments whose current COMPLETED build they do not point at."""
    from sqlalchemy import select

    from .. import orm
    from ..naming import build_key
    from ..orm import build_prefix_path
    from .links import environment_link, sync_environment_link

    Env, Build, Ns, Spec = orm.Environment, orm.Build, orm.Namespace, orm.Specification
    with store.session() as db:
        rows = db.execute(
            select(Env.id, Env.name, Ns.name, Env.namespace_id, Build.id, Build.scheduled_on, Spec.sha256)
            .join(Ns, Ns.id == Env.namespace_id)
            .join(Build, Build.id == Env.current_build_id)
            .join(Spec, Spec.id == Build.specification_id)
            .where(Env.deleted_on.is_(None), Ns.deleted_on.is_(None), Build.deleted_on.is_(None),
                   Build.status == BuildStatus.COMPLETED,
                   # A build that just completed is the tail's to link (which may be waiting for
                   # the link lock); a rollback's current build ended long ago and is ours at once.
                   Build.ended_on < _ago(policy.tail_grace))
        ).all()
    fixed: list[int] = []
    for env_id, env_name, ns_name, ns_id, build_id, scheduled_on, sha256 in rows:
        if len(fixed) >= policy.batch:
            break
        try:
            prefix = build_prefix_path(store.store_path, ns_id, build_key(sha256, scheduled_on, build_id, env_name))
            link = environment_link(store, ns_name, env_name)
            # A missing prefix is another problem (sync would only remove the link, every pass).
            if not prefix.is_dir() or _points_at(link, prefix):
                continue
            if sync_environment_link(store, env_id) is not None:
                fixed.append(env_id)
        except Exception:  # noqa: BLE001 - one odd environment must not stop the others
            log.exception("repair: could not fix the link of environment %s", env_id)
    return fixed


def _points_at(link: Path, prefix: Path) -> bool:
    return link.is_symlink() and link.resolve() == prefix.resolve()


# -- 2. live logs / tails -----------------------------------------------------------------------
def _finish_tails(store: "CondaStore", policy: RepairPolicy) -> list[int]:
    """End live logs that exist but never got their end marker; redo a COMPLETED build's tail.

    Only streams that still exist matter: a reader of a build without a stream gets the stored
    log (``logs.read_log``). A stream outlives its last line by at most ``LIVE_LOG_TTL``, which
    bounds the builds looked at.
    """
    from sqlalchemy import select

    from .. import orm
    from .logs import END_FIELD, finish_log, log_stream_key
    from .tasks import finish_completed

    finished = [s for s in BuildStatus if s.finished]
    with store.session() as db:
        rows = db.execute(
            select(orm.Build.id, orm.Build.status)
            .where(orm.Build.status.in_(finished), orm.Build.ended_on.is_not(None),
                   orm.Build.ended_on < _ago(policy.tail_grace), orm.Build.ended_on > _ago(LIVE_LOG_TTL))
            .order_by(orm.Build.id.desc()).limit(SCAN_LIMIT)
        ).all()
    if not rows:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for build_id, _status in rows:
        pipe.xrevrange(log_stream_key(build_id), "+", "-", count=1)
    tails = pipe.execute()
    done: list[int] = []
    for (build_id, status), tail in zip(rows, tails):
        if len(done) >= policy.batch:
            break
        if not tail or END_FIELD in tail[0][1] or not _claim(store, "tail", build_id, policy.tail_grace + 60):
            continue
        try:
            if status == BuildStatus.COMPLETED:
                finish_completed(store, build_id)  # artifact jobs, link, then end marker: the tail's order
            else:
                finish_log(store, build_id, status)
            done.append(build_id)
        except Exception:  # noqa: BLE001
            log.exception("repair: could not finish the tail of build %s", build_id)
    return done


# -- 3. artifacts (archive, image) ---------------------------------------------------------------
def _queue_artifacts(store: "CondaStore", policy: RepairPolicy, report: RepairReport
                     ) -> dict[BuildArtifactType, list[int]]:
    """Queue the job of artifacts that are PENDING without a live job, or have no row at all.

    A job record RQ says ended (finished, failed, stopped, canceled), or "started" by a worker
    that is gone (its alive key expired), means the job is lost: queued again at once. No record
    at all (Redis lost it, the tail never queued it) or no row (an artifact configured later):
    only after ``image_grace``. The claim keeps concurrent passes from both queueing it; the
    requeue count bounds a job that keeps dying (then the artifact is FAILED, never PENDING forever).
    """
    from sqlalchemy import exists, select

    from .. import orm
    from ..schema import ArtifactStatus
    from .settings import build_settings_for

    kinds = lifecycle.post_build_artifacts(store)
    if not kinds:
        return {}
    A, B = orm.BuildArtifact, orm.Build
    live = (B.status == BuildStatus.COMPLETED, B.deleted_on.is_(None))
    with store.session() as db:
        pending = db.execute(
            select(A.build_id, A.artifact_type, B.ended_on).join(B, B.id == A.build_id)
            .where(A.status == ArtifactStatus.PENDING, A.artifact_type.in_(kinds), *live)
            .order_by(A.build_id.desc()).limit(SCAN_LIMIT)
        ).all()
        missing = [(build_id, kind) for kind in kinds for build_id in db.scalars(
            select(B.id).where(*live, B.ended_on.is_not(None), B.ended_on < _ago(policy.image_grace),
                               ~exists().where(A.build_id == B.id, A.artifact_type == kind))
            .order_by(B.id.desc()).limit(SCAN_LIMIT))]
    old = _ago(policy.image_grace)
    queued: dict[BuildArtifactType, list[int]] = {}
    for build_id, kind in missing:
        if sum(map(len, queued.values())) >= policy.batch:
            break
        if kind.value not in build_settings_for(store, build_id).build_artifacts:
            continue  # switched off for its namespace or environment (PUT /api/v1/setting/...)
        if _claim(store, f"artifact-{kind.value.lower()}", build_id, max(policy.image_grace, REPAIR_INTERVAL)):
            lifecycle.artifact_pending(store, build_id, kind)
            if _requeue(store, build_id, kind, report):
                queued.setdefault(kind, []).append(build_id)
    for build_id, kind, ended_on in pending:
        if sum(map(len, queued.values())) >= policy.batch:
            break
        state = _job_state(store, build_id, kind)
        if state == "running" or (state == "missing" and ended_on is not None and ended_on >= old):
            continue
        if _claim(store, f"artifact-{kind.value.lower()}", build_id, REPAIR_INTERVAL) and \
                _requeue(store, build_id, kind, report):
            queued.setdefault(kind, []).append(build_id)
    return queued


def _job_state(store: "CondaStore", build_id: int, kind: BuildArtifactType) -> str:
    """"running" (queued, or started by a live job), "missing" (no record), or "lost"."""
    import datetime as dt

    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from .artifacts import ALIVE_TTL, alive_key
    from .queue import artifact_job_id

    try:
        job = Job.fetch(artifact_job_id(kind, build_id), connection=store.redis)
        status = job.get_status(refresh=False)
    except NoSuchJobError:
        return "missing"
    value = getattr(status, "value", status)
    if value in ("queued", "deferred", "scheduled"):
        return "running"
    if value == "started":
        if store.redis.exists(alive_key(build_id, kind)):
            return "running"
        started = job.started_at
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=dt.timezone.utc)
        # The alive key is written right after the job starts: give it that moment (worker clocks).
        if started is None or (dt.datetime.now(dt.timezone.utc) - started).total_seconds() < ALIVE_TTL:
            return "running"
    return "lost" if value else "missing"


def _requeue(store: "CondaStore", build_id: int, kind: BuildArtifactType, report: RepairReport) -> bool:
    """Queue the artifact's job again (its old record removed first: job ids are unique), or mark
    the artifact FAILED once it was queued again ``MAX_REQUEUES`` times. True if queued."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from .artifacts import MAX_REQUEUES, requeues_key
    from .queue import BuildQueue, artifact_job_id

    try:
        count = int(store.redis.incr(requeues_key(build_id, kind)))
        store.redis.expire(requeues_key(build_id, kind), 7 * 24 * 3600)
        if count > MAX_REQUEUES:
            reason = (f"its job was lost {MAX_REQUEUES} times (the worker running it stopped or died); "
                      "see the worker logs")
            if lifecycle.artifact_failed(store, build_id, kind, reason):
                report.artifacts_failed.append(build_id)
            return False
        try:
            Job.fetch(artifact_job_id(kind, build_id), connection=store.redis).delete()
        except NoSuchJobError:
            pass
        return BuildQueue(store).enqueue_artifact_once(build_id, kind) is not None
    except Exception:  # noqa: BLE001 - Redis trouble: the next pass after the claim expires retries
        log.exception("repair: could not queue the %s job of build %s", kind.value, build_id)
        return False


# -- 4. purges ----------------------------------------------------------------------------------
def _purge_deleted(store: "CondaStore", policy: RepairPolicy) -> list[int]:
    """Purge finished soft-deleted builds whose delete job never (fully) ran.

    Evidence of an unfinished purge: an artifact row the purge would have removed (any type not in
    ``build_artifacts_kept_on_deletion``), or, within ``PURGE_RECHECK_WINDOW``, a prefix on disk.
    Deleted builds still QUEUED/BUILDING are left to the reconciler and their own supervisor.
    """
    from sqlalchemy import exists, or_, select
    from sqlalchemy.orm import selectinload

    from .. import orm
    from .purge import purge_build

    kept = [BuildArtifactType(k) for k in store.build_artifacts_kept_on_deletion]
    unpurged = exists().where(orm.BuildArtifact.build_id == orm.Build.id,
                              orm.BuildArtifact.artifact_type.not_in(kept))
    finished = [s for s in BuildStatus if s.finished]
    with store.session() as db:
        builds = list(db.scalars(
            select(orm.Build)
            .where(orm.Build.deleted_on.is_not(None), orm.Build.deleted_on < _ago(policy.purge_grace),
                   orm.Build.status.in_(finished),
                   or_(unpurged, orm.Build.deleted_on > _ago(policy.purge_grace + PURGE_RECHECK_WINDOW)))
            .order_by(orm.Build.id.desc()).limit(SCAN_LIMIT)
            # prefix_path and the artifact check below read these: load them in 3 queries, not 3 per build
            .options(selectinload(orm.Build.environment), selectinload(orm.Build.specification),
                     selectinload(orm.Build.artifacts))
        ))
        candidates = [(b.id, b.prefix_path(store.store_path),
                       any(a.artifact_type not in kept for a in b.artifacts)) for b in builds]
    purged: list[int] = []
    for build_id, prefix, has_rows in candidates:
        if len(purged) >= policy.batch:
            break
        if not (has_rows or prefix.exists()) or not _claim(store, "purge", build_id, REPAIR_INTERVAL):
            continue
        try:
            purge_build(store, build_id)
            purged.append(build_id)
        except Exception:  # noqa: BLE001
            log.exception("repair: could not purge deleted build %s", build_id)
    return purged
