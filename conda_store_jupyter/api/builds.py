"""Builds: lookup, listing, rebuild, delete, and submitting new builds (commit, then enqueue)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload

from .. import orm
from ..app import CondaStore
from ..auth.rbac import (
    RoleBindings,
)
from ..exceptions import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from ..lockspec import LockSpecification
from ..schema import BuildArtifactType, BuildStatus, Specification
from ..worker.queue import BuildQueue
from ._query import Page, PageResult, has_artifact, paginate, visible_clause
from ._session import in_transaction
from .environments import prepare_specification, submit_specification
from .namespaces import create_namespace

# -- builds -------------------------------------------------------------------------------------


def get_build(db: Session, build_id: int, *, include_deleted: bool = True) -> orm.Build:
    """A build with its environment, namespace, specification and artifacts loaded."""
    build = db.scalar(
        select(orm.Build)
        .options(
            joinedload(orm.Build.environment).joinedload(orm.Environment.namespace),
            joinedload(orm.Build.specification),
            selectinload(orm.Build.artifacts),
        )
        .where(orm.Build.id == build_id)
    )
    if build is None or (not include_deleted and build.deleted_on is not None):
        raise NotFoundError(f"build {build_id} does not exist")
    return build


_BUILD_SORT = {
    "id": orm.Build.id,
    "started_on": orm.Build.started_on,
    "scheduled_on": orm.Build.scheduled_on,
    "ended_on": orm.Build.ended_on,
}


def list_builds(
    db: Session,
    bindings: RoleBindings,
    page: Page,
    *,
    status: BuildStatus | None = None,
    artifact: BuildArtifactType | None = None,
    packages: Sequence[str] = (),
    environment_id: int | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> PageResult:
    """Builds visible to ``bindings``, including soft-deleted ones (history stays browsable)."""
    stmt = (
        select(orm.Build)
        .join(orm.Build.environment)
        .join(orm.Environment.namespace)
        .options(contains_eager(orm.Build.environment).contains_eager(orm.Environment.namespace),
                 # each listed build shows its artifacts' states: one query per page, not one per build
                 selectinload(orm.Build.artifacts))
        .where(visible_clause(bindings, orm.Namespace.name, orm.Environment.name))
    )
    if status is not None:
        stmt = stmt.where(orm.Build.status == status)
    if artifact is not None:
        stmt = stmt.where(has_artifact(orm.Build.id, artifact))
    link = orm.build_conda_package_build
    for pkg in packages:
        stmt = stmt.where(
            exists(
                select(1)
                .select_from(link)
                .join(orm.CondaPackageBuild, orm.CondaPackageBuild.id == link.c.conda_package_build_id)
                .join(orm.CondaPackage, orm.CondaPackage.id == orm.CondaPackageBuild.package_id)
                .where(link.c.build_id == orm.Build.id, orm.CondaPackage.name == pkg)
            )
        )
    if environment_id is not None:
        stmt = stmt.where(orm.Build.environment_id == environment_id)
    if name:
        stmt = stmt.where(orm.Environment.name == name)
    if namespace:
        stmt = stmt.where(orm.Namespace.name == namespace)
    return paginate(db, stmt, page, _BUILD_SORT, ["id"], orm.Build.id)


def rebuild(db: Session, build: orm.Build) -> orm.Build:
    """A new QUEUED build of the same specification in the same environment."""
    env = build.environment
    if env.deleted_on is not None:
        raise ConflictError(f"environment {env.namespace.name}/{env.name} was deleted")
    new = orm.Build(specification_id=build.specification_id, environment=env, status=BuildStatus.QUEUED)
    db.add(new)
    db.flush()
    return new


def delete_build(db: Session, build: orm.Build) -> None:
    """Soft-delete a finished build that is not its environment's current one."""
    if not build.status.finished:
        raise ValidationError(f"build {build.id} is {build.status.value.lower()}; cancel it before deleting it")
    if build.deleted_on is not None:
        raise NotFoundError(f"build {build.id} does not exist")
    if build.environment.current_build_id == build.id and build.environment.deleted_on is None:
        raise ConflictError(
            f"build {build.id} is the current build of {build.environment.namespace.name}/"
            f"{build.environment.name}; make another build current or delete the environment"
        )
    build.deleted_on = orm.utcnow()
    db.flush()


# -- submitting builds (commit, then enqueue) ----------------------------------------------------


def submit(store: CondaStore, *, namespace: str, specification: Specification | LockSpecification,
           description: str | None = None, owner: str | None = None) -> int:
    """Register ``specification`` in ``namespace`` (created if needed), commit, then enqueue.

    Returns the new build id. Callers check permissions first; ``owner`` is the identity whose
    own namespace this is (see :func:`user_namespace_owner`). The specification's warnings open
    the build's live log. If Redis is down the queue marks the build FAILED and raises a
    503-class error.
    """
    def register(db: Session) -> int:
        ns = create_namespace(db, namespace, exist_ok=True, owner=owner)
        return submit_specification(db, ns, specification, description).id

    build_id = in_transaction(store, register)  # concurrent first submissions share the new rows
    if specification.warnings:
        _log_warnings(store, build_id, specification.warnings)
    BuildQueue(store).enqueue_build(build_id)
    return build_id


def _log_warnings(store: CondaStore, build_id: int, warnings: Sequence[str]) -> None:
    """Write ``warnings`` first in the build's live log, before the job exists (so before any
    line of the worker's). Best effort: without Redis the enqueue right after reports the outage."""
    from redis.exceptions import RedisError

    from ..worker.logs import publish_line

    try:
        for warning in warnings:
            publish_line(store, build_id, f"WARNING: {warning}")
    except RedisError:
        pass


def submit_dynamic_build(store: CondaStore, *, namespace: str, specification: Mapping[str, Any],
                         requested_by: str | None = None) -> int:
    """An on-demand image build (registry): validate the generated spec and submit it."""
    spec = prepare_specification(store, specification, namespace=namespace)
    return submit(store, namespace=namespace, specification=spec,
                  description=f"on-demand image requested by {requested_by or 'anonymous'}")
