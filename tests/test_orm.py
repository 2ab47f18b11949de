"""The database layer on SQLite and PostgreSQL: migrations, models, constraints."""

from __future__ import annotations

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.schema import BuildArtifactType, BuildStatus


@pytest.fixture
def store(database_url, tmp_path):
    s = CondaStore(store_directory=str(tmp_path / "store"), database_url=database_url)
    yield s
    s.dispose()


def _env(db, ns="alice", name="demo", sha="a" * 64):
    namespace = db.query(orm.Namespace).filter_by(name=ns).one_or_none() or orm.Namespace(name=ns)
    spec = orm.Specification(name=name, spec={"name": name}, sha256=sha)
    env = orm.Environment(namespace=namespace, name=name)
    db.add_all([namespace, spec, env])
    db.flush()
    return env, spec


def test_migrations_match_models(store):
    """Every model column/constraint exists in the migrated schema (no drift between the two)."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), orm.Base.metadata)
    # Flatten alembic's nested diff entries; type cosmetics differ per dialect, the rest must not.
    flat = [d for entry in diff for d in (entry if isinstance(entry, list) else [entry])]
    structural = [d for d in flat if d[0] in ("add_table", "remove_table", "add_column", "remove_column",
                                              "add_index", "remove_index", "modify_nullable")]
    assert structural == []
    tables = set(sqlalchemy.inspect(store.engine).get_table_names())
    assert {"namespace", "environment", "build", "build_artifact", "conda_package_build",
            "build_conda_package_build", "alembic_version"} <= tables


def test_upgrade_is_idempotent_and_downgrade_works(store):
    from alembic import command

    engine = store.engine  # already upgraded once
    orm.upgrade(engine)  # again: no error
    with engine.begin() as conn:
        cfg = orm.alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert "build" not in sqlalchemy.inspect(engine).get_table_names()
    orm.upgrade(engine)
    assert "build" in sqlalchemy.inspect(engine).get_table_names()


def test_build_lifecycle_and_current_build_cycle(store):
    with store.session() as db:
        env, spec = _env(db)
        b1 = orm.Build(specification=spec, environment=env)
        db.add(b1)
        db.flush()
        env.current_build = b1
        b1.status = BuildStatus.COMPLETED
        b1.artifacts.append(orm.BuildArtifact(artifact_type=BuildArtifactType.LOCKFILE, key="lockfile/x.yml"))
    with store.session() as db:
        env = db.query(orm.Environment).one()
        assert env.current_build.status is BuildStatus.COMPLETED
        assert env.current_build.artifact(BuildArtifactType.LOCKFILE).key == "lockfile/x.yml"
        key = env.current_build.build_key
        assert key.startswith("aaaaaaaa-") and key.endswith(f"-{env.current_build.id}-demo")
        assert env.current_build.prefix_path(store.store_path).name == key


def test_unique_environment_per_namespace(store):
    with store.session() as db:
        _env(db)
    with pytest.raises(IntegrityError):
        with store.session() as db:
            ns = db.query(orm.Namespace).one()
            db.add(orm.Environment(namespace=ns, name="demo"))


def test_specification_sha256_is_unique(store):
    with store.session() as db:
        _env(db, name="one", sha="b" * 64)
    with pytest.raises(IntegrityError):
        with store.session() as db:
            db.add(orm.Specification(name="two", spec={}, sha256="b" * 64))


def test_packages_link_to_builds(store):
    with store.session() as db:
        env, spec = _env(db)
        build = orm.Build(specification=spec, environment=env)
        channel = orm.CondaChannel(name="file:///srv/channel")
        pkg = orm.CondaPackage(channel=channel, name="six", version="1.17.0", license="MIT")
        pb = orm.CondaPackageBuild(package=pkg, build="py_0", subdir="noarch", sha256="c" * 64,
                                   depends=["python"], constrains=[])
        build.package_builds.append(pb)
        db.add(build)
    with store.session() as db:
        build = db.query(orm.Build).one()
        assert [(p.package.name, p.build) for p in build.package_builds] == [("six", "py_0")]
        db.delete(build)  # deleting a build drops the association rows, not the packages
    with store.session() as db:
        assert db.query(orm.CondaPackageBuild).count() == 1
        assert db.execute(sqlalchemy.select(orm.build_conda_package_build)).all() == []


def test_concurrent_sqlite_migrations_do_not_collide(tmp_path):
    """Server and embedded workers open a fresh SQLite database at the same moment."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    code = ("import sys; from conda_store_jupyter.orm import create_engine_for, upgrade; "
            "upgrade(create_engine_for(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), [err[-500:] for rc, err in results if rc]
