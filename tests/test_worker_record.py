"""The record step stores packages once and links them to builds (SQLite and PostgreSQL)."""

from __future__ import annotations

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.worker.record import record_packages
from conda_store_jupyter.builder.records import InstalledPackage


def _pkg(name, version="1.0", build="h0", channel="file:///srv/ch", subdir="linux-64"):
    return InstalledPackage(name=name, version=version, build=build, build_number=0, channel=channel,
                            subdir=subdir, url=f"{channel}/{subdir}/{name}-{version}-{build}.conda",
                            fn=f"{name}-{version}-{build}.conda", sha256="d" * 64, depends=("python",),
                            license="MIT", summary=f"the {name} package")


def test_record_packages_dedupes_across_builds(database_url, tmp_path):
    store = CondaStore(store_directory=str(tmp_path), database_url=database_url)
    try:
        with store.session() as db:
            ns = orm.Namespace(name="alice")
            spec = orm.Specification(name="e", spec={}, sha256="e" * 64)
            env = orm.Environment(namespace=ns, name="e")
            b1, b2 = orm.Build(specification=spec, environment=env), orm.Build(specification=spec, environment=env)
            db.add_all([b1, b2])
            db.flush()
            assert record_packages(db, b1, [_pkg("six", subdir="noarch"), _pkg("hello")]) == 2
            assert record_packages(db, b2, [_pkg("six", subdir="noarch"), _pkg("hello", "2.0")]) == 2
        with store.session() as db:
            assert db.query(orm.CondaChannel).count() == 1
            assert db.query(orm.CondaPackage).count() == 3  # six 1.0, hello 1.0, hello 2.0
            assert db.query(orm.CondaPackageBuild).count() == 3
            b2 = db.get(orm.Build, b2.id)
            assert sorted((p.package.name, p.package.version) for p in b2.package_builds) == [
                ("hello", "2.0"), ("six", "1.0")]
            assert b2.package_builds[0].package.summary.startswith("the ")
    finally:
        store.dispose()
