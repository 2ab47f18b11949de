"""Environments as images: the image job (worker side) and the Docker v2 registry (server side).

Everything is real: prefixes are installed by rattler from the local test channel, images are pulled
with Debian's skopeo and unpacked with umoci (which re-hashes every layer against its diff_id), and
the end-to-end tests run ``conda-store-server`` with real Redis and real ``conda-store-worker``
processes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.schema import BuildArtifactType, BuildStatus
from conda_store_jupyter.storage.base import artifact_key, blob_key
from conda_store_jupyter.worker.images import IMAGE_FAILED_PREFIX, image_for_build

from .test_image import make_prefix

UMOCI = shutil.which("umoci")
SKOPEO = shutil.which("skopeo")


# -- the image job, without a queue ------------------------------------------------------------------

def _completed_build(store: CondaStore, env_name: str, specs: list[str]) -> int:
    """A COMPLETED build row with a stored log, as the build job leaves it (prefix installed by the caller)."""
    spec = {"name": env_name, "channels": [], "dependencies": specs}
    sha = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    with store.session() as db:
        ns = orm.Namespace(name="team", metadata_={})
        env = orm.Environment(namespace=ns, name=env_name)
        build = orm.Build(specification=orm.Specification(name=env_name, spec=spec, sha256=sha),
                          environment=env, status=BuildStatus.COMPLETED, ended_on=dt.datetime(2026, 1, 1))
        db.add(build)
        db.flush()
        env.current_build_id = build.id
        key = artifact_key(BuildArtifactType.LOGS, build.build_key)
        store.storage.put_bytes(key, b"BUILD COMPLETED in 1.0 s\n")
        db.add(orm.BuildArtifact(build=build, artifact_type=BuildArtifactType.LOGS, key=key))
        return build.id


def _log(store: CondaStore, build_id: int) -> str:
    with store.session() as db:
        key = db.get(orm.Build, build_id).artifact(BuildArtifactType.LOGS).key
    return store.storage.get_bytes(key).decode()


@pytest.fixture
def store(tmp_path, package_cache_dir) -> CondaStore:
    store = CondaStore(store_directory=str(tmp_path / "store"), package_cache_directory=str(package_cache_dir))
    yield store
    store.dispose()


def test_image_job_records_manifest_and_logs_layers(store, local_channel, package_cache_dir) -> None:
    build_id = _completed_build(store, "sixenv", ["python", "six"])
    with store.session() as db:
        prefix = db.get(orm.Build, build_id).prefix_path(store.store_path)
    make_prefix(local_channel, package_cache_dir, prefix, ["python", "six"])

    digest = image_for_build(store, build_id)

    assert digest is not None and digest.startswith("sha256:")
    with store.session() as db:
        build = db.get(orm.Build, build_id)
        assert build.status is BuildStatus.COMPLETED and build.status_info is None
        assert build.artifact(BuildArtifactType.DOCKER_MANIFEST).key == blob_key(digest)
    manifest = store.storage.get_bytes(blob_key(digest))
    assert hashlib.sha256(manifest).hexdigest() == digest.split(":")[1]
    text = _log(store, build_id)
    assert text.startswith("BUILD COMPLETED")  # appended to, not replaced
    assert f"image {digest}:" in text and "== docker image:" in text
    assert "python-" in text and "six-" in text  # one line per package layer
    # Idempotent: a second run finds the artifact and builds nothing.
    assert image_for_build(store, build_id) == digest
    assert _log(store, build_id).count("-- docker image") == 1
    assert not any((store.store_path / ".image-work").iterdir())  # scratch space cleaned


def test_image_job_failure_leaves_build_completed_with_reason(store) -> None:
    build_id = _completed_build(store, "gone", ["python"])  # its prefix was never installed

    assert image_for_build(store, build_id) is None

    with store.session() as db:
        build = db.get(orm.Build, build_id)
        assert build.status is BuildStatus.COMPLETED
        assert build.artifact(BuildArtifactType.DOCKER_MANIFEST) is None
        assert build.status_info.startswith(IMAGE_FAILED_PREFIX) and "prefix" in build.status_info
    assert "IMAGE FAILED: the build prefix" in _log(store, build_id)


def test_image_job_skips_unfinished_builds(store) -> None:
    build_id = _completed_build(store, "queued", ["python"])
    with store.session() as db:
        db.get(orm.Build, build_id).status = BuildStatus.FAILED
    assert image_for_build(store, build_id) is None
    assert "docker image" not in _log(store, build_id)
