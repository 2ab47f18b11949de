"""Races between the worker's jobs and the API, with a real redis-server and real worker processes.

Each test sets up the losing interleaving deterministically (the API acts before a worker is
started, or a state is forced in the database), then waits on conditions with deadlines.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

import pytest
from rq.job import Job
from sqlalchemy import select

from conda_store_jupyter import api, orm
from conda_store_jupyter.schema import BuildArtifactType, BuildStatus, parse_specification
from conda_store_jupyter.worker.logs import read_log, stored_or_live_log
from conda_store_jupyter.worker import lifecycle
from conda_store_jupyter.worker.queue import cancel_key, heartbeat_key, image_job_id
from conda_store_jupyter.worker.reconcile import reconcile
from conda_store_jupyter.worker.tasks import HEARTBEAT_INTERVAL
from conda_store_jupyter.worker.zygote import CHILD_NAME

from .fixtures_service import (BUILD_DEADLINE, QUICK, SLOW, build_row, descendants, make_build, status_of, wait_for,
                               wait_in_pip_stage, wait_status)
from conda_store_jupyter.worker.queue import BuildQueue


def _redis_now(store) -> float:
    seconds, micros = store.redis.time()
    return seconds + micros / 1e6


def _namespace(db, name: str = "default") -> orm.Namespace:
    return db.scalars(select(orm.Namespace).filter_by(name=name)).one()


# -- 1. delete, then re-create before the deletion job ran --------------------------------------
@pytest.mark.parametrize("scope", ["environment", "namespace"])
def test_recreated_before_the_delete_job_keeps_its_new_build(service_factory, scope):
    env = service_factory()
    store = env.store
    old = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(old)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    assert status_of(store, old)[0] == BuildStatus.COMPLETED
    old_prefix = build_row(store, old).prefix_path(store.store_path)
    link = store.store_path / "default" / "envs" / "hi"
    assert link.resolve() == old_prefix.resolve()

    # The user deletes, and re-creates the same name before any worker ran the deletion job.
    with store.session() as db:
        ns = _namespace(db)
        if scope == "environment":
            environment = db.scalars(select(orm.Environment).filter_by(namespace_id=ns.id, name="hi")).one()
            api.delete_environment(db, environment)
            env_id = environment.id
        else:
            api.delete_namespace(db, ns)
        ns_id = ns.id
    if scope == "environment":
        BuildQueue(store).enqueue_delete_environment(env_id)
    else:
        BuildQueue(store).enqueue_delete_namespace(ns_id)
    with store.session() as db:
        ns = api.create_namespace(db, "default", exist_ok=True) if scope == "namespace" else _namespace(db)
        new = api.submit_specification(db, ns, parse_specification(QUICK)).id
    BuildQueue(store).enqueue_build(new)

    # The worker runs the deletion job first (maintenance queue), then the new build.
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    status, info = status_of(store, new)
    assert status == BuildStatus.COMPLETED, (info, env.worker_logs()[-3000:])
    new_build = build_row(store, new)
    assert new_build.deleted_on is None
    with store.session() as db:
        environment = db.get(orm.Environment, new_build.environment_id)
        assert environment.deleted_on is None and environment.namespace.deleted_on is None
        assert environment.current_build_id == new
    assert link.resolve() == new_build.prefix_path(store.store_path).resolve()
    assert not old_prefix.exists()


# -- 2. the child ends after COMPLETED was committed, before its tail -----------------------------
def _child_pid(env) -> int | None:
    """Pid of the build child (forked by its supervisor, named ``csj-build``) under this env's workers."""
    for worker in env.workers:
        for pid in descendants(worker.pid):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == CHILD_NAME:
                return pid
    return None


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def _link_lock(store, namespace: str = "default", name: str = "hi"):
    """Hold the environment link's lock: a COMPLETED build blocks right after its commit, in
    ``sync_environment_link``, which is the window this module's tests need to act in."""
    lock_path = store.store_path / namespace / "envs" / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _assert_tail_done(env, build_id: int) -> None:
    store = env.store
    prefix = build_row(store, build_id).prefix_path(store.store_path)
    link = store.store_path / "default" / "envs" / "hi"
    wait_for(lambda: link.is_symlink() and link.resolve() == prefix.resolve(), 30, "the link to be switched")
    wait_for(lambda: read_log(store, build_id)[2], 10, "the live log to be finished")
    wait_for(lambda: Job.exists(image_job_id(build_id), connection=store.redis), 10, "the image job (queued once)")
    wait_for(lambda: not (store.store_path / ".work" / str(build_id)).exists(), 10, "the supervisor to end")
    assert status_of(store, build_id)[0] == BuildStatus.COMPLETED


IMAGE_ARTIFACTS = ["LOCKFILE", "YAML", "DOCKER_MANIFEST"]


def test_cancel_after_completed_was_committed_does_not_kill_the_tail(service_factory):
    env = service_factory(build_artifacts=IMAGE_ARTIFACTS)
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    with _link_lock(store):
        env.start_worker()
        wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)
        child = wait_for(lambda: _child_pid(env), 10, "the build child")
        # A cancel that raced the commit: the flag is set, the build is already COMPLETED.
        store.redis.set(cancel_key(build_id), "canceled by user")
        flagged = _redis_now(store)
        # Two heartbeats after the flag: the supervisor read it and went on supervising.
        wait_for(lambda: float(store.redis.get(heartbeat_key(build_id)) or 0) > flagged + HEARTBEAT_INTERVAL,
                 30, "two supervisor iterations after the cancel flag")
        assert _running(child), "the supervisor killed a child that had committed COMPLETED"
    _assert_tail_done(env, build_id)


def test_child_killed_after_completed_was_committed_gets_its_tail_finished(service_factory):
    env = service_factory(build_artifacts=IMAGE_ARTIFACTS)
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    with _link_lock(store):
        env.start_worker()
        wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)
        child = wait_for(lambda: _child_pid(env), 10, "the build child")
        os.kill(child, signal.SIGKILL)  # OOM killer, or TAIL_GRACE exceeded
        wait_for(lambda: not _running(child), 10, "the build child to die")
    _assert_tail_done(env, build_id)


# -- 3. a build ended elsewhere stops; a late success does not overwrite its log -----------------
def test_build_ended_elsewhere_is_stopped(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker("--reconcile-interval", "0")
    wait_in_pip_stage(store, build_id, env)
    wait_for(lambda: hanging_index.open > 0, 60, "uv to connect to the pip index")
    prefix = build_row(store, build_id).prefix_path(store.store_path)
    # What a reconciler does when it lost sight of the heartbeat (e.g. a Redis failover).
    assert lifecycle.end(store, build_id, (BuildStatus.BUILDING,), BuildStatus.FAILED, "reconciled")
    wait_for(lambda: hanging_index.open == 0, 30, "uv (in the build's process group) to be killed")
    wait_for(lambda: not store.redis.exists(heartbeat_key(build_id)), 30, "the supervisor to end")
    assert status_of(store, build_id) == (BuildStatus.FAILED, "reconciled")
    assert stored_or_live_log(store, build_id) == "BUILD FAILED: reconciled\n"
    assert not prefix.exists()


@pytest.mark.parametrize("checked_before_the_end", [False, True])
def test_late_success_keeps_the_final_log_and_removes_its_prefix(service_factory, tmp_path, monkeypatch,
                                                                  checked_before_the_end):
    """The build child completes after the reconciler ended its build: nothing of the child's is
    recorded, its prefix and uploads are removed, and the reconciler's log stays. With
    ``checked_before_the_end`` the child still saw BUILDING (it had uploaded its log already) and
    loses only at the compare-and-set."""
    from conda_store_jupyter.storage.base import artifact_key

    store = service_factory().store
    build_id = make_build(store, QUICK)
    assert lifecycle.claim(store, build_id)
    build = build_row(store, build_id)
    if checked_before_the_end:
        monkeypatch.setattr(lifecycle, "_state",
                            lambda store, build_id, job_id=None: (BuildStatus.BUILDING, build.build_key))
    assert lifecycle.end(store, build_id, (BuildStatus.BUILDING,), BuildStatus.FAILED, "reconciled")
    prefix = build.prefix_path(store.store_path)
    (prefix / "conda-meta").mkdir(parents=True)
    (tmp_path / "build.log").write_text("the late build's own log\n")
    lock_key = artifact_key(BuildArtifactType.LOCKFILE, build.build_key)
    store.storage.put_bytes(lock_key, b"lock", content_type="text/yaml")
    result = lifecycle.BuildResult(prefix=prefix, size_bytes=1, log=tmp_path / "build.log",
                                   artifacts={BuildArtifactType.LOCKFILE: lock_key})

    assert lifecycle.complete(store, build_id, result) is False
    assert stored_or_live_log(store, build_id) == "BUILD FAILED: reconciled\n"
    assert not prefix.exists() and not store.storage.exists(lock_key)
    assert not store.storage.exists(artifact_key(BuildArtifactType.LOGS, build.build_key))
    assert status_of(store, build_id) == (BuildStatus.FAILED, "reconciled")
    assert lifecycle.fail(store, build_id, "late", log_file=tmp_path / "build.log") is False
    assert [a.artifact_type for a in build_row(store, build_id).artifacts] == [BuildArtifactType.LOGS]


def test_two_enders_record_one_log_and_the_loser_leaves_nothing(service_factory, monkeypatch):
    """Two reconcilers (or a cancel and a reconciler) both decide to end one build: both upload,
    one wins the compare-and-set, the loser removes its upload; one LOGS row, one log file."""
    store = service_factory().store
    build_id = make_build(store, QUICK)
    assert lifecycle.claim(store, build_id)
    key = build_row(store, build_id).build_key
    monkeypatch.setattr(lifecycle, "_state", lambda store, build_id, job_id=None: (BuildStatus.BUILDING, key))
    assert lifecycle.end(store, build_id, (BuildStatus.BUILDING,), BuildStatus.FAILED, "first")
    assert not lifecycle.end(store, build_id, (BuildStatus.BUILDING,), BuildStatus.CANCELED, "second")
    assert status_of(store, build_id) == (BuildStatus.FAILED, "first")
    assert stored_or_live_log(store, build_id) == "BUILD FAILED: first\n"
    (row,) = build_row(store, build_id).artifacts
    assert row.artifact_type == BuildArtifactType.LOGS
    logs = Path(store.storage.storage_directory) / "logs"
    assert [f"logs/{p.name}" for p in logs.iterdir()] == [row.key]  # the loser's upload is gone


def test_heartbeat_age_uses_the_redis_clock(service_factory, monkeypatch):
    """A reconciler on a host whose clock is an hour ahead must not fail a live build."""
    from conda_store_jupyter.worker import tasks

    store = service_factory().store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    assert lifecycle.claim(store, build_id)
    tasks.beat(store, build_id)  # the worker host, clock right
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert reconcile(store, stale_after=30) == []
    assert status_of(store, build_id)[0] == BuildStatus.BUILDING


# -- 6. a crashed child's stderr is quoted redacted --------------------------------------------
def test_crashed_child_stderr_tail_is_redacted(service_factory):
    from conda_store_jupyter.worker import tasks

    store = service_factory().store
    build_id = make_build(store, QUICK)
    assert lifecycle.claim(store, build_id)
    wd = tasks.work_dir(store, build_id)
    wd.mkdir(parents=True)
    (wd / "child.stderr").write_text(
        "Traceback (most recent call last):\n"
        "OSError: cannot reach https://alice:s3cret@pypi.example.com/simple/tomli/\n")

    tasks._after_child(store, build_id, tasks.ChildExit(returncode=1))
    status, info = status_of(store, build_id)
    text = stored_or_live_log(store, build_id)
    assert status == BuildStatus.FAILED and "pypi.example.com" in info and "pypi.example.com" in text
    assert "s3cret" not in info and "s3cret" not in text


# -- 4. a live log whose end marker never came --------------------------------------------------
def test_follower_finishes_when_the_end_marker_is_missing(service_factory):
    from conda_store_jupyter.worker.logs import log_stream_key

    store = service_factory().store
    build_id = make_build(store, QUICK)
    assert lifecycle.claim(store, build_id)
    # A line written long ago (explicit old entry id): the stream has been silent well past the grace.
    store.redis.xadd(log_stream_key(build_id), {b"l": b"-- solve"}, id="1000-0")
    lines, last, finished = read_log(store, build_id)
    assert (lines, finished) == (["-- solve"], False)
    assert read_log(store, build_id, last)[2] is False  # silent, but still BUILDING in the database

    # Ended by a process that lost Redis before writing the end marker.
    with store.session() as db:  # no lifecycle.end: that would write the end marker
        db.get(orm.Build, build_id).status = BuildStatus.FAILED
    wait_for(lambda: read_log(store, build_id, last) == ([], last, True), 10,
             "the follower to see the build finished")


# -- 5. a long-queued build a worker has just taken ------------------------------------------------
def test_reconciler_spares_a_long_queued_build_a_worker_just_took(service_factory):
    from datetime import timedelta

    from rq.job import JobStatus

    store = service_factory().store
    build_id = make_build(store, QUICK)
    job_id = BuildQueue(store).enqueue_build(build_id)
    with store.session() as db:  # queued for an hour behind other builds
        db.get(orm.Build, build_id).scheduled_on = orm.utcnow() - timedelta(hours=1)
    # A worker has just dequeued the job and is still loading: no heartbeat yet.
    Job.fetch(job_id, connection=store.redis).set_status(JobStatus.STARTED)

    assert reconcile(store, stale_after=30) == []
    assert status_of(store, build_id)[0] == BuildStatus.QUEUED
    # If that worker really died, the build is queued again (its next attempt) once the state
    # outlasts stale_after: never left QUEUED on a dead job, never FAILED for it.
    wait_for(lambda: reconcile(store, stale_after=0.5) == [build_id], 10, "the reconciler to queue it again")
    status, info = status_of(store, build_id)
    assert status == BuildStatus.QUEUED and "died before starting" in info
    from conda_store_jupyter.worker.queue import build_job_id

    assert build_row(store, build_id).job_id == build_job_id(build_id, 2)
    assert Job.exists(build_job_id(build_id, 2), connection=store.redis)
