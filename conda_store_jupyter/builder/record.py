"""Pipeline step: record a build's conda packages in the database.

Channels, packages and package builds are shared rows (deduplicated by their unique keys), so the
package listing API and "which builds contain X" queries stay cheap however many builds exist.
Several workers may record the same new package at once; a unique-key race is resolved by
re-reading the row the other worker inserted.
"""

from __future__ import annotations

from typing import Iterable, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import orm
from .records import InstalledPackage

T = TypeVar("T")


def _get_or_create(db: Session, model: type[T], lookup: dict, defaults: dict | None = None) -> T:
    row = db.scalars(select(model).filter_by(**lookup)).one_or_none()
    if row is not None:
        return row
    try:
        with db.begin_nested():  # savepoint: a lost race must not roll back the caller's work
            row = model(**lookup, **(defaults or {}))
            db.add(row)
        return row
    except IntegrityError:
        return db.scalars(select(model).filter_by(**lookup)).one()


def record_packages(db: Session, build: orm.Build, packages: Iterable[InstalledPackage]) -> int:
    """Link ``build`` to one CondaPackageBuild row per installed package; return how many."""
    channels: dict[str, orm.CondaChannel] = {}
    linked: list[orm.CondaPackageBuild] = []
    for pkg in packages:
        channel = channels.get(pkg.channel)
        if channel is None:
            channel = channels[pkg.channel] = _get_or_create(db, orm.CondaChannel, {"name": pkg.channel})
            channel.last_update = orm.utcnow()
        package = _get_or_create(
            db,
            orm.CondaPackage,
            {"channel_id": channel.id, "name": pkg.name, "version": pkg.version},
            {"license": pkg.license, "summary": pkg.summary or None},
        )
        if pkg.summary and not package.summary:
            package.summary = pkg.summary
        package_build = _get_or_create(
            db,
            orm.CondaPackageBuild,
            {"package_id": package.id, "subdir": pkg.subdir, "build": pkg.build},
            {
                "build_number": pkg.build_number,
                "sha256": pkg.sha256,
                "md5": pkg.md5,
                "size": pkg.size or 0,
                "depends": list(pkg.depends),
                "constrains": list(pkg.constrains),
                "timestamp": pkg.timestamp,
                "url": pkg.url,
            },
        )
        linked.append(package_build)
    build.package_builds = linked
    db.flush()
    return len(linked)
