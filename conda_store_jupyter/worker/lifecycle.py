"""The one owner of build state: every change of a build's ``status`` and of its artifacts' states.

::

    QUEUED    --assign_job-->    QUEUED              a job id for a build that had none (reconciler)
    QUEUED    --claim-->         BUILDING            the worker taking the job (tasks.build_environment)
    QUEUED | BUILDING --requeue--> QUEUED            its next attempt, after an interruption (reconciler)
    QUEUED    --end-->           CANCELED | FAILED   API cancel, enqueue failure, reconciler
    BUILDING  --complete-->      COMPLETED           the build child, pipeline succeeded
    BUILDING  --fail-->          FAILED              the build child, pipeline failed
    BUILDING  --end-->           CANCELED | FAILED   its supervisor (cancel, timeout, crash), reconciler

    artifacts made after COMPLETED (schema.POST_BUILD_ARTIFACTS: conda-pack archive, image), one
    ``build_artifact`` row each, written PENDING in the COMPLETED transaction itself:
    PENDING --artifact_ready | artifact_failed--> READY | FAILED        (their jobs, worker/artifacts.py)
    none    --artifact_pending--> PENDING                               (repair, an artifact enabled later)

The API, the worker, the reconciler and repair change state only through these functions. Each
is a compare-and-set (``UPDATE build ... WHERE status IN (<expected>)``), so two writers (a
cancel and a finishing build, the reconciler and a worker, two reconcilers) always end in exactly
one final state; given the job id of an attempt (``job_id``), only while that attempt is the
build's current one (``Build.job_id``), so an attempt the reconciler replaced changes nothing.
Whatever belongs with the state (log and artifact rows, packages, the
environment's current build) is written in the same transaction: nobody sees COMPLETED without
its packages, or any final state without its log.

Files are uploaded *before* that transaction, never inside it: on SQLite a write transaction holds
the database's only write lock, which an upload of a large archive would hold for its whole
duration. A writer therefore uploads before it knows whether it wins, so no two writers share a
key: the build child writes the canonical keys (``logs/<build key>.log``...), a writer ending a
build from outside (supervisor, reconciler, cancel) its log to ``logs/<build key>.<token>.log``.
The winner's rows point at its keys; a loser deletes what it uploaded, and so can never overwrite
the log a final state was recorded with.

A final log is chronological and ends with the final status line (``builder.log.final_log``);
the live stream (``worker.logs``) gets the same lines in the same order, then its end marker.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..builder.log import final_log
from ..schema import POST_BUILD_ARTIFACTS, ArtifactStatus, BuildArtifactType, BuildStatus
from ..storage.base import artifact_key

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..app import CondaStore
    from ..builder.records import InstalledPackage

log = logging.getLogger(__name__)

LOG_CONTENT_TYPE = "text/plain; charset=utf-8"


def final_line(status: BuildStatus, reason: str) -> str:
    """The last line of a build's log, e.g. ``BUILD CANCELED: canceled by user``."""
    return f"BUILD {status.value}: {reason}"


# -- the compare-and-set ------------------------------------------------------------------------
def _compare_and_set(db: "Session", build_id: int, expected: Sequence[BuildStatus], *conditions: Any,
                     attempt: str | None = None, **values: Any) -> bool:
    """In the caller's transaction: set the build's columns if its status is one of ``expected``,
    ``conditions`` hold and (given) the job ``attempt`` is its current one; True if this call changed it."""
    from sqlalchemy import update

    from .. import orm

    if attempt is not None:
        conditions = (*conditions, orm.Build.job_id == attempt)
    result = db.execute(
        update(orm.Build)
        .where(orm.Build.id == int(build_id), orm.Build.status.in_(list(expected)), *conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _state(store: "CondaStore", build_id: int, job_id: str | None = None) -> tuple[BuildStatus, str] | None:
    """(status, build key) of the build; None if it does not exist or (given ``job_id``) another
    attempt is its current one."""
    from .. import orm

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None or (job_id is not None and build.job_id != job_id):
            return None
        return BuildStatus(build.status), build.build_key


def _own_log_key(build_key: str) -> str:
    """A LOGS key no other writer uses (see the module docstring): ``logs/<build key>.<token>.log``."""
    canonical = artifact_key(BuildArtifactType.LOGS, build_key)
    return f"{canonical.removesuffix('.log')}.{uuid.uuid4().hex[:12]}.log"


def _delete_quietly(store: "CondaStore", keys: Sequence[str]) -> None:
    for key in keys:
        with contextlib.suppress(Exception):  # a key that is not ours (ValueError) is never touched
            store.storage.delete(key)


def _announce(store: "CondaStore", build_id: int, lines: Sequence[str], status: BuildStatus) -> None:
    """Append ``lines`` to the live log and mark it finished (the stored log is the record)."""
    from .logs import finish_log, publish_line

    try:
        for line in lines:
            publish_line(store, build_id, line)
        finish_log(store, build_id, status)
    except Exception as exc:  # noqa: BLE001 - Redis trouble: readers fall back to the stored log
        log.warning("build %s: could not end its live log: %s", build_id, exc)


# -- QUEUED -> BUILDING, and back -----------------------------------------------------------------
def claim(store: "CondaStore", build_id: int, *, job_id: str | None = None) -> bool:
    """QUEUED -> BUILDING (``started_on`` now); False if the build is no longer QUEUED or (given
    ``job_id``) that job is not its current attempt: a replaced attempt must not run it again."""
    from ..orm import utcnow

    with store.session() as db:
        return _compare_and_set(db, build_id, (BuildStatus.QUEUED,), attempt=job_id, status=BuildStatus.BUILDING,
                                started_on=utcnow())


def assign_job(store: "CondaStore", build_id: int, job_id: str) -> bool:
    """Give a QUEUED build without a job id (an older server, a crash in between) the id ``job_id``."""
    from .. import orm

    with store.session() as db:
        return _compare_and_set(db, build_id, (BuildStatus.QUEUED,), orm.Build.job_id.is_(None), job_id=job_id)


def requeue(store: "CondaStore", build_id: int, expected: BuildStatus, job_id: str | None, next_job_id: str,
            reason: str) -> bool:
    """``expected`` (QUEUED or BUILDING) -> QUEUED as attempt ``next_job_id``, if ``job_id`` is still the
    current attempt: the build was interrupted from outside and runs again."""
    with store.session() as db:
        return _compare_and_set(db, build_id, (expected,), attempt=job_id, status=BuildStatus.QUEUED,
                                status_info=f"queued again: {reason}", job_id=next_job_id)


# -- ending a build from outside its pipeline ---------------------------------------------------
def end(store: "CondaStore", build_id: int, expected: Sequence[BuildStatus], status: BuildStatus, reason: str,
        *, body: str = "", tail: Sequence[str] = (), live: bool = True, job_id: str | None = None) -> bool:
    """End a build whose pipeline did not record its own outcome: canceled while queued, stopped
    by its supervisor (cancel, timeout, crash), reconciled after its worker died, never enqueued.

    ``body`` is what the build wrote so far (its log file, or its live lines): it is kept, in
    order, followed by ``tail`` (lines that never reached the live stream, e.g. the crashed
    process's stderr) and the final status line; a failure's cause also goes on top. ``tail``
    and the final line then go to the live stream, which is marked finished (unless not ``live``:
    Redis is known to be down, and a reader of a build without a stream gets the stored log).
    False (and nothing written) if the build's status was not in ``expected`` (or, given
    ``job_id``, that attempt is no longer the current one).
    """
    from ..orm import utcnow
    from .record import record_artifacts

    state = _state(store, build_id, job_id)
    if state is None or state[0] not in expected:
        return False
    last = final_line(status, reason)
    lines = [line for text in tail for line in text.splitlines()]
    if body and not body.endswith("\n"):
        body += "\n"
    text = final_log(body + "".join(f"{line}\n" for line in lines), last, summary=status == BuildStatus.FAILED)
    key = _own_log_key(state[1])
    store.storage.put_bytes(key, text.encode("utf-8"), content_type=LOG_CONTENT_TYPE)
    with store.session() as db:
        won = _compare_and_set(db, build_id, expected, attempt=job_id, status=status, status_info=reason,
                               ended_on=utcnow())
        if won:
            record_artifacts(db, build_id, {BuildArtifactType.LOGS: key}, replace=True)
    if not won:  # the build moved on meanwhile: its own process (or another reconciler) recorded it
        _delete_quietly(store, [key])
        return False
    if live:
        _announce(store, build_id, [*lines, last], status)
    return True


# -- the build child's own outcome -----------------------------------------------------------------
@dataclass(frozen=True)
class BuildResult:
    """What a successful pipeline run leaves for the database (see :func:`complete`)."""

    prefix: Path
    size_bytes: int
    log: Path
    """The finished log file (its last line ``BUILD COMPLETED in … s``)."""
    artifacts: dict[BuildArtifactType, str] = field(default_factory=dict)
    """Artifacts already uploaded by the caller: type -> storage key."""
    packages: Sequence["InstalledPackage"] = ()


def complete(store: "CondaStore", build_id: int, result: BuildResult, *, job_id: str | None = None) -> bool:
    """BUILDING -> COMPLETED, with its log, artifact rows, packages, size, and as its environment's
    current build unless a newer one already is, in one transaction after the uploads.

    False if the build was ended elsewhere meanwhile (canceled, reconciled): the other side owns
    the final state, and this one removes what only it would have used: its prefix and uploads;
    unless (given ``job_id``) a newer attempt of the build runs now, into the same prefix and keys.
    """
    from sqlalchemy import or_, update

    from .. import orm
    from ..orm import utcnow
    from .record import record_artifacts, record_packages

    if _state(store, build_id) is not None and _state(store, build_id, job_id) is None:
        log.warning("build %s ended elsewhere (a newer attempt runs it); leaving its files", build_id)
        return False
    state = _state(store, build_id, job_id)
    uploaded = list(result.artifacts.values())
    later = post_build_artifacts(store, build_id)
    won = False
    if state is not None and state[0] == BuildStatus.BUILDING:
        log_key = artifact_key(BuildArtifactType.LOGS, state[1])
        store.storage.put_file(log_key, result.log, content_type=LOG_CONTENT_TYPE)
        uploaded.append(log_key)
        with store.session() as db:
            won = _compare_and_set(db, build_id, (BuildStatus.BUILDING,), attempt=job_id,
                                   status=BuildStatus.COMPLETED, ended_on=utcnow(), status_info=None,
                                   size=result.size_bytes)
            if won:
                build = db.get(orm.Build, int(build_id))
                record_packages(db, build, result.packages)
                record_artifacts(db, build_id, {**result.artifacts, BuildArtifactType.LOGS: log_key,
                                                BuildArtifactType.DIRECTORY: str(result.prefix)}, replace=True)
                # The post-build artifacts are PENDING from this very commit: nobody ever sees a
                # COMPLETED build whose archive is neither there nor announced, and a job lost
                # between here and its enqueue is found by repair (a PENDING row without a job).
                record_artifacts(db, build_id, {k: "" for k in later},
                                 status=ArtifactStatus.PENDING)
                # Newer builds win: a slow old build finishing late must not replace a newer current build.
                db.execute(
                    update(orm.Environment)
                    .where(orm.Environment.id == build.environment_id, orm.Environment.deleted_on.is_(None),
                           or_(orm.Environment.current_build_id.is_(None),
                               orm.Environment.current_build_id < build.id))
                    .values(current_build_id=build.id)
                    .execution_options(synchronize_session=False)
                )
    if not won:
        log.warning("build %s ended elsewhere before it could complete; discarding its results", build_id)
        shutil.rmtree(result.prefix, ignore_errors=True)
        _delete_quietly(store, uploaded)
    return won


def fail(store: "CondaStore", build_id: int, reason: str, *, log_file: Path, lockfile: Path | None = None,
         job_id: str | None = None) -> bool:
    """BUILDING -> FAILED with ``reason``, its log (already ended by ``BuildLog.fail``) and, if the
    solve got that far, its lockfile; uploaded first, recorded in one transaction. False (and the
    uploads removed) if the build was ended elsewhere meanwhile."""
    from ..orm import utcnow
    from .record import record_artifacts

    state = _state(store, build_id, job_id)
    if state is None or state[0] != BuildStatus.BUILDING:
        return False
    keys = {BuildArtifactType.LOGS: artifact_key(BuildArtifactType.LOGS, state[1])}
    store.storage.put_file(keys[BuildArtifactType.LOGS], log_file, content_type=LOG_CONTENT_TYPE)
    if lockfile is not None and lockfile.exists():
        keys[BuildArtifactType.LOCKFILE] = artifact_key(BuildArtifactType.LOCKFILE, state[1])
        store.storage.put_file(keys[BuildArtifactType.LOCKFILE], lockfile, content_type="text/yaml")
    with store.session() as db:
        won = _compare_and_set(db, build_id, (BuildStatus.BUILDING,), attempt=job_id, status=BuildStatus.FAILED,
                               status_info=reason, ended_on=utcnow())
        if won:
            record_artifacts(db, build_id, keys, replace=True)
    if not won:
        _delete_quietly(store, list(keys.values()))
        return False
    _announce(store, build_id, [], BuildStatus.FAILED)  # BuildLog.fail already sent the final line
    return True


# -- artifacts made after COMPLETED --------------------------------------------------------------
def post_build_artifacts(store: "CondaStore", build_id: int | None = None) -> list[BuildArtifactType]:
    """The artifacts of ``POST_BUILD_ARTIFACTS`` this store is configured to make; for ``build_id``,
    as its environment's settings say (``PUT /api/v1/setting/<ns>/[<env>/]`` can switch them)."""
    if build_id is None:
        wanted = store.build_artifacts
    else:
        from .settings import build_settings_for

        wanted = build_settings_for(store, build_id).build_artifacts
    return [kind for kind in POST_BUILD_ARTIFACTS if kind.value in wanted]


def artifact_pending(store: "CondaStore", build_id: int, kind: BuildArtifactType) -> bool:
    """No row -> PENDING for a live COMPLETED build (an artifact configured after it completed, or
    a row lost); True if this call added it. An existing row (any state) is left alone."""
    from sqlalchemy import exists, insert, select

    from .. import orm

    A = orm.BuildArtifact
    with store.session() as db:
        done = db.execute(
            insert(A).from_select(
                ["build_id", "artifact_type", "key", "status"],
                select(orm.Build.id, _literal(kind.value), _literal(""), _literal(ArtifactStatus.PENDING.value))
                .where(orm.Build.id == int(build_id), orm.Build.status == BuildStatus.COMPLETED,
                       orm.Build.deleted_on.is_(None),
                       ~exists().where(A.build_id == orm.Build.id, A.artifact_type == kind)))
        ).rowcount == 1
    return done


def _literal(value: str):
    from sqlalchemy import String, literal

    return literal(value, String)


def artifact_ready(store: "CondaStore", build_id: int, kind: BuildArtifactType, key: str) -> bool:
    """Artifact ``kind`` -> READY at ``key`` (the first READY one stays), a previous failure's reason
    cleared. False if the build was deleted or no longer exists: nothing is recorded then (the
    caller removes what it uploaded, unless the key is a shared content-addressed blob)."""
    from sqlalchemy import exists, update

    from .. import orm
    from .record import expire_artifacts, record_artifacts

    A = orm.BuildArtifact
    with store.session() as db:
        alive = db.scalar(exists().where(orm.Build.id == int(build_id), orm.Build.deleted_on.is_(None)).select())
        if not alive:
            return False
        # A row exists from the COMPLETED commit on: turn it READY unless another job already did;
        # a build without one (an older build, a test) gets it inserted.
        changed = db.execute(
            update(A).where(A.build_id == int(build_id), A.artifact_type == kind, A.status != ArtifactStatus.READY)
            .values(key=key, status=ArtifactStatus.READY, reason=None).execution_options(synchronize_session=False)
        ).rowcount
        if not changed:
            record_artifacts(db, build_id, {kind: key})
        expire_artifacts(db, build_id)
    return True


def artifact_failed(store: "CondaStore", build_id: int, kind: BuildArtifactType, reason: str) -> bool:
    """Artifact ``kind`` -> FAILED with ``reason`` (the build stays COMPLETED and usable), unless it
    is READY already. False if nothing changed."""
    from sqlalchemy import update

    from .. import orm
    from .record import expire_artifacts, record_artifacts

    A = orm.BuildArtifact
    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None or build.status is not BuildStatus.COMPLETED:
            return False
        changed = db.execute(
            update(A).where(A.build_id == int(build_id), A.artifact_type == kind, A.status != ArtifactStatus.READY)
            .values(status=ArtifactStatus.FAILED, reason=reason).execution_options(synchronize_session=False)
        ).rowcount == 1
        if not changed and build.artifact_state(kind) is None:
            record_artifacts(db, build_id, {kind: ""}, status=ArtifactStatus.FAILED)
            db.execute(update(A).where(A.build_id == int(build_id), A.artifact_type == kind,
                                       A.status == ArtifactStatus.FAILED).values(reason=reason))
            changed = True
        expire_artifacts(db, build_id)
    return changed


# -- the image: the names the image job and older tests use ---------------------------------------
def image_queued(store: "CondaStore", build_id: int) -> bool:
    """The image of a COMPLETED build is PENDING (see :func:`artifact_pending`)."""
    return artifact_pending(store, build_id, BuildArtifactType.DOCKER_MANIFEST)


def image_ready(store: "CondaStore", build_id: int, manifest_key: str) -> bool:
    return artifact_ready(store, build_id, BuildArtifactType.DOCKER_MANIFEST, manifest_key)


def image_failed(store: "CondaStore", build_id: int, reason: str) -> bool:
    return artifact_failed(store, build_id, BuildArtifactType.DOCKER_MANIFEST, reason)
