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
from ..lockspec import LockSpecification
from ..naming import validate_name
from ..schema import ArtifactStatus, BuildArtifactType, BuildStatus, Specification, parse_specification
from ._query import Page, PageResult, has_artifact, paginate, visible_clause
from .settings import EffectiveSettings, settings_for

# -- specifications and environments -------------------------------------------------------------


def prepare_specification(
    store: CondaStore,
    text: str | bytes | Mapping[str, Any],
    settings: EffectiveSettings | None = None,
    *,
    namespace: str | None = None,
    name: str | None = None,
) -> Specification:
    """Validate user text and apply the settings' policy (channels, default/included/required packages).

    ``settings`` are the effective settings of the target environment (``api.settings``); when
    not given they are read here for ``namespace`` and the environment's name (a database
    read: event-loop callers pass them, read in a transaction of theirs). ``name`` renames the
    environment (upstream's ``environment_name``). The sha256 identity is computed on the
    result, so two users submitting the same file under the same policy share one row.
    """
    from ..schema import specification_from_dict

    def parse(policy: dict[str, Any]) -> Specification:
        if isinstance(text, Mapping):
            return specification_from_dict(dict(text), **policy)
        return parse_specification(text, **policy)

    if settings is None:
        env_name = name or parse({}).name  # the name decides which environment's settings apply
        settings = settings_for(store, namespace, env_name)
    spec = parse({"allowed_channels": settings.allowed_channels, "channel_alias": settings.conda_channel_alias})
    if name:
        spec = spec.model_copy(update={"name": validate_name(name, "environment_name")})
    return apply_settings(spec, settings)


def apply_settings(spec: Specification, settings: EffectiveSettings) -> Specification:
    """``spec`` with the settings' defaults and included packages; 400 if a required one is missing."""
    update: dict[str, Any] = {}
    if not spec.channels:
        update["channels"] = list(settings.conda_default_channels)
    if not spec.dependencies and not spec.pip and settings.conda_default_packages:
        update["dependencies"] = list(settings.conda_default_packages)
    if not spec.pip and settings.pypi_default_packages:
        update["pip"] = list(settings.pypi_default_packages)
    spec = spec.model_copy(update=update) if update else spec
    spec = spec.with_packages(settings.conda_included_packages)
    missing = sorted(set(settings.conda_required_packages) - spec.conda_names)
    if missing:
        raise SpecificationError(f"dependencies: required package(s) missing: {', '.join(missing)}")
    pip_names = {_pip_name(p) for p in spec.pip}
    extra = [p for p in settings.pypi_included_packages if _pip_name(p) not in pip_names]
    if extra:
        spec = spec.model_copy(update={"pip": [*spec.pip, *extra]})
        pip_names |= {_pip_name(p) for p in extra}
    missing = sorted(_pip_name(p) for p in settings.pypi_required_packages if _pip_name(p) not in pip_names)
    if missing:
        raise SpecificationError(f"dependencies.pip: required pip package(s) missing: {', '.join(missing)}")
    return spec


def _pip_name(requirement: str) -> str:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return canonicalize_name(Requirement(requirement).name)


def upsert_specification(db: Session, spec: Specification | LockSpecification) -> orm.Specification:
    sha = spec.sha256
    row = db.scalar(select(orm.Specification).where(orm.Specification.sha256 == sha))
    if row is None:
        if isinstance(spec, LockSpecification):
            row = orm.Specification(name=spec.name, spec=spec.to_stored_dict(), sha256=sha, is_lockfile=True)
        else:
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
    db: Session, namespace: orm.Namespace, spec: Specification | LockSpecification, description: str | None = None
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
    new = env is None or env.deleted_on is not None
    if env is None:
        env = orm.Environment(namespace=namespace, name=spec.name)
        db.add(env)
    elif env.deleted_on is not None:  # recreated after a delete: a fresh history pointer (below)
        env.deleted_on = None
    if description is not None:
        env.description = description
    elif spec.description and not env.description:
        env.description = spec.description
    build = orm.Build(specification=specification, environment=env, status=BuildStatus.QUEUED)
    db.add(build)
    db.flush()
    if new:
        # As upstream (whose schema requires an integer): a new environment points at its first
        # build from submission on. Afterwards only a completed build moves it (the worker, or a
        # rollback), so whatever runs, links or serves a build checks that it is COMPLETED
        # (:func:`completed_current_build`).
        env.current_build_id = build.id
        db.flush()
    return build


def completed_current_build(env: orm.Environment) -> orm.Build | None:
    """The environment's current build if it is usable (COMPLETED, not deleted), else None.

    ``current_build_id`` is set from the first submission on, so "current" alone does not mean
    there is a prefix, a lockfile or an image yet.
    """
    build = env.current_build
    if build is None or build.status != BuildStatus.COMPLETED or build.deleted_on is not None:
        return None
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
    status: ArtifactStatus
    reason: str | None


@dataclass(frozen=True, slots=True)
class ListedBuild:
    """The columns of a build that a listing shows (the serializers read them like ORM rows)."""

    id: int
    environment_id: int
    status: BuildStatus
    status_info: str | None
    size: int | None
    scheduled_on: Any
    started_on: Any
    ended_on: Any
    deleted_on: Any
    artifacts: tuple[ListedArtifact, ...]

    @property
    def image_status(self) -> ArtifactStatus | None:
        """As :attr:`orm.Build.image_status`: the image row's state, None when none was asked for."""
        return next((a.status for a in self.artifacts if a.artifact_type == BuildArtifactType.DOCKER_MANIFEST), None)


@dataclass(frozen=True, slots=True)
class ListedEnvironment:
    id: int
    name: str
    description: str | None
    current_build_id: int | None
    namespace: ListedNamespace
    current_build: ListedBuild | None


_LISTED_BUILD_COLUMNS = ("id", "environment_id", "status", "status_info", "size",
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
                select(A.build_id, A.id, A.artifact_type, A.key, A.status, A.reason).where(A.build_id.in_(build_ids)).order_by(A.id)):
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
