"""``BuildQueue``: how the server hands work to ``conda-store-worker`` processes (RQ on Redis).

The database is the source of truth for build state; Redis only carries *work* (RQ jobs), *signals*
(a cancel flag per build), *liveness* (a heartbeat per running build) and live logs. Every state
change goes through :mod:`.lifecycle` (a compare-and-set on ``build.status``), so a cancel racing
a worker that picks the job up, or the reconciler racing a worker that finishes, always ends in
exactly one final state.

Jobs name their functions by dotted path (``conda_store_jupyter.worker.tasks.build_environment``)
and carry the config file path, so a worker on another host imports nothing from the server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ConflictError, NotFoundError, ServiceUnavailableError
from ..schema import BuildArtifactType, BuildStatus

if TYPE_CHECKING:
    from rq import Queue

    from ..app import CondaStore

BUILD_QUEUE = "conda-store-builds"
"""RQ queue of environment builds (one job per build)."""

ARTIFACT_QUEUE = "conda-store-artifacts"
"""RQ queue of follow-up artifact jobs (conda-pack archive, Docker image) enqueued after a build completed."""

MAINTENANCE_QUEUE = "conda-store-deletes"
"""RQ queue of deletions and environment-link updates: short jobs, listened to first."""

WORKER_QUEUES = (MAINTENANCE_QUEUE, BUILD_QUEUE, ARTIFACT_QUEUE)
"""Queues a ``conda-store-worker`` listens to, in priority order."""

JOB_TIMEOUT_MARGIN = 120
"""Seconds added to ``CondaStore.build_timeout`` for the RQ job timeout. The worker enforces the
build timeout itself (and records FAILED); RQ's timeout is only the backstop if the job hangs."""

NO_JOB_TIMEOUT = -1
"""RQ's job timeout meaning "none" (``build_timeout = 0``)."""

BUILD_JOB_ID = "build-{build_id}-{attempt}"
"""RQ job id of attempt ``attempt`` (1, 2, ...) of a build. A function of the build and the attempt
only, so every process that (re-)enqueues a build's current attempt names the same job, and
RQ's atomic unique enqueue turns the second enqueue into a no-op: exactly one job per attempt."""

_BUILD_JOB_ID = re.compile(r"^build-(?P<build_id>\d+)-(?P<attempt>\d+)$")

WORK_DIR = ".work"
"""``<store>/.work/<build id>/``: the build's log file and artifacts before they are stored."""

MAINTENANCE_JOB_TIMEOUT = 3600
"""RQ timeout (s) of deletion/link jobs (removing a large prefix on a slow filesystem)."""

RESULT_TTL = 24 * 3600
"""How long RQ keeps finished/failed job records (s); the database keeps the build state forever."""

CANCEL_KEY = "conda-store:build:{build_id}:cancel"
"""Set (value = reason) to ask the worker running a build to stop it."""

CANCEL_TTL = 7 * 24 * 3600
"""TTL (s) of a cancel flag; the worker deletes it when the build has ended."""

HEARTBEAT_KEY = "conda-store:build:{build_id}:heartbeat"
"""Unix time of the last sign of life of the process supervising a running build."""

CANCELED_BY_USER = "canceled by user"

CONFIG_ENV = "CONDA_STORE_CONFIG"
"""Environment variable naming the config file (set by ``conda-store-worker --config``)."""

REDIS_URL_ENV = "CONDA_STORE_REDIS_URL"
"""Environment variable overriding ``CondaStore.redis_url`` (set by EmbeddedServices for its workers)."""

JOB_ID_ENV = "CONDA_STORE_BUILD_JOB_ID"
"""Set by the supervisor for its build child: the attempt (RQ job id) the child records its outcome
for, so a child of an attempt the reconciler replaced can never end the build of a newer one."""

MIGRATED_ENV = "CONDA_STORE_DATABASE_MIGRATED"
"""Set (to "1") by a process that has applied the migrations, for the job and build processes it
starts: they skip alembic (~0.3 s each) instead of checking the schema again."""

_TASKS = "conda_store_jupyter.worker.tasks"
IMAGES_MODULE = "conda_store_jupyter.worker.images"
PURGE_MODULE = "conda_store_jupyter.worker.purge"
ARCHIVES_MODULE = "conda_store_jupyter.worker.archives"

ARTIFACT_JOBS: dict[BuildArtifactType, tuple[str, str, str]] = {
    BuildArtifactType.CONDA_PACK: ("pack", ARCHIVES_MODULE, "build_pack_artifact"),
    BuildArtifactType.DOCKER_MANIFEST: ("image", IMAGES_MODULE, "build_image_artifact"),
}
"""Artifact made after COMPLETED -> (job id prefix, module, function) of its job on ``ARTIFACT_QUEUE``."""


class QueueUnavailableError(ServiceUnavailableError):
    """Redis (the build queue) cannot be reached; the build was marked FAILED."""


def cancel_key(build_id: int) -> str:
    return CANCEL_KEY.format(build_id=int(build_id))


def heartbeat_key(build_id: int) -> str:
    return HEARTBEAT_KEY.format(build_id=int(build_id))


def artifact_job_id(kind: BuildArtifactType, build_id: int) -> str:
    """RQ job id of the job making artifact ``kind`` of build ``build_id`` (``pack-7``, ``image-7``):
    a function of the two only, so every process queueing it names the same job (queued once)."""
    return f"{ARTIFACT_JOBS[BuildArtifactType(kind)][0]}-{int(build_id)}"


def image_job_id(build_id: int) -> str:
    """RQ job id of the image job queued when build ``build_id`` completed."""
    return artifact_job_id(BuildArtifactType.DOCKER_MANIFEST, build_id)


def build_job_id(build_id: int, attempt: int = 1) -> str:
    return BUILD_JOB_ID.format(build_id=int(build_id), attempt=int(attempt))


def job_attempt(job_id: str | None) -> int:
    """The attempt number a build job id names (ids of older servers, and none, count as 1)."""
    match = _BUILD_JOB_ID.match(job_id or "")
    return int(match["attempt"]) if match else 1


def rq_job_timeout(store: "CondaStore") -> int:
    """RQ's job timeout for build and image jobs: the build limit plus a margin, or none."""
    limit = store.build_time_limit
    return NO_JOB_TIMEOUT if limit is None else int(limit) + JOB_TIMEOUT_MARGIN


def work_dir(store: "CondaStore", build_id: int) -> Path:
    return store.store_path / WORK_DIR / str(int(build_id))


def config_path_of(store: "CondaStore") -> str | None:
    """The config file a worker should load for jobs of ``store``: its own, then ``$CONDA_STORE_CONFIG``."""
    path = store.config_file or os.environ.get(CONFIG_ENV)
    return os.path.abspath(path) if path else None


class BuildQueue:
    """Enqueue, cancel and clean up builds of ``store``: ``BuildQueue(store).enqueue_build(id)``.

    It holds nothing but the store (Redis connection and settings), so making one is free."""

    def __init__(self, store: "CondaStore") -> None:
        self.store = store

    # -- RQ plumbing ------------------------------------------------------------------------------
    def rq_queue(self, name: str = BUILD_QUEUE) -> "Queue":
        from rq import Queue

        return Queue(name, connection=self.store.redis)

    def _enqueue(self, queue: str, func: str, *args: Any, job_id: str | None = None, timeout: int,
                 module: str = _TASKS, unique: bool = False) -> str | None:
        """Enqueue a job; with ``unique`` (needs ``job_id``), None if that job already exists."""
        import redis
        from rq.exceptions import DuplicateJobError

        try:
            job = self.rq_queue(queue).enqueue(
                f"{module}.{func}",
                *args,
                config_path_of(self.store),
                job_id=job_id,
                job_timeout=timeout,
                result_ttl=RESULT_TTL,
                failure_ttl=RESULT_TTL,
                description=f"{func}{args!r}",
                unique=unique,
            )
        except DuplicateJobError:
            return None
        except redis.exceptions.RedisError as err:
            raise QueueUnavailableError(f"the build queue (Redis) is not reachable: {err}") from err
        return job.id

    # -- builds -----------------------------------------------------------------------------------
    def enqueue_build(self, build_id: int) -> str:
        """Queue build ``build_id`` (status QUEUED); returns the RQ job id, also saved in ``Build.job_id``.

        The job id is written to the database *before* the job exists, so the reconciler never sees
        a queued build without a job id (it enqueues that same job, exactly once, if Redis lost
        it); if Redis is down the build is marked FAILED at once.
        """
        from .. import orm

        job_id = build_job_id(build_id)
        with self.store.session() as db:
            build = db.get(orm.Build, int(build_id))
            if build is None:
                raise NotFoundError(f"build {build_id} does not exist")
            build.job_id = job_id
        try:
            self.enqueue_build_job(build_id, job_id)
            return job_id
        except QueueUnavailableError as err:
            from .lifecycle import end

            end(self.store, build_id, (BuildStatus.QUEUED,), BuildStatus.FAILED, str(err), live=False)
            raise

    def enqueue_build_job(self, build_id: int, job_id: str) -> bool:
        """Put the job ``job_id`` (an attempt of build ``build_id``) on the build queue unless it
        already exists (atomically: RQ's unique enqueue). True if this call enqueued it."""
        return self._enqueue(BUILD_QUEUE, "build_environment", int(build_id), job_id=job_id,
                             timeout=rq_job_timeout(self.store), unique=True) is not None

    def enqueue_artifact_once(self, build_id: int, kind: BuildArtifactType) -> str | None:
        """Queue the job making artifact ``kind`` of a COMPLETED build unless it was already queued;
        returns its id or None.

        The job id is derived from the build and the artifact and the enqueue is RQ's atomic unique
        one, so the build child, its supervisor (finishing the tail of a child killed after
        COMPLETED) and repair never queue it twice.
        """
        _prefix, module, func = ARTIFACT_JOBS[BuildArtifactType(kind)]
        return self._enqueue(ARTIFACT_QUEUE, func, int(build_id), module=module,
                             job_id=artifact_job_id(kind, build_id), timeout=rq_job_timeout(self.store), unique=True)

    def enqueue_image_once(self, build_id: int) -> str | None:
        """:meth:`enqueue_artifact_once` for the image."""
        return self.enqueue_artifact_once(build_id, BuildArtifactType.DOCKER_MANIFEST)

    def cancel_build(self, build_id: int, reason: str = CANCELED_BY_USER) -> None:
        """Cancel a build.

        QUEUED: becomes CANCELED now and its RQ job is canceled. BUILDING: the worker supervising it
        sees the cancel flag within a fraction of a second, kills the build's process group and
        records CANCELED (with ``reason`` in the log). Finished builds: ConflictError.
        """
        from .. import orm
        from .lifecycle import end

        with self.store.session() as db:
            build = db.get(orm.Build, int(build_id))
            if build is None:
                raise NotFoundError(f"build {build_id} does not exist")
            status, job_id = build.status, build.job_id
        if status == BuildStatus.QUEUED and end(self.store, build_id, (BuildStatus.QUEUED,), BuildStatus.CANCELED,
                                                reason):
            self._cancel_rq_job(job_id)
            return
        with self.store.session() as db:  # lost the race with a worker, or it was not QUEUED
            status = db.get(orm.Build, int(build_id)).status
        if status == BuildStatus.BUILDING:
            self.store.redis.set(cancel_key(build_id), reason, ex=CANCEL_TTL)
            return
        raise ConflictError(f"build {build_id} is already {BuildStatus(status).value} and cannot be canceled")

    def _cancel_rq_job(self, job_id: str | None) -> None:
        if not job_id:
            return
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import Job

        try:
            Job.fetch(job_id, connection=self.store.redis).cancel()
        except (NoSuchJobError, InvalidJobOperation):
            pass  # already picked up or gone: the worker's compare-and-set sees CANCELED and skips

    # -- deletion and links -----------------------------------------------------------------------
    def enqueue_delete_build(self, build_id: int) -> None:
        """After the API soft-deleted the build: remove its prefix and the artifacts not kept."""
        self._enqueue(MAINTENANCE_QUEUE, "delete_build", int(build_id), timeout=MAINTENANCE_JOB_TIMEOUT,
                      module=PURGE_MODULE)

    def enqueue_delete_environment(self, environment_id: int) -> None:
        """After the API soft-deleted the environment: cancel its running builds, delete every build,
        remove its ``envs/<name>`` link."""
        self._enqueue(MAINTENANCE_QUEUE, "delete_environment", int(environment_id), timeout=MAINTENANCE_JOB_TIMEOUT,
                      module=PURGE_MODULE)

    def enqueue_delete_namespace(self, namespace_id: int) -> None:
        """After the API soft-deleted the namespace: delete each of its environments."""
        self._enqueue(MAINTENANCE_QUEUE, "delete_namespace", int(namespace_id), timeout=MAINTENANCE_JOB_TIMEOUT,
                      module=PURGE_MODULE)

    def enqueue_update_environment_link(self, environment_id: int) -> None:
        """Re-point ``<store>/<ns>/envs/<name>`` at the environment's current build (rollback)."""
        self._enqueue(MAINTENANCE_QUEUE, "update_environment_link", int(environment_id),
                      timeout=MAINTENANCE_JOB_TIMEOUT, module=PURGE_MODULE)

