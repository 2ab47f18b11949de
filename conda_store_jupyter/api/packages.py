"""Packages, channels, usage and metrics."""

from __future__ import annotations

import shutil
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, contains_eager
from sqlalchemy.sql import ColumnElement

from .. import orm
from ..app import CondaStore
from ..auth.rbac import (
    RoleBindings,
)
from ..schema import BuildStatus
from ._query import Page, PageResult, paginate, visible_clause

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
