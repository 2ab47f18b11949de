"""Specifications and environments: validate, upsert, list, update, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session, contains_eager
from sqlalchemy.sql import ColumnElement

from .. import orm
from ..app import CondaStore
from ..auth.rbac import (
    RoleBindings,
)
from ..exceptions import (
    NotFoundError,
    SpecificationError,
    ValidationError,
)
from ..schema import BuildArtifactType, BuildStatus, Specification, parse_specification
from ._query import Page, PageResult, has_artifact, paginate, visible_clause

# -- specifications and environments -------------------------------------------------------------


def prepare_specification(store: CondaStore, text: str | bytes | Mapping[str, Any]) -> Specification:
    """Validate user text and apply the store's policy (default/included/required packages).

    The sha256 identity is computed on the result, so two users submitting the same file under
    the same policy share one specification row.
    """
    from ..schema import specification_from_dict

    policy = {"allowed_channels": store.allowed_channels, "channel_alias": store.conda_channel_alias}
    if isinstance(text, Mapping):
        spec = specification_from_dict(dict(text), **policy)
    else:
        spec = parse_specification(text, **policy)
    if not spec.channels:
        spec = spec.model_copy(update={"channels": list(store.conda_default_channels)})
    spec = spec.with_packages(store.conda_included_packages)
    missing = sorted(set(store.conda_required_packages) - spec.conda_names)
    if missing:
        raise SpecificationError(f"dependencies: required package(s) missing: {', '.join(missing)}")
    return spec


def upsert_specification(db: Session, spec: Specification) -> orm.Specification:
    sha = spec.sha256
    row = db.scalar(select(orm.Specification).where(orm.Specification.sha256 == sha))
    if row is None:
        row = orm.Specification(name=spec.name, spec=spec.to_environment_dict(), sha256=sha)
        db.add(row)
        db.flush()
    return row


def get_environment(db: Session, namespace: str, name: str) -> orm.Environment:
    env = db.scalar(
        select(orm.Environment)
        .join(orm.Environment.namespace)
        .options(contains_eager(orm.Environment.namespace))
        .where(
            orm.Namespace.name == namespace,
            orm.Namespace.deleted_on.is_(None),
            orm.Environment.name == name,
            orm.Environment.deleted_on.is_(None),
        )
    )
    if env is None:
        raise NotFoundError(f"environment {namespace}/{name} does not exist")
    return env


def submit_specification(
    db: Session, namespace: orm.Namespace, spec: Specification, description: str | None = None
) -> orm.Build:
    """Create or update ``namespace/spec.name`` and a QUEUED build of ``spec``.

    Every submission makes a new build, even of an identical specification (as upstream's
    ``force=True``): users resubmit to pick up new package versions.
    """
    specification = upsert_specification(db, spec)
    env = db.scalar(
        select(orm.Environment).where(
            orm.Environment.namespace_id == namespace.id, orm.Environment.name == spec.name
        )
    )
    if env is None:
        env = orm.Environment(namespace=namespace, name=spec.name)
        db.add(env)
    elif env.deleted_on is not None:  # recreated after a delete: start a fresh history pointer
        env.deleted_on = None
        env.current_build_id = None
    if description is not None:
        env.description = description
    elif spec.description and not env.description:
        env.description = spec.description
    build = orm.Build(specification=specification, environment=env, status=BuildStatus.QUEUED)
    db.add(build)
    db.flush()
    return build


_ENV_SORT = {"namespace": orm.Namespace.name, "name": orm.Environment.name}


def _current_build_has_packages(names: Iterable[str]) -> list[ColumnElement]:
    link = orm.build_conda_package_build
    return [
        exists(
            select(1)
            .select_from(link)
            .join(orm.CondaPackageBuild, orm.CondaPackageBuild.id == link.c.conda_package_build_id)
            .join(orm.CondaPackage, orm.CondaPackage.id == orm.CondaPackageBuild.package_id)
            .where(link.c.build_id == orm.Environment.current_build_id, orm.CondaPackage.name == name)
        )
        for name in names
    ]



@dataclass(frozen=True, slots=True)
class ListedNamespace:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class ListedArtifact:
    id: int
    artifact_type: BuildArtifactType
    key: str


@dataclass(frozen=True, slots=True)
class ListedBuild:
    """The columns of a build that a listing shows (the serializers read them like ORM rows)."""

    id: int
    environment_id: int
    status: BuildStatus
    status_info: str | None
    image_status: Any
    size: int | None
    scheduled_on: Any
    started_on: Any
    ended_on: Any
    deleted_on: Any
    artifacts: tuple[ListedArtifact, ...]


@dataclass(frozen=True, slots=True)
class ListedEnvironment:
    id: int
    name: str
    description: str | None
    current_build_id: int | None
    namespace: ListedNamespace
    current_build: ListedBuild | None


_LISTED_BUILD_COLUMNS = ("id", "environment_id", "status", "status_info", "image_status", "size",
                         "scheduled_on", "started_on", "ended_on", "deleted_on")


def list_environments(
    db: Session,
    bindings: RoleBindings,
    page: Page,
    *,
    search: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
    status: BuildStatus | None = None,
    artifact: BuildArtifactType | None = None,
    packages: Sequence[str] = (),
) -> PageResult:
    """Live environments visible to ``bindings``; status/artifact/packages apply to the current build.

    Items are :class:`ListedEnvironment` records read as plain rows, not ORM objects: building
    hundreds of ORM instances per page cost ~4x the CPU of the whole request otherwise (the
    listing is the API's busiest call). Four statements per page: count, the page's ids, their
    rows, their artifacts.
    """
    stmt = (
        select(orm.Environment.id)
        .join(orm.Environment.namespace)
        .where(
            orm.Environment.deleted_on.is_(None),
            orm.Namespace.deleted_on.is_(None),
            visible_clause(bindings, orm.Namespace.name, orm.Environment.name),
        )
    )
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(orm.Namespace.name.like(pattern, escape="\\"), orm.Environment.name.like(pattern, escape="\\"))
        )
    if namespace:
        stmt = stmt.where(orm.Namespace.name == namespace)
    if name:
        stmt = stmt.where(orm.Environment.name == name)
    if status is not None:
        stmt = stmt.where(
            exists(select(1).where(orm.Build.id == orm.Environment.current_build_id, orm.Build.status == status))
        )
    if artifact is not None:
        stmt = stmt.where(has_artifact(orm.Environment.current_build_id, artifact))
    if packages:
        stmt = stmt.where(*_current_build_has_packages(packages))
    result = paginate(db, stmt, page, _ENV_SORT, ["namespace", "name"], orm.Environment.id)
    result.items = _listed_rows(db, result.items)
    return result


def _listed_rows(db: Session, ids: list[int]) -> list[ListedEnvironment]:
    """The environments ``ids`` (in that order) with namespace, current build and its artifacts."""
    if not ids:
        return []
    E, N, B, A = orm.Environment, orm.Namespace, orm.Build, orm.BuildArtifact
    build_columns = [getattr(B, c) for c in _LISTED_BUILD_COLUMNS]
    rows = db.execute(
        select(E.id, E.name, E.description, E.current_build_id, N.id, N.name, *build_columns)
        .join(N, E.namespace_id == N.id)
        .outerjoin(B, B.id == E.current_build_id)
        .where(E.id.in_(ids))
    ).all()
    build_ids = [row[6] for row in rows if row[6] is not None]
    artifacts: dict[int, list[ListedArtifact]] = {}
    if build_ids:
        for build_id, *fields in db.execute(
                select(A.build_id, A.id, A.artifact_type, A.key).where(A.build_id.in_(build_ids)).order_by(A.id)):
            artifacts.setdefault(build_id, []).append(ListedArtifact(*fields))
    by_id = {}
    for env_id, env_name, description, current_build_id, ns_id, ns_name, *build in rows:
        current = None
        if build[0] is not None:
            current = ListedBuild(*build, artifacts=tuple(artifacts.get(build[0], ())))
        by_id[env_id] = ListedEnvironment(env_id, env_name, description, current_build_id,
                                          ListedNamespace(ns_id, ns_name), current)
    return [by_id[i] for i in ids if i in by_id]


def update_environment(
    db: Session, env: orm.Environment, *, build_id: int | None = None, description: str | None = None
) -> bool:
    """Change the description and/or the current build. Returns True if the build changed.

    Only a COMPLETED, undeleted build of this same environment can become current (a rollback);
    anything else is a 400, since the symlink would point at a prefix that does not exist.
    """
    if description is not None:
        env.description = description
    if build_id is None or build_id == env.current_build_id:
        db.flush()
        return False
    build = db.get(orm.Build, build_id)
    if build is None or build.environment_id != env.id:
        raise ValidationError(f"build {build_id} is not a build of environment {env.namespace.name}/{env.name}")
    if build.status != BuildStatus.COMPLETED or build.deleted_on is not None:
        raise ValidationError(f"build {build_id} is {build.status.value.lower()}; only a completed build can be current")
    env.current_build_id = build.id
    db.flush()
    return True


def delete_environment(db: Session, env: orm.Environment) -> None:
    now = orm.utcnow()
    env.deleted_on = now
    db.execute(
        orm.Build.__table__.update()
        .where(orm.Build.environment_id == env.id, orm.Build.deleted_on.is_(None))
        .values(deleted_on=now)
    )
    db.flush()
