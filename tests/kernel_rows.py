"""Database rows for kernel tests: builds as the worker leaves them, with chosen package names."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import select

from conda_store_jupyter import orm
from conda_store_jupyter.schema import BuildArtifactType, BuildStatus
from conda_store_jupyter.storage.base import artifact_key


def add_build(store, namespace: str, name: str, packages: list[str], *, status=BuildStatus.COMPLETED,
              current: bool = True, lockfile: bytes | None = b"lock\n", archive: bool = False) -> int:
    """A build row as the worker leaves it, with conda package rows named ``packages``."""
    with store.session() as db:
        ns = db.scalar(select(orm.Namespace).filter_by(name=namespace))
        if ns is None:
            ns = orm.Namespace(name=namespace, metadata_={})
            db.add(ns)
            db.flush()
        env = db.scalar(select(orm.Environment).filter_by(namespace_id=ns.id, name=name))
        if env is None:
            env = orm.Environment(namespace=ns, name=name)
            db.add(env)
        text = f"{name}{packages}{dt.datetime.now().timestamp()}"
        spec = orm.Specification(name=name, spec={"name": name, "dependencies": packages},
                                 sha256=hashlib.sha256(text.encode()).hexdigest())
        build = orm.Build(specification=spec, environment=env, status=status, ended_on=dt.datetime(2026, 1, 1))
        db.add(build)
        db.flush()
        channel = db.scalar(select(orm.CondaChannel).filter_by(name="test"))
        if channel is None:
            channel = orm.CondaChannel(name="test")
            db.add(channel)
        for i, pkg in enumerate(packages):
            row = db.scalar(select(orm.CondaPackage).filter_by(name=pkg, version="1.0"))
            if row is None:
                row = orm.CondaPackage(channel=channel, name=pkg, version="1.0")
                db.add(row)
            build.package_builds.append(orm.CondaPackageBuild(package=row, build=f"h{build.id}_{i}", subdir="linux-64"))
        db.flush()
        if current:
            env.current_build_id = build.id
        if lockfile is not None:
            key = artifact_key(BuildArtifactType.LOCKFILE, build.build_key)
            store.storage.put_bytes(key, lockfile)
            db.add(orm.BuildArtifact(build=build, artifact_type=BuildArtifactType.LOCKFILE, key=key))
        if archive:
            db.add(orm.BuildArtifact(build=build, artifact_type=BuildArtifactType.CONDA_PACK, key="x.tar.gz"))
        return build.id
