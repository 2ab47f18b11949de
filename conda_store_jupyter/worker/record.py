"""What the worker records about a build in the database: its conda packages and artifact rows.

Channels, packages and package builds are shared rows (deduplicated by their unique keys), so the
package listing API and "which builds contain X" queries stay cheap however many builds exist.
Several workers may record the same new package at once; a unique-key race is resolved by
re-reading the row the other worker inserted.

Artifact rows are one per (build, type) (``uq_build_artifact_type``); :func:`record_artifacts`
inserts them with ``ON CONFLICT`` so two writers can never duplicate one, whatever their timing.
Every function here works in the caller's open session: the caller (``worker.lifecycle``) puts
them in the same short transaction as the state change they belong to.
"""

from __future__ import annotations

from typing import Iterable, Mapping, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from .. import orm
from ..builder.records import InstalledPackage
from ..schema import ArtifactStatus, BuildArtifactType

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


def record_artifacts(db: Session, build_id: int, keys: Mapping[BuildArtifactType, str], *,
                     replace: bool = False, status: ArtifactStatus = ArtifactStatus.READY) -> None:
    """Insert one artifact row per ``keys`` entry (in state ``status``); an existing row of that type
    is kept (``replace=False``: the first writer wins, e.g. two image jobs) or pointed at the new key
    and state (``replace=True``: the writer that just won the build's final state owns its log)."""
    if not keys:
        return
    rows = [{"build_id": int(build_id), "artifact_type": BuildArtifactType(kind), "key": key,
             "status": status, "reason": None}
            for kind, key in keys.items()]
    table = orm.BuildArtifact.__table__
    dialect = db.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table).values(rows)
        conflict = [table.c.build_id, table.c.artifact_type]
        stmt = (stmt.on_conflict_do_update(index_elements=conflict, set_={
                    "key": stmt.excluded.key, "status": stmt.excluded.status, "reason": stmt.excluded.reason})
                if replace else stmt.on_conflict_do_nothing(index_elements=conflict))
        db.execute(stmt)
    else:  # any other database: one savepoint per row, the unique constraint decides
        for row in rows:
            try:
                with db.begin_nested():
                    db.execute(table.insert().values(row))
            except IntegrityError:
                if replace:
                    db.execute(table.update().where(table.c.build_id == row["build_id"],
                                                    table.c.artifact_type == row["artifact_type"])
                               .values(key=row["key"], status=row["status"], reason=None))
    expire_artifacts(db, build_id)


def expire_artifacts(db: Session, build_id: int) -> None:
    """A loaded Build.artifacts collection must see the rows written behind the ORM's back."""
    build = db.identity_map.get(identity_key(orm.Build, int(build_id)))
    if build is not None:
        db.expire(build, ["artifacts"])
