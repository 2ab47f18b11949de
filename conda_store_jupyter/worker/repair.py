"""Repair: finished builds whose follow-up work was lost get it done after all.

:mod:`.reconcile` ends builds whose *build* work is gone. This module covers what is lost *after* a
build reached its final state, which nothing else ever retries:

* the worker died between the child's COMPLETED commit and the end of its tail
  (``tasks.finish_completed``): the environment link still points at an older build, the live log
  never gets its end marker, the image job was never queued;
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
"""Seconds after ``ended_on`` before a COMPLETED build without an image gets its image job queued
again: the normal job may wait behind other images in the artifacts queue."""

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
    purged: list[int] = field(default_factory=list)
    """Soft-deleted builds whose prefix and non-kept artifacts were removed."""

    def __bool__(self) -> bool:
        return bool(self.links_fixed or self.tails_finished or self.images_queued or self.purged)


def repair(store: "CondaStore", policy: RepairPolicy = RepairPolicy()) -> RepairReport:
    """One repair pass (see the module docstring); returns what it changed."""
    report = RepairReport()
    on_store_host = store.store_path.is_dir()  # a worker without the shared store must not "fix" links
    if on_store_host:
        report.links_fixed = _fix_links(store, policy)
    report.tails_finished = _finish_tails(store, policy)
    if BuildArtifactType.DOCKER_MANIFEST.value in store.build_artifacts:
        report.images_queued = _queue_images(store, policy)
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
                finish_completed(store, build_id)  # link, then end marker, then image: the tail's order
            else:
                finish_log(store, build_id, status)
            done.append(build_id)
        except Exception:  # noqa: BLE001
            log.exception("repair: could not finish the tail of build %s", build_id)
    return done


# -- 3. images ----------------------------------------------------------------------------------
def _queue_images(store: "CondaStore", policy: RepairPolicy) -> list[int]:
    """Queue the image job of COMPLETED builds that have neither an image nor a failed one
    (``image_status`` None, or PENDING with its job lost).

    ``enqueue_image_once`` skips builds whose job record still exists (queued, running, or ended
    within RQ's ``RESULT_TTL``); the claim keeps concurrent passes from both queueing it.
    """
    from rq.job import Job
    from sqlalchemy import exists, or_, select

    from .. import orm
    from ..schema import ArtifactStatus
    from .queue import BuildQueue, image_job_id
    from .settings import build_settings_for

    has_image = exists().where(orm.BuildArtifact.build_id == orm.Build.id,
                               orm.BuildArtifact.artifact_type == BuildArtifactType.DOCKER_MANIFEST)
    with store.session() as db:
        ids = list(db.scalars(
            select(orm.Build.id)
            .where(orm.Build.status == BuildStatus.COMPLETED, orm.Build.deleted_on.is_(None),
                   orm.Build.ended_on.is_not(None), orm.Build.ended_on < _ago(policy.image_grace), ~has_image,
                   or_(orm.Build.image_status.is_(None), orm.Build.image_status != ArtifactStatus.FAILED))
            .order_by(orm.Build.id.desc()).limit(SCAN_LIMIT)
        ))
    queued: list[int] = []
    for build_id in ids:
        if len(queued) >= policy.batch:
            break
        if BuildArtifactType.DOCKER_MANIFEST.value not in build_settings_for(store, build_id).build_artifacts:
            continue  # images switched off for its namespace or environment (PUT /api/v1/setting/...)
        # Job record first: a queued/running/recent job is no reason to take (and hold) the claim.
        if Job.exists(image_job_id(build_id), connection=store.redis) or \
                not _claim(store, "image", build_id, max(policy.image_grace, REPAIR_INTERVAL)):
            continue
        try:
            lifecycle.image_queued(store, build_id)
            if BuildQueue(store).enqueue_image_once(build_id) is not None:
                queued.append(build_id)
        except Exception:  # noqa: BLE001 - Redis trouble: the next pass after the claim expires retries
            log.exception("repair: could not queue the image job of build %s", build_id)
    return queued


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
