"""The queue and workers with real parts: Debian redis-server, `conda-store-worker` processes, the
local conda channel, SQLite. Waits are on conditions with deadlines, never sleeps.

Builds that must be *running* when a test acts on them (cancel, timeout, worker killed) use a
``pip:`` section against :class:`HangingIndex`, a pip index that accepts connections and never
answers: the build sits in uv (a grandchild process in the build's process group) until stopped,
and the index sees uv's connections close when that process group is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.exceptions import ConflictError
from conda_store_jupyter.schema import ArtifactStatus, BuildArtifactType, BuildStatus
from conda_store_jupyter.worker.logs import read_log, stored_or_live_log
from conda_store_jupyter.worker.queue import ARTIFACT_QUEUE, BUILD_QUEUE, heartbeat_key
from conda_store_jupyter.worker.reconcile import reconcile

from .fixtures_service import (BUILD_DEADLINE, QUICK, QUICK2, SLOW, build_row, descendants, kill_tree, make_build,
                               status_of, wait_for, wait_in_pip_stage, wait_status)
from conda_store_jupyter.worker.queue import BuildQueue

# -- happy path -------------------------------------------------------------------------------------
def test_build_completes_with_artifacts_link_and_logs(service_factory):
    env = service_factory()
    store = env.store
    build_id = make_build(store, QUICK)
    job_id = BuildQueue(store).enqueue_build(build_id)
    assert build_row(store, build_id).job_id == job_id
    env.start_worker()
    status, info = wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)
    assert status == BuildStatus.COMPLETED, info

    build = build_row(store, build_id)
    assert build.started_on and build.ended_on and build.size > 0
    # The archive is an artifact job after COMPLETED: announced (PENDING) at the commit, then READY.
    assert build.artifact_state(BuildArtifactType.CONDA_PACK).status in (ArtifactStatus.PENDING,
                                                                         ArtifactStatus.READY)
    build = wait_for(lambda: (b := build_row(store, build_id)).artifact(BuildArtifactType.CONDA_PACK) and b,
                     BUILD_DEADLINE, "the conda-pack archive (an artifact job after COMPLETED)")
    kinds = {a.artifact_type: a.key for a in build.artifacts}
    assert set(kinds) == {BuildArtifactType.LOCKFILE, BuildArtifactType.YAML, BuildArtifactType.CONDA_PACK,
                          BuildArtifactType.LOGS, BuildArtifactType.DIRECTORY}
    assert b"hello" in store.storage.get_bytes(kinds[BuildArtifactType.LOCKFILE])
    assert b"hello=2.0" in store.storage.get_bytes(kinds[BuildArtifactType.YAML])
    assert store.storage.get_bytes(kinds[BuildArtifactType.CONDA_PACK])[:2] == b"\x1f\x8b"
    prefix = build.prefix_path(store.store_path)
    assert kinds[BuildArtifactType.DIRECTORY] == str(prefix)
    assert (prefix / "conda-meta").is_dir()

    link = store.store_path / "default" / "envs" / "hi"
    wait_for(lambda: link.is_symlink(), 10, "the environment link (switched right after COMPLETED)")
    assert link.resolve() == prefix.resolve()
    with store.session() as db:
        assert db.get(orm.Environment, build.environment_id).current_build_id == build_id
        assert {p.package.name for p in db.get(orm.Build, build_id).package_builds} == {"hello", "libgreet"}

    text = stored_or_live_log(store, build_id)
    assert "-- solve" in text and "BUILD COMPLETED" in text
    assert store.storage.get_bytes(kinds[BuildArtifactType.LOGS]).decode() == text
    lines, last, finished = read_log(store, build_id)
    assert finished and "-- solve" in lines and last != "0-0"
    assert read_log(store, build_id, last) == ([], last, True)
    # The supervisor tidies up right after the child recorded COMPLETED.
    wait_for(lambda: not store.redis.exists(heartbeat_key(build_id))
             and not (store.store_path / ".work" / str(build_id)).exists(), 10, "the supervisor to clean up")


def test_image_job_is_queued_when_docker_manifest_is_configured(service_factory):
    env = service_factory(build_artifacts=["LOCKFILE", "YAML", "DOCKER_MANIFEST"])
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    # One worker listening only to builds: the image job must wait on the artifacts queue.
    code = ("import sys; from rq import Queue, Worker; from conda_store_jupyter.worker.tasks import load_store;"
            f"s = load_store({str(env.config)!r}); Worker([Queue({BUILD_QUEUE!r}, connection=s.redis)],"
            " connection=s.redis).work(burst=True)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=BUILD_DEADLINE)
    assert status_of(store, build_id)[0] == BuildStatus.COMPLETED
    jobs = BuildQueue(store).rq_queue(ARTIFACT_QUEUE).jobs
    assert [(j.func_name, j.args[0]) for j in jobs] == [("conda_store_jupyter.worker.images.build_image_artifact",
                                                         build_id)]
    assert build_row(store, build_id).image_status is ArtifactStatus.PENDING


# -- cancel -------------------------------------------------------------------------------------------
def test_cancel_queued_build(service_factory):
    env = service_factory()
    store = env.store
    build_id = make_build(store, QUICK)
    job_id = BuildQueue(store).enqueue_build(build_id)
    BuildQueue(store).cancel_build(build_id)
    assert status_of(store, build_id) == (BuildStatus.CANCELED, "canceled by user")
    from rq.job import Job

    assert Job.fetch(job_id, connection=store.redis).get_status().value == "canceled"
    assert "canceled by user" in stored_or_live_log(store, build_id)
    assert read_log(store, build_id)[2] is True
    with pytest.raises(ConflictError):
        BuildQueue(store).cancel_build(build_id)
    # A worker running afterwards does not build it.
    other = make_build(store, QUICK2)
    BuildQueue(store).enqueue_build(other)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    assert status_of(store, other)[0] == BuildStatus.COMPLETED
    assert status_of(store, build_id)[0] == BuildStatus.CANCELED


def test_cancel_running_build_kills_its_process_group(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker()
    live = wait_in_pip_stage(store, build_id, env)  # live log readable while BUILDING
    assert "-- solve" in live
    wait_for(lambda: hanging_index.open > 0, 60, "uv to connect to the pip index")

    BuildQueue(store).cancel_build(build_id)
    status, info = wait_status(store, build_id, BuildStatus.CANCELED, BuildStatus.FAILED, timeout=30, env=env)
    assert (status, info) == (BuildStatus.CANCELED, "canceled by user")
    wait_for(lambda: hanging_index.open == 0, 10, "uv (in the build's process group) to be killed")
    text = stored_or_live_log(store, build_id)
    # Everything the build wrote, then the final status: once, as the last line.
    assert text.endswith("\nBUILD CANCELED: canceled by user\n") and text.count("BUILD CANCELED") == 1
    assert "-- pip" in text
    assert not build_row(store, build_id).prefix_path(store.store_path).exists()
    with pytest.raises(ConflictError):
        BuildQueue(store).cancel_build(build_id)
    # The worker is free again.
    quick = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(quick)
    assert wait_status(store, quick, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)[0] == BuildStatus.COMPLETED


# -- workers dying ------------------------------------------------------------------------------------
def test_worker_killed_mid_build_is_reconciled_and_next_build_succeeds(service_factory, hanging_index):
    # No retries: this build would hang again (test_worker_faults.py covers the retry).
    env = service_factory(pip_index_url=hanging_index.url, build_max_attempts=1)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    worker = env.start_worker("--reconcile-interval", "0")
    wait_in_pip_stage(store, build_id, env)
    # The whole host "dies": worker, work horse, build child and uv, all at once.
    killed = kill_tree(worker.pid)
    assert len(killed) >= 3, killed
    worker.wait()
    assert status_of(store, build_id)[0] == BuildStatus.BUILDING  # nobody left to record anything
    prefix = build_row(store, build_id).prefix_path(store.store_path)
    assert (prefix / "conda-meta").is_dir()  # conda packages were linked before pip hung

    # A surviving worker's reconciler notices the silence (short stale_after to keep the test fast).
    env.start_worker("--stale-after", "5", "--reconcile-interval", "1")
    status, info = wait_status(store, build_id, BuildStatus.FAILED, BuildStatus.CANCELED, timeout=60, env=env)
    assert status == BuildStatus.FAILED and "heartbeat" in info, info
    text = stored_or_live_log(store, build_id)
    assert text.startswith(f"BUILD FAILED: {info}") and text.rstrip().endswith(info) and "-- pip" in text
    assert read_log(store, build_id)[2] is True
    # The reconciler leaves nothing half-built behind (removed right after its commit, which is
    # only safe once it has won the compare-and-set).
    wait_for(lambda: not prefix.exists(), 10, "the reconciler to remove the half-built prefix")

    quick = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(quick)
    assert wait_status(store, quick, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)[0] == BuildStatus.COMPLETED


def test_worker_process_killed_alone_stops_its_build(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url, build_max_attempts=1)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    worker = env.start_worker("--reconcile-interval", "0")
    wait_in_pip_stage(store, build_id, env)
    tree = descendants(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)  # only the RQ worker; its horse notices it is orphaned
    worker.wait()
    status, info = wait_status(store, build_id, BuildStatus.FAILED, BuildStatus.COMPLETED, timeout=30, env=env)
    assert status == BuildStatus.FAILED and "worker" in info, info
    wait_for(lambda: hanging_index.open == 0, 15, "uv to be stopped")
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in tree), 15, "the build processes to exit")


def test_reconcile_requeues_lost_jobs_once_and_retries_silent_builds(service_factory):
    from rq.job import Job

    from conda_store_jupyter.worker.queue import BUILD_QUEUE, build_job_id

    env = service_factory()
    store = env.store
    lost = make_build(store, QUICK)
    assert BuildQueue(store).enqueue_build(lost) == build_job_id(lost, 1)
    store.redis.flushdb()  # Redis restarted without persistence: the job is gone
    stale = make_build(store, QUICK2)
    from conda_store_jupyter.worker import lifecycle

    BuildQueue(store).enqueue_build(stale)  # its job exists; a worker "took" it, then went silent
    assert lifecycle.claim(store, stale)
    store.redis.set(heartbeat_key(stale), "1000.0")  # last sign of life long ago
    alive = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(alive)  # queued, job present: left alone

    # The database is the truth: the lost build's own job is enqueued again at once, exactly
    # once however many reconcilers run; the silent one is queued again as its second attempt.
    assert sorted(reconcile(store, stale_after=30)) == [lost, stale]
    assert reconcile(store, stale_after=30) == []
    queued = BuildQueue(store).rq_queue(BUILD_QUEUE).job_ids
    assert sorted(queued) == sorted([build_job_id(lost, 1), build_job_id(stale, 1), build_job_id(stale, 2),
                                     build_job_id(alive, 1)])
    assert status_of(store, lost) == (BuildStatus.QUEUED, None)
    status, info = status_of(store, stale)
    assert status == BuildStatus.QUEUED and "no heartbeat" in info, info
    assert build_row(store, stale).job_id == build_job_id(stale, 2)
    # The job of the replaced attempt does not run the build (only the current attempt claims it);
    # every build ends COMPLETED.
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    for build_id in (lost, stale, alive):
        assert status_of(store, build_id) == (BuildStatus.COMPLETED, None), build_id
    assert "skipping" in env.worker_logs() and Job.fetch(build_job_id(stale, 1), connection=store.redis)

    # A build interrupted with no attempt left is FAILED with the reason.
    env1 = service_factory(build_max_attempts=1)
    once = make_build(env1.store, QUICK)
    BuildQueue(env1.store).enqueue_build(once)
    assert lifecycle.claim(env1.store, once)
    env1.store.redis.set(heartbeat_key(once), "1000.0")
    assert reconcile(env1.store, stale_after=30) == [once]
    status, info = status_of(env1.store, once)
    assert status == BuildStatus.FAILED and "no heartbeat" in info, info


# -- deletion and links -------------------------------------------------------------------------------
def test_delete_build_keeps_logs_lockfile_yaml(service_factory):
    env = service_factory()
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    build = build_row(store, build_id)
    keys = {a.artifact_type: a.key for a in build.artifacts}
    prefix = build.prefix_path(store.store_path)
    assert prefix.is_dir()

    with store.session() as db:
        db.get(orm.Build, build_id).deleted_on = orm.utcnow()
    BuildQueue(store).enqueue_delete_build(build_id)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)

    assert not prefix.exists()
    assert not (store.store_path / "default" / "envs" / "hi").is_symlink()
    assert not store.storage.exists(keys[BuildArtifactType.CONDA_PACK])
    for kind in (BuildArtifactType.LOGS, BuildArtifactType.LOCKFILE, BuildArtifactType.YAML):
        assert store.storage.exists(keys[kind])
    assert {a.artifact_type for a in build_row(store, build_id).artifacts} == {
        BuildArtifactType.LOGS, BuildArtifactType.LOCKFILE, BuildArtifactType.YAML}


def test_newer_build_becomes_current_and_rollback_moves_the_link(service_factory):
    env = service_factory()
    store = env.store
    first = make_build(store, QUICK)
    second = make_build(store, QUICK2)
    BuildQueue(store).enqueue_build(first)
    BuildQueue(store).enqueue_build(second)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    b1, b2 = build_row(store, first), build_row(store, second)
    assert b1.status == b2.status == BuildStatus.COMPLETED
    link = store.store_path / "default" / "envs" / "hi"
    assert link.resolve() == b2.prefix_path(store.store_path).resolve()

    with store.session() as db:
        db.get(orm.Environment, b1.environment_id).current_build_id = first
    BuildQueue(store).enqueue_update_environment_link(b1.environment_id)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    assert link.resolve() == b1.prefix_path(store.store_path).resolve()

    with store.session() as db:  # as the API does: the environment and its builds
        from conda_store_jupyter import api

        api.delete_environment(db, db.get(orm.Environment, b1.environment_id))
    BuildQueue(store).enqueue_delete_environment(b1.environment_id)
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    assert not link.is_symlink()
    assert not b1.prefix_path(store.store_path).exists() and not b2.prefix_path(store.store_path).exists()


# -- the command and the embedded mode ----------------------------------------------------------------
def test_worker_reports_unreachable_redis_without_traceback(service_factory):
    from .processes import free_port

    env = service_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    proc = subprocess.run([sys.executable, "-m", "conda_store_jupyter.worker", "--config", str(env.config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_embedded_services_start_redis_and_restart_workers(service_factory):
    from conda_store_jupyter.worker.embedded import EmbeddedServices

    env = service_factory(redis_url=None)
    store = env.store
    with EmbeddedServices(store, workers=1) as services:
        assert store.redis_url.startswith("unix://")
        build_id = make_build(store, QUICK)
        BuildQueue(store).enqueue_build(build_id)
        assert wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED)[0] == BuildStatus.COMPLETED
        [pid] = services.worker_pids()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: services.restarts == 1 and services.worker_pids() not in ([], [pid]), 30,
                 "the worker to be restarted")
        again = make_build(store, QUICK2)
        BuildQueue(store).enqueue_build(again)
        assert wait_status(store, again, BuildStatus.COMPLETED, BuildStatus.FAILED)[0] == BuildStatus.COMPLETED
        worker_pid = services.worker_pids()[0]
        redis_pid = services.redis_process.pid
    for pid in (worker_pid, redis_pid):  # stop() leaves nothing running (zombies are reaped later)
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_embedded_services_die_with_a_killed_parent(service_factory, tmp_path):
    """A SIGKILLed standalone server must not leave its redis-server or workers running."""
    import subprocess
    import sys

    env = service_factory(redis_url=None)
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from conda_store_jupyter.app import CondaStore\n"
        "from conda_store_jupyter.worker.embedded import EmbeddedServices\n"
        f"store = CondaStore(store_directory={str(env.store.store_path)!r}, "
        f"database_url={env.store.database_url!r})\n"
        "services = EmbeddedServices(store, workers=1)\n"
        "services.start()\n"
        "print(services.redis_process.pid, *services.worker_pids(), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not any(_alive(p) for p in pids), 20, "redis-server and the worker to exit with their parent")
