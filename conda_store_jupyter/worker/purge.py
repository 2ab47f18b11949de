"""Deletion and link jobs (``MAINTENANCE_QUEUE``): remove what the API soft-deleted.

The API soft-deletes in one transaction: the build, or the environment *and its builds*, or the
namespace, its environments *and their builds* all get ``deleted_on``. These jobs only remove files
and artifacts; they never soft-delete anything themselves. That matters because a deletion can be
undone before its job runs: ``submit_specification`` revives a deleted environment of the same
name and ``create_namespace`` revives a namespace. So a job decides what to purge from the rows'
own ``deleted_on``, never from "everything under this environment": builds created after the
revival have ``deleted_on`` unset and are left alone, and the environment link is recomputed by
``sync_environment_link`` (removed if the environment is still deleted, otherwise re-pointed at
its current build).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from typing import TYPE_CHECKING

from ..exceptions import NotFoundError
from ..schema import BuildArtifactType, BuildStatus
from .links import environment_link, remove_environment_link, sync_environment_link

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)


def purge_build(store: "CondaStore", build_id: int) -> None:
    """Remove a soft-deleted build's prefix and the artifacts not in ``build_artifacts_kept_on_deletion``.

    Running builds are canceled first (their supervisor removes the half-built prefix). The prefix
    path is recomputed from ids, never taken from the DIRECTORY row's key. Content-addressed image
    blobs (``docker/blobs/...``) may be shared with other builds and are left for a separate GC.
    """
    from .. import orm
    from ..exceptions import ConflictError
    from .queue import BuildQueue

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None:
            return
        if build.deleted_on is None:  # the API marks what it deletes; anything else is live
            log.warning("build %s is not deleted; not purging it", build_id)
            return
        status = build.status
    if not BuildStatus(status).finished:
        with contextlib.suppress(ConflictError, NotFoundError):
            BuildQueue(store).cancel_build(build_id, reason="canceled: the build was deleted")
    kept = set(store.build_artifacts_kept_on_deletion)
    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        prefix = build.prefix_path(store.store_path)
        for artifact in list(build.artifacts):
            kind = BuildArtifactType(artifact.artifact_type)
            if kind.value in kept:
                continue
            if artifact.key and kind is not BuildArtifactType.DIRECTORY and not artifact.key.startswith("docker/blobs/"):
                with contextlib.suppress(ValueError):  # a key that is not ours is never touched
                    store.storage.delete(artifact.key)
            db.delete(artifact)
        link = environment_link(store, build.environment.namespace.name, build.environment.name)
    remove_environment_link(link, target=prefix)  # only if it points at this build
    shutil.rmtree(prefix, ignore_errors=True)


def _purge_environment(store: "CondaStore", environment_id: int) -> None:
    """Purge the environment's soft-deleted builds, then recompute its link.

    If the environment was re-created meanwhile, its new builds are not deleted and stay; the link
    is then re-pointed at the current build (or removed while there is none) rather than removed.
    """
    from sqlalchemy import select

    from .. import orm

    with store.session() as db:
        if db.get(orm.Environment, int(environment_id)) is None:
            return
        build_ids = list(db.scalars(
            select(orm.Build.id).where(orm.Build.environment_id == int(environment_id),
                                       orm.Build.deleted_on.is_not(None))
        ))
    for build_id in build_ids:
        purge_build(store, build_id)
    sync_environment_link(store, environment_id)


def delete_build(build_id: int, config_path: str | None = None) -> None:
    """RQ job: clean up a soft-deleted build."""
    from .tasks import load_store

    purge_build(load_store(config_path), build_id)


def delete_environment(environment_id: int, config_path: str | None = None) -> None:
    """RQ job: clean up a soft-deleted environment (its deleted builds, then its link)."""
    from .tasks import load_store

    _purge_environment(load_store(config_path), environment_id)


def delete_namespace(namespace_id: int, config_path: str | None = None) -> None:
    """RQ job: clean up a soft-deleted namespace (each environment, then its empty directories).

    Directories and lock files are only removed while the namespace is still deleted: a revived
    namespace may be building into them right now.
    """
    from .. import orm
    from ..naming import validate_name
    from .tasks import load_store

    store = load_store(config_path)
    with store.session() as db:
        ns = db.get(orm.Namespace, int(namespace_id))
        if ns is None:
            return
        env_ids = [e.id for e in ns.environments]
        name = validate_name(ns.name, "namespace")
    for env_id in env_ids:
        _purge_environment(store, env_id)
    with store.session() as db:
        if db.get(orm.Namespace, int(namespace_id)).deleted_on is None:
            return
    for directory in (store.store_path / name / "envs", store.store_path / name,
                      store.store_path / "builds" / str(int(namespace_id))):
        for lock in directory.glob(".*.lock") if directory.is_dir() else ():
            lock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if empty


def update_environment_link(environment_id: int, config_path: str | None = None) -> None:
    """RQ job: re-point the environment link at its current build (after a rollback)."""
    from .tasks import load_store

    sync_environment_link(load_store(config_path), environment_id)
