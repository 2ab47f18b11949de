"""The warm build runner (``worker/zygote.py``): build children are forked from the pre-imported
worker, and a child that dies never takes its worker down."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.worker.logs import stored_or_live_log
from conda_store_jupyter.worker.queue import BuildQueue
from conda_store_jupyter.worker.zygote import CHILD_NAME, fork_child

from .fixtures_service import (QUICK, SLOW, descendants, make_build, status_of, wait_for, wait_in_pip_stage,
                               wait_status)


def _build_child(worker_pid: int) -> int | None:
    for pid in descendants(worker_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == CHILD_NAME:
                return pid
        except OSError:
            continue
    return None


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_build_child_killed_mid_build_fails_that_build_and_the_worker_takes_the_next(service_factory,
                                                                                    hanging_index):
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    worker = env.start_worker("--reconcile-interval", "0")
    wait_in_pip_stage(store, build_id, env)  # mid-build: uv hangs on the index
    wait_for(lambda: hanging_index.open > 0, 60, "uv to connect to the pip index")
    child = wait_for(lambda: _build_child(worker.pid), 30, "the build child")
    # Forked from the worker (the same command line: no interpreter started for the build), in a
    # session of its own (its supervisor stops it with its whole process group).
    assert _cmdline(child) == _cmdline(worker.pid)
    assert os.getsid(child) == child
    assert os.listdir(f"/proc/{worker.pid}/task") == [str(worker.pid)], "the zygote runs no thread"

    os.kill(child, signal.SIGKILL)  # OOM killer, a segfault in a native library...
    status, info = wait_status(store, build_id, BuildStatus.FAILED, BuildStatus.COMPLETED, BuildStatus.CANCELED,
                               timeout=60, env=env)
    assert (status, info) == (BuildStatus.FAILED, "the build process was killed by signal 9"), env.worker_logs()
    assert stored_or_live_log(store, build_id).rstrip().endswith("BUILD FAILED: the build process was killed by signal 9")
    wait_for(lambda: hanging_index.open == 0, 30, "uv (in the child's process group) to be stopped")

    # The same worker takes the next build and completes it.
    next_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(next_id)
    assert wait_status(store, next_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env) == \
        (BuildStatus.COMPLETED, None), env.worker_logs()[-3000:]
    assert worker.poll() is None
    assert status_of(store, build_id)[0] == BuildStatus.FAILED


def test_fork_child_exit_codes_and_crashes(tmp_path):
    out = tmp_path / "out"
    parent = os.getpid()

    def crash() -> int:
        print("before the crash")
        raise ValueError("boom in the child")

    child = fork_child(crash, output=out)
    assert child.wait(timeout=30) == 1
    text = out.read_text()
    assert "before the crash" in text and "ValueError: boom in the child" in text
    assert os.getpid() == parent  # the child never came back into this code

    child = fork_child(lambda: os.getsid(0) == os.getpid() and 7, output=out)  # own session
    assert child.wait(timeout=30) == 7
    assert child.poll() == 7

    child = fork_child(lambda: os.kill(os.getpid(), signal.SIGKILL), output=out)
    assert child.wait(timeout=30) == -signal.SIGKILL


def test_warming_the_statement_cache_leaves_nothing_behind(database_url, tmp_path):
    """The zygote's throwaway build (warmup.py) is rolled back whole: no row, no id used, no file."""
    from sqlalchemy import func, select

    from conda_store_jupyter import orm
    from conda_store_jupyter.app import CondaStore
    from conda_store_jupyter.worker.warmup import warm_statement_cache

    store = CondaStore(store_directory=str(tmp_path / "store"), database_url=database_url)
    try:
        before = len(store.engine._compiled_cache)
        assert warm_statement_cache(store) is not None
        assert len(store.engine._compiled_cache) >= before + 10  # claim, complete, packages, artifacts...
        with store.session() as db:
            for model in (orm.Namespace, orm.Environment, orm.Specification, orm.Build, orm.BuildArtifact,
                          orm.CondaChannel, orm.CondaPackage, orm.CondaPackageBuild):
                assert db.scalar(select(func.count()).select_from(model)) == 0, model.__name__
        assert not list((tmp_path / "store").rglob("*csj-warmup*"))  # no prefix, link or artifact
        assert not (tmp_path / "store" / ".artifacts").exists()
        assert make_build(store, QUICK) == 1  # the throwaway rows used no id of a sequence
    finally:
        store.dispose()
