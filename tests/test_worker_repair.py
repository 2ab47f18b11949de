"""Repair of follow-up work lost after a build reached its final state (``worker/repair.py``).

Real redis-server, real worker processes, the local channel. Each test builds for real, then
removes what a lost job or a worker killed mid-tail would have left undone, and runs a repair pass
with zero grace periods (the defaults are minutes). Waits are on conditions with deadlines.
"""

from __future__ import annotations

import subprocess
import sys

from rq.job import Job

from conda_store_jupyter import orm
from conda_store_jupyter.schema import ArtifactStatus, BuildArtifactType, BuildStatus
from conda_store_jupyter.worker.links import switch_environment_link
from conda_store_jupyter.worker.logs import log_finished, log_stream_key, publish_line
from conda_store_jupyter.worker.queue import BUILD_QUEUE, cancel_key, image_job_id
from conda_store_jupyter.worker.runner import BuildWorker
from conda_store_jupyter.worker.repair import RepairPolicy, RepairReport, repair

from .fixtures_service import (BUILD_DEADLINE, QUICK, QUICK2, SLOW, build_row, make_build, status_of, wait_for,
                               wait_in_pip_stage)
from conda_store_jupyter.worker.queue import BuildQueue

NOW = RepairPolicy(tail_grace=0, image_grace=0, purge_grace=0)
"""Everything final is old enough to repair at once."""

IMAGE_ARTIFACTS = ["LOCKFILE", "YAML", "DOCKER_MANIFEST"]


def _link(store, name: str = "hi"):
    return store.store_path / "default" / "envs" / name


def _prefix(store, build_id: int):
    return build_row(store, build_id).prefix_path(store.store_path)


def _points_at(link, prefix) -> bool:
    return link.is_symlink() and link.resolve() == prefix.resolve()


def _run_build_queue_only(env) -> None:
    """Work the build queue to empty, but not the artifacts queue (image jobs stay queued)."""
    code = ("from rq import Queue, Worker; from conda_store_jupyter.worker.tasks import load_store;"
            f"s = load_store({str(env.config)!r}); Worker([Queue({BUILD_QUEUE!r}, connection=s.redis)],"
            " connection=s.redis).work(burst=True)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=BUILD_DEADLINE)


def test_repair_restores_a_missing_or_misdirected_link(service_factory):
    env = service_factory()
    store = env.store
    first, second = make_build(store, QUICK), make_build(store, QUICK2)
    BuildQueue(store).enqueue_build(first)
    BuildQueue(store).enqueue_build(second)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    link, p1, p2 = _link(store), _prefix(store, first), _prefix(store, second)
    assert _points_at(link, p2)
    env_id = build_row(store, first).environment_id

    # A rollback whose link job was lost (the enqueue failed after the commit).
    with store.session() as db:
        db.get(orm.Environment, env_id).current_build_id = first
    assert repair(store, NOW) == RepairReport(links_fixed=[env_id])
    assert _points_at(link, p1)
    assert not repair(store, NOW)  # idempotent

    # A link removed, then one pointing at another build.
    link.unlink()
    assert repair(store, NOW).links_fixed == [env_id] and _points_at(link, p1)
    switch_environment_link(link, p2)
    assert repair(store, NOW).links_fixed == [env_id] and _points_at(link, p1)
    assert not repair(store, NOW)

    # Too fresh: a build that just completed is its own tail's to link.
    link.unlink()
    assert not repair(store, RepairPolicy(tail_grace=3600, image_grace=0, purge_grace=0))
    # The worker runs the pass by itself, in its main thread (no thread in a process that forks).
    worker = BuildWorker([BuildQueue(store).rq_queue()], connection=store.redis, store=store, interval=0.1,
                         repair_interval=0.1, repair_policy=NOW)
    worker.housekeep()
    assert _points_at(link, p1)


def test_repair_finishes_a_lost_tail_and_gets_the_image_built(service_factory):
    env = service_factory(build_artifacts=IMAGE_ARTIFACTS)
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    _run_build_queue_only(env)
    assert status_of(store, build_id)[0] == BuildStatus.COMPLETED
    env_id = build_row(store, build_id).environment_id
    link, prefix = _link(store), _prefix(store, build_id)

    # What a worker killed right after the COMPLETED commit leaves: no link switch, a live log
    # without its end marker, no image job.
    Job.fetch(image_job_id(build_id), connection=store.redis).delete()
    link.unlink()
    store.redis.delete(log_stream_key(build_id))
    publish_line(store, build_id, "the last line before the worker died")
    assert not log_finished(store, build_id)

    report = repair(store, NOW)
    assert report == RepairReport(links_fixed=[env_id], tails_finished=[build_id])  # the tail queued the image
    assert _points_at(link, prefix) and log_finished(store, build_id)
    assert Job.exists(image_job_id(build_id), connection=store.redis)
    assert not repair(store, NOW)

    # The image job itself lost (Redis restarted): queued again, but only after its grace.
    Job.fetch(image_job_id(build_id), connection=store.redis).delete()
    assert build_row(store, build_id).image_status is ArtifactStatus.PENDING  # queued, then lost
    assert not repair(store, RepairPolicy(tail_grace=0, image_grace=3600, purge_grace=0))
    assert repair(store, NOW) == RepairReport(images_queued=[build_id])
    assert not repair(store, NOW)  # claimed, and the job exists

    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)

    def image():
        with store.session() as db:
            return db.get(orm.Build, build_id).artifact(BuildArtifactType.DOCKER_MANIFEST) is not None

    wait_for(image, BUILD_DEADLINE, "the DOCKER_MANIFEST artifact")
    assert status_of(store, build_id) == (BuildStatus.COMPLETED, None)
    assert build_row(store, build_id).image_status is ArtifactStatus.READY
    store.redis.flushdb()  # no job record, no claims: only the database says "done" now
    assert not repair(store, NOW)


def test_repair_purges_a_deleted_build_whose_delete_job_was_lost(service_factory):
    env = service_factory()
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    keys = {a.artifact_type: a.key for a in build_row(store, build_id).artifacts}
    prefix, link = _prefix(store, build_id), _link(store)
    assert prefix.is_dir() and _points_at(link, prefix)

    with store.session() as db:  # soft-deleted; its delete job never reached the queue
        db.get(orm.Build, build_id).deleted_on = orm.utcnow()
    assert not repair(store, RepairPolicy(tail_grace=0, image_grace=0, purge_grace=3600))  # job may still come
    assert repair(store, NOW) == RepairReport(purged=[build_id])

    assert not prefix.exists() and not link.is_symlink()
    assert not store.storage.exists(keys[BuildArtifactType.CONDA_PACK])
    for kind in (BuildArtifactType.LOGS, BuildArtifactType.LOCKFILE, BuildArtifactType.YAML):
        assert store.storage.exists(keys[kind])
    assert {a.artifact_type for a in build_row(store, build_id).artifacts} == {
        BuildArtifactType.LOGS, BuildArtifactType.LOCKFILE, BuildArtifactType.YAML}
    store.redis.flushdb()  # without its claim, too
    assert not repair(store, NOW)


def test_repair_never_touches_queued_or_building_builds(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    building = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(building)
    env.start_worker("--reconcile-interval", "0")
    wait_in_pip_stage(store, building, env)
    wait_for(lambda: hanging_index.open > 0, 60, "uv to connect to the pip index")
    queued = make_build(store, QUICK)  # the only worker is busy: it stays QUEUED
    BuildQueue(store).enqueue_build(queued)
    prefix = _prefix(store, building)
    assert prefix.is_dir()
    with store.session() as db:  # both soft-deleted long ago, their delete jobs lost
        for build_id in (building, queued):
            db.get(orm.Build, build_id).deleted_on = orm.utcnow()

    assert not repair(store, NOW)
    assert status_of(store, building)[0] == BuildStatus.BUILDING
    assert status_of(store, queued)[0] == BuildStatus.QUEUED
    assert prefix.is_dir() and hanging_index.open > 0
    assert not store.redis.exists(cancel_key(building))
    assert not log_finished(store, building)


def test_concurrent_passes_do_each_repair_once(service_factory):
    """Many workers run the pass at the same time: each build is purged / has its tail redone once."""
    from concurrent.futures import ThreadPoolExecutor

    env = service_factory()
    store = env.store
    first, second = make_build(store, QUICK), make_build(store, QUICK2)
    BuildQueue(store).enqueue_build(first)
    BuildQueue(store).enqueue_build(second)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    link, p1, p2 = _link(store), _prefix(store, first), _prefix(store, second)
    with store.session() as db:  # the old build deleted, its job lost ...
        db.get(orm.Build, first).deleted_on = orm.utcnow()
    link.unlink()  # ... and the new one's tail lost
    store.redis.delete(log_stream_key(second))
    publish_line(store, second, "the last line before the worker died")

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: repair(store, NOW), range(4)))
    assert sorted(b for r in reports for b in r.purged) == [first]
    assert sorted(b for r in reports for b in r.tails_finished) == [second]
    assert not p1.exists() and _points_at(link, p2) and log_finished(store, second)
    assert not repair(store, NOW)
