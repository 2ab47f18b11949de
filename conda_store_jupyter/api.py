"""The service layer: every database operation the HTTP handlers (and the CLI/pages) perform.

Handlers parse, authorize, call one function here and serialize the result, so the rules about
what a namespace, environment or build may become live in one place and are testable without
HTTP. Functions take an open SQLAlchemy session and never commit: the caller owns the
transaction (``CondaStore.session()``) and enqueues worker jobs only *after* the commit, so a
worker never looks for a row that is not visible yet.

Listings filter, count, sort and page in SQL (never in Python loops), and visibility is an SQL
predicate derived from the caller's role bindings (:func:`visible_clause`).
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import and_, exists, false, func, or_, select, true
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload
from sqlalchemy.sql import ColumnElement, Select

from . import orm
from .app import CondaStore
from .auth.rbac import RoleBindings, canonical_role, normalize_bindings, validate_arn_glob
from .exceptions import ConflictError, NotFoundError, SpecificationError, ValidationError
from .naming import validate_name
from .schema import BuildArtifactType, BuildStatus, Specification, parse_specification

# -- paging -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Page:
    """What a v1 listing asked for. ``size=None`` means "everything" (see :func:`paginate`)."""

    page: int = 1
    size: int | None = None
    sort_by: tuple[str, ...] = ()
    order: str = "asc"


@dataclasses.dataclass
class PageResult:
    items: list[Any]
    count: int
    page: int
    size: int


def paginate(
    db: Session,
    stmt: Select,
    page: Page,
    sortable: Mapping[str, ColumnElement],
    default_sort: Sequence[str],
    tiebreak: ColumnElement,
) -> PageResult:
    """Count, sort and slice ``stmt`` in SQL.

    Unknown ``sort_by`` keys are ignored (as upstream does). Without an explicit page size every
    row is returned: the upstream ``conda-store list`` client re-requests the same URL until
    ``len(data) == count`` and would otherwise loop forever.
    """
    count = db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    keys = [k for k in page.sort_by if k in sortable] or list(default_sort)
    desc = page.order == "desc"
    order = [sortable[k].desc() if desc else sortable[k].asc() for k in keys]
    order.append(tiebreak.desc() if desc else tiebreak.asc())
    stmt = stmt.order_by(*order)
    size = page.size if page.size is not None else max(count, 1)
    if page.size is not None or page.page > 1:
        stmt = stmt.offset((page.page - 1) * size).limit(size)
    items = list(db.scalars(stmt).unique())
    return PageResult(items=items, count=count, page=page.page, size=size)


# -- visibility ---------------------------------------------------------------------------------


def _like(column: ColumnElement, glob: str) -> ColumnElement:
    """SQL twin of one side of an ARN glob: ``*`` → ``%``; ``_``/``%`` in names are literal."""
    if glob == "*":
        return true()
    if "*" not in glob:
        return column == glob
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
    return column.like(escaped, escape="\\")


def visible_clause(
    bindings: RoleBindings, namespace_col: ColumnElement, name_col: ColumnElement | None = None
) -> ColumnElement:
    """Rows matched by any binding, whatever its role (every role can read).

    For namespace listings (``name_col=None``) a binding on ``ns/env`` makes ``ns`` visible too,
    so a user granted one environment can see where it lives.
    """
    clauses = []
    for glob in bindings:
        ns_glob, _, name_glob = glob.partition("/")
        clause = _like(namespace_col, ns_glob)
        if name_col is not None and name_glob not in ("", "*"):
            clause = and_(clause, _like(name_col, name_glob))
        clauses.append(clause)
    if not clauses:
        return false()
    return or_(*clauses)


# -- namespaces ---------------------------------------------------------------------------------


def get_namespace(db: Session, name: str) -> orm.Namespace:
    ns = db.scalar(select(orm.Namespace).where(orm.Namespace.name == name, orm.Namespace.deleted_on.is_(None)))
    if ns is None:
        raise NotFoundError(f"namespace {name!r} does not exist")
    return ns


def find_namespace(db: Session, name: str) -> orm.Namespace | None:
    """The live namespace called ``name``, or None (used to decide if ``namespace::create`` applies)."""
    return db.scalar(select(orm.Namespace).where(orm.Namespace.name == name, orm.Namespace.deleted_on.is_(None)))


def create_namespace(db: Session, name: str, *, exist_ok: bool = False) -> orm.Namespace:
    """Create ``name``; a soft-deleted namespace of that name is brought back empty."""
    validate_name(name, "namespace")
    ns = db.scalar(select(orm.Namespace).where(orm.Namespace.name == name))
    if ns is not None and ns.deleted_on is None:
        if exist_ok:
            return ns
        raise ConflictError(f"namespace {name!r} already exists")
    if ns is None:
        ns = orm.Namespace(name=name, metadata_={})
        db.add(ns)
    else:
        ns.deleted_on = None
        ns.metadata_ = {}
        ns.role_mappings.clear()
    db.flush()
    return ns


def list_namespaces(db: Session, bindings: RoleBindings, page: Page) -> PageResult:
    stmt = select(orm.Namespace).where(
        orm.Namespace.deleted_on.is_(None), visible_clause(bindings, orm.Namespace.name)
    )
    return paginate(db, stmt, page, {"name": orm.Namespace.name}, ["name"], orm.Namespace.id)


def update_namespace(
    db: Session,
    ns: orm.Namespace,
    *,
    metadata: Mapping[str, Any] | None = None,
    role_mappings: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Replace metadata and/or the (v1) role mappings ``{entity glob: [roles]}``."""
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise ValidationError("metadata must be a JSON object")
        ns.metadata_ = dict(metadata)
    if role_mappings is not None:
        wanted = normalize_bindings(role_mappings)
        ns.role_mappings.clear()
        db.flush()
        for entity, roles in sorted(wanted.items()):
            for role in sorted(roles):
                ns.role_mappings.append(orm.NamespaceRoleMapping(entity=entity, role=role))
    db.flush()


def delete_namespace(db: Session, ns: orm.Namespace) -> None:
    """Soft-delete the namespace, its environments and their builds (the worker removes files)."""
    now = orm.utcnow()
    ns.deleted_on = now
    env_ids = select(orm.Environment.id).where(orm.Environment.namespace_id == ns.id)
    db.execute(
        orm.Environment.__table__.update()
        .where(orm.Environment.namespace_id == ns.id, orm.Environment.deleted_on.is_(None))
        .values(deleted_on=now)
    )
    db.execute(
        orm.Build.__table__.update()
        .where(orm.Build.environment_id.in_(env_ids), orm.Build.deleted_on.is_(None))
        .values(deleted_on=now)
    )
    db.flush()


# Role mappings in the upstream "v2" shape (``other_namespace`` gets ``role`` on this namespace)
# are v1 rows whose entity is exactly ``<other>/*``: one table, two views of it.


def _v2_entity(other: str) -> str:
    return f"{validate_name(other, 'other_namespace')}/*"


def list_namespace_roles(db: Session, ns: orm.Namespace) -> list[dict[str, Any]]:
    out = []
    for m in ns.role_mappings:
        other, _, rest = m.entity.partition("/")
        if rest == "*" and "*" not in other:
            out.append({"id": m.id, "namespace": ns.name, "other_namespace": other, "role": m.role})
    return out


def get_namespace_role(db: Session, ns: orm.Namespace, other: str) -> dict[str, Any]:
    for row in list_namespace_roles(db, ns):
        if row["other_namespace"] == other:
            return row
    raise NotFoundError(f"failed to find role for {other!r} in namespace {ns.name!r}")


def set_namespace_role(db: Session, ns: orm.Namespace, other: str, role: str) -> None:
    entity = _v2_entity(other)
    get_namespace(db, other)  # granting to a namespace that does not exist is a typo, not a grant
    role = canonical_role(role)
    ns.role_mappings[:] = [m for m in ns.role_mappings if m.entity != entity]
    ns.role_mappings.append(orm.NamespaceRoleMapping(entity=entity, role=role))
    db.flush()


def delete_namespace_role(db: Session, ns: orm.Namespace, other: str | None = None) -> None:
    """Remove the v2-shaped mapping for ``other`` (or all of them when ``other`` is None)."""
    if other is None:
        keep = lambda m: not (m.entity.endswith("/*") and "*" not in m.entity[:-2])  # noqa: E731
    else:
        entity = _v2_entity(other)
        keep = lambda m: m.entity != entity  # noqa: E731
    ns.role_mappings[:] = [m for m in ns.role_mappings if keep(m)]
    db.flush()


# -- specifications and environments -------------------------------------------------------------


def prepare_specification(store: CondaStore, text: str | bytes | Mapping[str, Any]) -> Specification:
    """Validate user text and apply the store's policy (default/included/required packages).

    The sha256 identity is computed on the result, so two users submitting the same file under
    the same policy share one specification row.
    """
    from .schema import specification_from_dict

    if isinstance(text, Mapping):
        spec = specification_from_dict(dict(text), allowed_channels=store.allowed_channels)
    else:
        spec = parse_specification(text, allowed_channels=store.allowed_channels)
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


def _has_artifact(build_id_col: ColumnElement, artifact: BuildArtifactType) -> ColumnElement:
    return exists(
        select(1).where(orm.BuildArtifact.build_id == build_id_col, orm.BuildArtifact.artifact_type == artifact)
    )


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
    """Live environments visible to ``bindings``; status/artifact/packages apply to the current build."""
    stmt = (
        select(orm.Environment)
        .join(orm.Environment.namespace)
        .options(contains_eager(orm.Environment.namespace))
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
        stmt = stmt.where(_has_artifact(orm.Environment.current_build_id, artifact))
    if packages:
        stmt = stmt.where(*_current_build_has_packages(packages))
    return paginate(db, stmt, page, _ENV_SORT, ["namespace", "name"], orm.Environment.id)


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
        .options(contains_eager(orm.Build.environment).contains_eager(orm.Environment.namespace))
        .where(visible_clause(bindings, orm.Namespace.name, orm.Environment.name))
    )
    if status is not None:
        stmt = stmt.where(orm.Build.status == status)
    if artifact is not None:
        stmt = stmt.where(_has_artifact(orm.Build.id, artifact))
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


def mark_build_failed(db: Session, build_id: int, reason: str) -> None:
    build = db.get(orm.Build, build_id)
    if build is not None and not build.status.finished:
        build.status = BuildStatus.FAILED
        build.status_info = reason
        build.ended_on = orm.utcnow()


# -- packages and channels ----------------------------------------------------------------------


def _name_filter(search: str | None, exact: bool) -> list[ColumnElement]:
    if not search:
        return []
    if exact:
        return [orm.CondaPackage.name == search]
    pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return [orm.CondaPackage.name.like(pattern, escape="\\")]


_PKG_SORT = {"channel": orm.CondaChannel.name, "name": orm.CondaPackage.name, "version": orm.CondaPackage.version}


def list_build_packages(
    db: Session, build: orm.Build, page: Page, *, search: str | None = None, exact: bool = False,
    build_string: str | None = None,
) -> PageResult:
    """The package builds installed by ``build`` (rows are ``CondaPackageBuild`` with package+channel)."""
    link = orm.build_conda_package_build
    stmt = (
        select(orm.CondaPackageBuild)
        .join(link, link.c.conda_package_build_id == orm.CondaPackageBuild.id)
        .join(orm.CondaPackageBuild.package)
        .join(orm.CondaPackage.channel)
        .options(contains_eager(orm.CondaPackageBuild.package).contains_eager(orm.CondaPackage.channel))
        .where(link.c.build_id == build.id, *_name_filter(search, exact))
    )
    if build_string:
        stmt = stmt.where(orm.CondaPackageBuild.build == build_string)
    return paginate(db, stmt, page, _PKG_SORT, ["channel", "name"], orm.CondaPackageBuild.id)


def list_packages(
    db: Session, page: Page, *, search: str | None = None, exact: bool = False,
    distinct_on: Sequence[str] = (),
) -> PageResult:
    """Known packages; ``distinct_on`` keeps one row per (channel/name/version) combination.

    Implemented as ``id IN (SELECT min(id) ... GROUP BY ...)`` so it works on SQLite as well as
    PostgreSQL (upstream relies on Postgres' ``DISTINCT ON``).
    """
    stmt = (
        select(orm.CondaPackage)
        .join(orm.CondaPackage.channel)
        .options(contains_eager(orm.CondaPackage.channel))
        .where(*_name_filter(search, exact))
    )
    columns = {"channel": orm.CondaPackage.channel_id, "name": orm.CondaPackage.name,
               "version": orm.CondaPackage.version}
    group = [columns[c] for c in dict.fromkeys(distinct_on) if c in columns]
    if group:
        firsts = select(func.min(orm.CondaPackage.id)).where(*_name_filter(search, exact)).group_by(*group)
        stmt = stmt.where(orm.CondaPackage.id.in_(firsts))
    return paginate(db, stmt, page, _PKG_SORT, ["channel", "name", "version"], orm.CondaPackage.id)


def list_channels(db: Session, page: Page) -> PageResult:
    stmt = select(orm.CondaChannel)
    return paginate(db, stmt, page, {"name": orm.CondaChannel.name}, ["name"], orm.CondaChannel.id)


# -- usage and metrics --------------------------------------------------------------------------


def usage(db: Session, bindings: RoleBindings) -> dict[str, dict[str, int]]:
    """Per visible namespace: live environments, builds and bytes of build prefixes."""
    visible = visible_clause(bindings, orm.Namespace.name)
    out: dict[str, dict[str, int]] = {
        name: {"num_environments": 0, "num_builds": 0, "storage": 0}
        for name in db.scalars(select(orm.Namespace.name).where(orm.Namespace.deleted_on.is_(None), visible))
    }
    envs = db.execute(
        select(orm.Namespace.name, func.count(orm.Environment.id))
        .join(orm.Environment.namespace)
        .where(orm.Environment.deleted_on.is_(None), orm.Namespace.deleted_on.is_(None), visible)
        .group_by(orm.Namespace.name)
    )
    for name, n in envs:
        out[name]["num_environments"] = n
    builds = db.execute(
        select(orm.Namespace.name, func.count(orm.Build.id), func.coalesce(func.sum(orm.Build.size), 0))
        .join(orm.Build.environment)
        .join(orm.Environment.namespace)
        .where(orm.Build.deleted_on.is_(None), orm.Namespace.deleted_on.is_(None), visible)
        .group_by(orm.Namespace.name)
    )
    for name, n, size in builds:
        out[name]["num_builds"] = n
        out[name]["storage"] = int(size)
    return out


def metrics(db: Session, store: CondaStore) -> dict[str, int]:
    """Numbers for ``/metrics``: builds per status, live environments, disk of the store."""
    values = {f"build_{s.value.lower()}": 0 for s in BuildStatus}
    for status, n in db.execute(
        select(orm.Build.status, func.count()).where(orm.Build.deleted_on.is_(None)).group_by(orm.Build.status)
    ):
        values[f"build_{BuildStatus(status).value.lower()}"] = n
    values["environments"] = db.scalar(
        select(func.count()).select_from(orm.Environment).where(orm.Environment.deleted_on.is_(None))
    ) or 0
    try:
        disk = shutil.disk_usage(store.store_path)
        values.update(disk_total=disk.total, disk_free=disk.free, disk_usage=disk.used)
    except OSError:
        pass
    return values


def validate_role_bindings(raw: object) -> RoleBindings:
    """``{arn glob: [roles]}`` from a request body, validated (400 on anything odd)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError("role_bindings must be an object of 'namespace/environment' to a list of roles")
    for arn in raw:
        validate_arn_glob(arn)
    return normalize_bindings(raw)


# -- submitting builds (commit, then enqueue) ----------------------------------------------------


def submit(store: CondaStore, *, namespace: str, specification: Specification,
           description: str | None = None) -> int:
    """Register ``specification`` in ``namespace`` (created if needed), commit, then enqueue.

    Returns the new build id. Callers check permissions first. If Redis is down the queue marks
    the build FAILED and raises a 503-class error.
    """
    with store.session() as db:
        ns = create_namespace(db, namespace, exist_ok=True)
        build_id = submit_specification(db, ns, specification, description).id
    store.queue.enqueue_build(build_id)
    return build_id


def submit_dynamic_build(store: CondaStore, *, namespace: str, specification: Mapping[str, Any],
                         requested_by: str | None = None) -> int:
    """An on-demand image build (registry): validate the generated spec and submit it."""
    spec = prepare_specification(store, specification)
    return submit(store, namespace=namespace, specification=spec,
                  description=f"on-demand image requested by {requested_by or 'anonymous'}")
