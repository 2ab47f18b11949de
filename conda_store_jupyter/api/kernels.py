"""What a Jupyter server needs to offer every readable environment as a kernel, in ONE query.

A user's server lists kernels often (the Lab panel polls, the kernelspec list must follow a
build within seconds), so this is one SQL statement for all environments the caller may read,
whatever their number: the environment, its namespace, the build (the current one, or a pinned
one), its specification hash, whether it has a conda-pack archive, its lockfile's storage key
(correlated scalar subqueries) and the *kernel packages* among its packages (an outer join on a
subquery already filtered to the few names below, so an environment contributes one row per
kernel package it has, usually one).

Kernel packages are detected from the build's package list, never added: an R environment with
``r-irkernel`` is an R kernel, and nothing here suggests giving it ``ipykernel`` (the duplicate
kernel users of other tools complain about). When an environment has several, the first in
:data:`KERNEL_PACKAGES` wins: a dedicated language kernel (R, C++, …) is a deliberate choice,
while ``ipykernel`` is often pulled in as a dependency (of ``jupyter``, ``rpy2`` helpers, …).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from .. import orm
from ..auth.rbac import RoleBindings
from ..naming import build_key as format_build_key
from ..schema import BuildArtifactType, BuildStatus
from ._query import has_artifact, visible_clause

KERNEL_PACKAGES: dict[str, str] = {
    "r-irkernel": "R",
    "xeus-cling": "C++",
    "xeus-r": "R",
    "xeus-lua": "Lua",
    "xeus-python": "python",
    "ipykernel": "python",
}
"""Conda package name -> the language of the kernel it provides, in order of preference."""


@dataclass(frozen=True)
class KernelPackage:
    name: str
    version: str
    build: str
    language: str


@dataclass(frozen=True)
class KernelBuild:
    """A build as a kernel launcher needs it: where it lives and how to recognise it."""

    id: int
    environment_id: int
    status: BuildStatus
    scheduled_on: dt.datetime
    deleted: bool
    specification_sha256: str
    build_key: str
    prefix: Path
    lockfile_key: str | None
    has_archive: bool
    packages: tuple[KernelPackage, ...] = ()

    @property
    def kernel_package(self) -> KernelPackage | None:
        """The preferred kernel package (see :data:`KERNEL_PACKAGES`), if any."""
        ranked = sorted(self.packages, key=lambda p: list(KERNEL_PACKAGES).index(p.name))
        return ranked[0] if ranked else None


@dataclass
class KernelEnvironment:
    namespace: str
    environment: str
    environment_id: int
    current_build_id: int | None
    build: KernelBuild | None = None
    packages: list[KernelPackage] = field(default_factory=list)


def list_kernel_environments(
    db: Session,
    bindings: RoleBindings,
    store_path: Path,
    *,
    namespace: str | None = None,
    environment: str | None = None,
    build_id: int | None = None,
) -> list[KernelEnvironment]:
    """Every live environment visible to ``bindings`` (optionally one), with its current build or,
    given ``build_id``, that build if it belongs to the environment (else ``build`` is None)."""
    link = orm.build_conda_package_build
    packages = (
        select(link.c.build_id, orm.CondaPackage.name, orm.CondaPackage.version, orm.CondaPackageBuild.build)
        .join(orm.CondaPackageBuild, orm.CondaPackageBuild.id == link.c.conda_package_build_id)
        .join(orm.CondaPackage, orm.CondaPackage.id == orm.CondaPackageBuild.package_id)
        .where(orm.CondaPackage.name.in_(list(KERNEL_PACKAGES)))
        .subquery()
    )
    lockfile_key = (
        select(orm.BuildArtifact.key)
        .where(orm.BuildArtifact.build_id == orm.Build.id,
               orm.BuildArtifact.artifact_type == BuildArtifactType.LOCKFILE)
        .correlate(orm.Build)
        .scalar_subquery()
    )
    wanted = orm.Environment.current_build_id if build_id is None else build_id
    stmt = (
        select(
            orm.Namespace.name, orm.Namespace.id, orm.Environment.name, orm.Environment.id,
            orm.Environment.current_build_id,
            orm.Build.id, orm.Build.status, orm.Build.scheduled_on, orm.Build.deleted_on,
            orm.Specification.sha256, lockfile_key, has_artifact(orm.Build.id, BuildArtifactType.CONDA_PACK),
            packages.c.name, packages.c.version, packages.c.build,
        )
        .select_from(orm.Environment)
        .join(orm.Namespace, orm.Namespace.id == orm.Environment.namespace_id)
        .outerjoin(orm.Build, and_(orm.Build.id == wanted, orm.Build.environment_id == orm.Environment.id))
        .outerjoin(orm.Specification, orm.Specification.id == orm.Build.specification_id)
        .outerjoin(packages, packages.c.build_id == orm.Build.id)
        .where(orm.Environment.deleted_on.is_(None), orm.Namespace.deleted_on.is_(None),
               visible_clause(bindings, orm.Namespace.name, orm.Environment.name))
        .order_by(orm.Namespace.name, orm.Environment.name)
    )
    if namespace is not None:
        stmt = stmt.where(orm.Namespace.name == namespace)
    if environment is not None:
        stmt = stmt.where(orm.Environment.name == environment)

    out: dict[int, KernelEnvironment] = {}
    for (ns_name, ns_id, env_name, env_id, current_id, b_id, status, scheduled, deleted, sha, lock_key,
         has_pack, pkg_name, pkg_version, pkg_build) in db.execute(stmt):
        entry = out.get(env_id)
        if entry is None:
            entry = out[env_id] = KernelEnvironment(ns_name, env_name, env_id, current_id)
            if b_id is not None:
                key = format_build_key(sha, scheduled, b_id, env_name)
                entry.build = KernelBuild(
                    id=b_id, environment_id=env_id, status=BuildStatus(status), scheduled_on=scheduled,
                    deleted=deleted is not None, specification_sha256=sha, build_key=key,
                    prefix=orm.build_prefix_path(store_path, ns_id, key), lockfile_key=lock_key,
                    has_archive=bool(has_pack),
                )
        if pkg_name is not None:
            entry.packages.append(KernelPackage(pkg_name, pkg_version, pkg_build, KERNEL_PACKAGES[pkg_name]))
    result = list(out.values())
    for entry in result:
        if entry.build is not None and entry.packages:
            entry.build = _with_packages(entry.build, tuple(entry.packages))
    return result


def _with_packages(build: KernelBuild, packages: tuple[KernelPackage, ...]) -> KernelBuild:
    from dataclasses import replace

    return replace(build, packages=packages)


__all__ = ["KERNEL_PACKAGES", "KernelBuild", "KernelEnvironment", "KernelPackage", "list_kernel_environments"]
