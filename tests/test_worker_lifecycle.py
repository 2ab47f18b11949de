"""``worker/lifecycle.py``, the one owner of build state: short write transactions after the uploads,
artifact rows that cannot be duplicated, and the image's own state column.

Races between whole processes are in ``test_worker_races.py``; these tests drive the functions
directly against real SQLite/PostgreSQL databases and a real redis-server.
"""

from __future__ import annotations

import sqlite3

import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.schema import ArtifactStatus, BuildArtifactType, BuildStatus
from conda_store_jupyter.server import serialize
from conda_store_jupyter.server.registry_manifests import image_failure
from conda_store_jupyter.storage.base import blob_key
from conda_store_jupyter.worker import lifecycle
from conda_store_jupyter.worker.logs import stored_or_live_log
from conda_store_jupyter.worker.record import record_artifacts
from conda_store_jupyter.worker.queue import BuildQueue

from .fixtures_service import QUICK, build_row, completed_build, make_build, status_of

DIGEST = "sha256:" + "ab" * 32


def _write_lock_free(database_url: str) -> bool:
    """Can another connection take SQLite's write lock right now (within 0.5 s)?"""
    con = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=0.5)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.rollback()
        return True
    except sqlite3.OperationalError:  # "database is locked"
        return False
    finally:
        con.close()


@pytest.mark.parametrize("ending", ["complete", "fail", "end"])
def test_uploads_happen_outside_write_transactions(service_factory, tmp_path, monkeypatch, ending):
    """On SQLite a write transaction holds the database's only write lock: an upload inside one
    would stall every other writer (API, other workers) for the length of the upload."""
    store = service_factory().store
    build_id = make_build(store, QUICK)
    assert lifecycle.claim(store, build_id)
    probes: list[bool] = []
    storage = store.storage
    put_file, put_bytes = storage.put_file, storage.put_bytes

    def probing_put_file(key, path, **kw):
        probes.append(_write_lock_free(store.database_url))
        return put_file(key, path, **kw)

    def probing_put_bytes(key, data, **kw):
        probes.append(_write_lock_free(store.database_url))
        return put_bytes(key, data, **kw)

    monkeypatch.setattr(storage, "put_file", probing_put_file)
    monkeypatch.setattr(storage, "put_bytes", probing_put_bytes)
    (tmp_path / "build.log").write_text("-- solve\nBUILD COMPLETED in 0.1 s\n")
    (tmp_path / "conda-lock.yml").write_text("version: 1\n")
    prefix = build_row(store, build_id).prefix_path(store.store_path)
    prefix.mkdir(parents=True)
    if ending == "complete":
        assert lifecycle.complete(store, build_id, lifecycle.BuildResult(prefix=prefix, size_bytes=1,
                                                                         log=tmp_path / "build.log"))
    elif ending == "fail":
        assert lifecycle.fail(store, build_id, "no", log_file=tmp_path / "build.log",
                              lockfile=tmp_path / "conda-lock.yml")
    else:
        assert lifecycle.end(store, build_id, (BuildStatus.BUILDING,), BuildStatus.CANCELED, "canceled by user",
                             body="-- solve\n")
    assert probes and all(probes), probes
    assert status_of(store, build_id)[0] == {"complete": BuildStatus.COMPLETED, "fail": BuildStatus.FAILED,
                                             "end": BuildStatus.CANCELED}[ending]
    assert stored_or_live_log(store, build_id).startswith("-- solve\n")


def test_artifact_rows_are_never_duplicated(database_url, tmp_path):
    store = CondaStore(store_directory=str(tmp_path), database_url=database_url)
    try:
        with store.session() as db:
            env = orm.Environment(namespace=orm.Namespace(name="alice"), name="e")
            build = orm.Build(specification=orm.Specification(name="e", spec={}, sha256="e" * 64), environment=env)
            db.add(build)
            db.flush()
            build_id = build.id
            assert build.artifacts == []
            record_artifacts(db, build_id, {BuildArtifactType.LOGS: "logs/first.log"})
            assert [a.key for a in build.artifacts] == ["logs/first.log"]  # the loaded collection sees it
        with store.session() as db:  # first writer wins ...
            record_artifacts(db, build_id, {BuildArtifactType.LOGS: "logs/second.log",
                                            BuildArtifactType.DOCKER_MANIFEST: blob_key(DIGEST)})
        with store.session() as db:
            record_artifacts(db, build_id, {BuildArtifactType.DOCKER_MANIFEST: blob_key("sha256:" + "cd" * 32)})
        with store.session() as db:  # ... unless it owns the row (the winner of a final state)
            record_artifacts(db, build_id, {BuildArtifactType.LOGS: "logs/third.log"}, replace=True)
        with store.session() as db:
            rows = sorted((a.artifact_type.value, a.key) for a in db.get(orm.Build, build_id).artifacts)
        assert rows == [("DOCKER_MANIFEST", blob_key(DIGEST)), ("LOGS", "logs/third.log")]
    finally:
        store.dispose()


def test_image_status_is_its_own_column(service_factory):
    store = service_factory().store
    build_id = completed_build(store, "imgenv", ["python"])

    def state():
        with store.session() as db:
            build = db.get(orm.Build, build_id)
            _ = build.artifacts, build.environment.namespace, build.specification
            return build

    assert state().image_status is None and serialize.build(state())["image_status"] is None
    assert lifecycle.image_queued(store, build_id) and state().image_status is ArtifactStatus.PENDING
    assert not lifecycle.image_queued(store, build_id)  # queued once
    assert image_failure(state()) is None  # the image may still come

    assert lifecycle.image_failed(store, build_id, "the base image was not found")
    build = state()
    assert (build.status, build.image_status) == (BuildStatus.COMPLETED, ArtifactStatus.FAILED)
    assert image_failure(build) == f"build {build_id} has no image: the base image was not found"
    assert not lifecycle.image_queued(store, build_id)  # a finished image job's outcome stays

    assert lifecycle.image_ready(store, build_id, blob_key(DIGEST))  # a retry succeeded
    build = state()
    assert build.image_status is ArtifactStatus.READY and build.status_info is None
    assert build.artifact(BuildArtifactType.DOCKER_MANIFEST).key == blob_key(DIGEST)
    assert serialize.build(build, full=True)["image_status"] == "READY"
    assert not lifecycle.image_failed(store, build_id, "a late failure")  # an image exists: stays READY
    assert state().image_status is ArtifactStatus.READY and image_failure(state()) is None

    with store.session() as db:
        db.get(orm.Build, build_id).deleted_on = orm.utcnow()
    assert not lifecycle.image_ready(store, build_id, blob_key("sha256:" + "cd" * 32))


def test_image_state_only_for_completed_builds(service_factory):
    store = service_factory().store
    build_id = make_build(store, QUICK)
    assert not lifecycle.image_queued(store, build_id)
    assert not lifecycle.image_failed(store, build_id, "no")
    assert build_row(store, build_id).image_status is None


def test_a_build_that_cannot_be_queued_fails_with_its_log(service_factory):
    from conda_store_jupyter.worker.queue import QueueUnavailableError

    from .processes import free_port

    store = service_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0").store
    build_id = make_build(store, QUICK)
    with pytest.raises(QueueUnavailableError):
        BuildQueue(store).enqueue_build(build_id)
    status, info = status_of(store, build_id)
    assert status == BuildStatus.FAILED and info.startswith("the build queue (Redis) is not reachable")
    assert stored_or_live_log(store, build_id) == f"BUILD FAILED: {info}\n"
