"""Faults a host really has, with real parts: redis-server SIGKILLed and restarted (external, and the
embedded one of ``conda-store-server --standalone``), the server SIGKILLed or stopped, a worker's
job process killed or stuck. The goal: no build lost (every one ends COMPLETED), nothing left
running after a stop, and a dead or stuck job noticed within seconds, not minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.testing.config import local_channel_traits, write_config
from conda_store_jupyter.worker.queue import BUILD_QUEUE, build_job_id
from conda_store_jupyter.worker.tasks import load_store

from .fixtures_service import (BUILD_DEADLINE, QUICK, SLOW, StandaloneServer, build_row, descendants, make_build,
                               proc_state, status_of, wait_for, wait_in_pip_stage, wait_status)
from .processes import free_port, stop_process
from .redis_server import available, restartable_redis_server
from conda_store_jupyter.worker.queue import BuildQueue

needs_redis = pytest.mark.skipif(not available(), reason="redis-server is not installed")


def _spec(i: int) -> str:
    return f"name: env{i}\ndependencies:\n  - hello\n" if i % 2 else f"name: env{i}\ndependencies:\n  - libgreet\n"


# -- build_timeout: one trait, one meaning --------------------------------------------------------------
def test_build_timeout_is_validated():
    with pytest.raises(ValueError, match="0 = no limit"):
        CondaStore(build_timeout=-1)
    assert CondaStore(build_timeout=0).build_time_limit is None
    assert CondaStore(build_timeout=90).build_time_limit == 90.0


def test_build_timeout_zero_means_no_limit(service_factory):
    from rq.job import Job

    env = service_factory(build_timeout=0)
    store = env.store
    build_id = make_build(store, QUICK)
    job_id = BuildQueue(store).enqueue_build(build_id)
    assert Job.fetch(job_id, connection=store.redis).timeout == -1  # RQ's "no timeout"
    env.start_worker("--burst").wait(timeout=BUILD_DEADLINE)
    assert status_of(store, build_id) == (BuildStatus.COMPLETED, None), env.worker_logs()[-3000:]


# -- an external redis-server, SIGKILLed and restarted empty -------------------------------------------
@needs_redis
def test_external_redis_killed_and_restarted_empty_loses_no_build(service_factory):
    with restartable_redis_server() as redis_server:  # no persistence: the worst case
        env = service_factory(redis_url=f"{redis_server.url}/0")
        store = env.store
        builds = [make_build(store, _spec(i)) for i in range(3)]
        for build_id in builds:
            BuildQueue(store).enqueue_build(build_id)
        worker = env.start_worker("--reconcile-interval", "1")
        wait_for(lambda: status_of(store, builds[0])[0] != BuildStatus.QUEUED, BUILD_DEADLINE,
                 "the first build to start")
        run_id = store.redis.info("server")["run_id"]
        redis_server.kill()
        redis_server.start()  # same port, no persistence: nothing in it
        # A new server (the worker's heartbeats and registrations may already be back in it, so its
        # size says nothing; its run id says it is not the old one).
        assert store.redis.info("server")["run_id"] != run_id
        for build_id in builds:
            status, info = wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)
            assert (status, info) == (BuildStatus.COMPLETED, None), build_id
        assert worker.poll() is None, "the worker survives Redis restarts"
        # Queued builds were enqueued again under their own job id: nobody needed a second attempt.
        assert [build_row(store, b).job_id for b in builds] == [build_job_id(b, 1) for b in builds]


# -- interrupted builds are queued again; RQ's verdict is used at once -------------------------------------
def test_build_of_a_killed_worker_is_queued_again(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    first = env.start_worker("--reconcile-interval", "0")
    wait_in_pip_stage(store, build_id, env)
    os.kill(first.pid, signal.SIGKILL)  # the RQ worker alone: its supervisor stops the build
    first.wait()
    # The supervisor itself queues the build again as attempt 2 (nothing to wait for).
    wait_for(lambda: build_row(store, build_id).job_id == build_job_id(build_id, 2), 30,
             "the build to be queued again as attempt 2")
    status, info = status_of(store, build_id)
    assert status == BuildStatus.QUEUED and "worker" in info, info
    wait_for(lambda: BuildQueue(store).rq_queue(BUILD_QUEUE).job_ids == [build_job_id(build_id, 2)], 10,
             "attempt 2 on the build queue")
    wait_for(lambda: hanging_index.open == 0, 15, "the first attempt's uv to be stopped")
    env.start_worker()
    wait_in_pip_stage(store, build_id, env)  # attempt 2 runs
    BuildQueue(store).cancel_build(build_id)
    assert wait_status(store, build_id, BuildStatus.CANCELED, BuildStatus.FAILED, timeout=30, env=env)[0] == \
        BuildStatus.CANCELED


def _horse_of(env, worker: subprocess.Popen) -> int:
    """The work horse (RQ's per-job fork) of ``worker``: its child running the supervisor."""
    def find():
        kids = [p for p in descendants(worker.pid) if _ppid(p) == worker.pid]
        return kids[0] if kids else None

    return wait_for(find, 30, "the work horse")


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return None


def test_dead_job_process_is_failed_from_rq_verdict_not_stale_heartbeat(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url, build_max_attempts=1)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    worker = env.start_worker("--reconcile-interval", "1")  # default stale_after: 30 s
    wait_in_pip_stage(store, build_id, env)
    horse = _horse_of(env, worker)
    # The flat worker: the process that forks work horses runs no other thread, while a job runs
    # (and its reconciler with it).
    assert os.listdir(f"/proc/{worker.pid}/task") == [str(worker.pid)]
    os.kill(horse, signal.SIGKILL)
    killed_at = time.monotonic()
    status, info = wait_status(store, build_id, BuildStatus.FAILED, BuildStatus.COMPLETED, timeout=30, env=env)
    assert status == BuildStatus.FAILED and "job failed" in info, info
    assert time.monotonic() - killed_at < 15, "RQ knew the job failed: no wait for a stale heartbeat"
    wait_for(lambda: hanging_index.open == 0, 15, "uv to be stopped")


def test_stuck_job_process_is_replaced_and_its_build_retried(service_factory, hanging_index):
    """A job process that stops making progress (here: SIGSTOP) is stopped by its worker, whose
    slot is free again; the build is queued again."""
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    worker = env.start_worker("--reconcile-interval", "1", "--stale-after", "3")
    wait_in_pip_stage(store, build_id, env)
    horse = _horse_of(env, worker)
    os.kill(horse, signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_for(lambda: build_row(store, build_id).job_id == build_job_id(build_id, 2), 60,
             "the stuck attempt to be replaced")
    assert time.monotonic() - stopped_at < 60
    wait_for(lambda: not Path(f"/proc/{horse}").exists() or proc_state(horse) == "Z", 30, "the stuck horse to be gone")
    # The same worker takes the next attempt: its slot was freed.
    wait_for(lambda: status_of(store, build_id)[0] == BuildStatus.BUILDING, 60, "attempt 2 to start")
    assert worker.poll() is None
    BuildQueue(store).cancel_build(build_id)
    wait_status(store, build_id, BuildStatus.CANCELED, timeout=30, env=env)


# -- conda-store-server --standalone, as the README runs it --------------------------------------------
ADMIN = "faults-admin-token-0123456789abcdef"
pytestmark_linux = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")


@pytest.fixture
def standalone_factory(tmp_path, local_channel, package_cache_dir):
    """Make a :class:`StandaloneServer` on a fresh store (trait overrides for ``CondaStore``)."""
    made: list[StandaloneServer] = []

    def make(**traits) -> StandaloneServer:
        config = tmp_path / "conda_store_config.py"
        write_config(
            config,
            {"store_directory": str(tmp_path / "store"), **local_channel_traits(local_channel, package_cache_dir),
             "conda_solve_platforms": ["linux-64"], "build_artifacts": ["LOCKFILE", "YAML"], **traits},
            AuthenticationBackend={"predefined_tokens": {
                ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "admin"}}},
        )
        made.append(StandaloneServer(config=config, tmp=tmp_path, port=free_port(), token=ADMIN))
        return made[-1]

    yield make
    for server in made:
        if server.proc is not None and server.proc.poll() is None:
            stop_process(server.proc, group=True)


@pytest.fixture
def standalone(standalone_factory):
    return standalone_factory()


def _alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state != "Z"


def _wait_all_completed(server: StandaloneServer, builds: list[int], store) -> None:
    for build_id in builds:
        try:
            wait_for(lambda: status_of(store, build_id)[0].finished, 3 * BUILD_DEADLINE, f"build {build_id} to end")
        except AssertionError:
            raise AssertionError(f"build {build_id} is {status_of(store, build_id)}\n{server.log()}") from None
        assert status_of(store, build_id) == (BuildStatus.COMPLETED, None), (build_id, server.log())


@pytestmark_linux
def test_standalone_restarts_and_redis_kills_lose_no_build(standalone):
    store = load_store(str(standalone.config))
    standalone.start()
    redis_pids = [p for p, name in standalone.processes().items() if name.startswith("redis-server")]
    assert len(redis_pids) == 1

    # 1. A graceful restart with builds queued and running: nothing FAILED, nothing left running.
    builds = [standalone.submit(_spec(i)) for i in range(3)]
    wait_for(lambda: any(status_of(store, b)[0] == BuildStatus.BUILDING for b in builds), BUILD_DEADLINE,
             "a build to start")
    started = standalone.processes()
    standalone.proc.send_signal(signal.SIGTERM)
    assert standalone.proc.wait(60) == 0, standalone.log()
    left = {p: name for p, name in started.items() if _alive(p)}
    assert not left, f"processes left after the server stopped: {left}"
    assert all(status_of(store, b)[0] in (BuildStatus.QUEUED, BuildStatus.COMPLETED) for b in builds), \
        [status_of(store, b) for b in builds]
    standalone.start()
    _wait_all_completed(standalone, builds, store)

    # 2. kill -9 of the embedded Redis with builds queued: its append-only file keeps them, the
    # server restarts it, workers and server reconnect, submissions work again by themselves.
    more = [standalone.submit(_spec(i)) for i in range(3, 5)]
    [redis_pid] = [p for p, name in standalone.processes().items() if name.startswith("redis-server")]
    os.kill(redis_pid, signal.SIGKILL)
    wait_for(lambda: [p for p, n in standalone.processes().items() if n.startswith("redis-server") and p != redis_pid],
             30, "the embedded redis-server to be restarted")
    more.append(wait_for(lambda: _try_submit(standalone, _spec(5)), 30, "a submission to be accepted again"))
    _wait_all_completed(standalone, more, store)

    # 3. kill -9 of the server itself with builds queued: the next start builds them.
    last = [standalone.submit(_spec(i)) for i in range(6, 8)]
    os.kill(standalone.proc.pid, signal.SIGKILL)
    standalone.proc.wait()
    standalone.start()
    _wait_all_completed(standalone, last, store)


def _try_submit(server: StandaloneServer, spec: str) -> int | None:
    return server.try_submit(spec)


@pytestmark_linux
def test_embedded_redis_persists_with_an_append_only_file(standalone):
    import redis

    from conda_store_jupyter.worker.embedded import redis_socket_path

    standalone.start()
    client = redis.Redis(unix_socket_path=str(redis_socket_path(Path(standalone.tmp / "store").resolve())))
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("save") == {"save": ""}
    client.set("conda-store:test:persisted", "1")
    [redis_pid] = [p for p, name in standalone.processes().items() if name.startswith("redis-server")]
    os.kill(redis_pid, signal.SIGKILL)
    wait_for(lambda: client.get("conda-store:test:persisted") == b"1", 30, "the restarted Redis to have the key",
             ignore=redis.exceptions.ConnectionError)
    client.close()


def test_a_replaced_attempt_never_records_the_outcome(service_factory):
    """The child of an attempt the reconciler replaced (presumed dead, yet still running) finishes
    its pipeline but must not end the build the newer attempt is running now."""
    from conda_store_jupyter.worker import lifecycle
    from conda_store_jupyter.worker.queue import JOB_ID_ENV

    env = service_factory()
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    assert lifecycle.claim(store, build_id, job_id=build_job_id(build_id))
    assert lifecycle.requeue(store, build_id, BuildStatus.BUILDING, build_job_id(build_id), build_job_id(build_id, 2),
                             "test") and lifecycle.claim(store, build_id, job_id=build_job_id(build_id, 2))
    with store.session() as db:  # attempt 2 is running somewhere
        db.get(orm.Build, build_id).status_info = None
    child = subprocess.run(
        [sys.executable, "-m", "conda_store_jupyter.worker.tasks", "run-build", str(build_id), "--config",
         str(env.config)], env={**os.environ, JOB_ID_ENV: build_job_id(build_id, 1)},
        capture_output=True, text=True, timeout=BUILD_DEADLINE)
    assert "ended elsewhere" in child.stderr, child.stderr[-3000:]
    assert status_of(store, build_id) == (BuildStatus.BUILDING, None)
    assert build_row(store, build_id).job_id == build_job_id(build_id, 2)


@pytestmark_linux
def test_standalone_stop_leaves_no_process_and_requeues_the_running_build(standalone_factory, hanging_index):
    """SIGTERM to the server while a build hangs in uv: every process it started is gone when it
    has exited (the build child and uv too), and the build is queued again, not FAILED."""
    server = standalone_factory(pip_index_url=hanging_index.url)
    store = load_store(str(server.config))
    server.start()
    build_id = server.submit(SLOW)
    wait_for(lambda: hanging_index.open > 0, 3 * BUILD_DEADLINE, "the build to hang in uv")
    started = server.processes()
    assert any(name == "uv" for name in started.values()), started
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0, server.log()
    left = {p: name for p, name in started.items() if _alive(p)}
    assert not left, f"processes left after the server stopped: {left}"
    assert hanging_index.open == 0
    status, info = status_of(store, build_id)
    assert status == BuildStatus.QUEUED and "shut down" in info, info
    assert build_row(store, build_id).job_id == build_job_id(build_id, 2)
