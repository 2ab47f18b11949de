"""Fixtures for the queue/worker/storage tests: a real redis-server, moto S3, worker processes.

Registered in ``tests/conftest.py`` with ``pytest_plugins``. One redis-server serves the whole
session; each test gets its own logical database (``redis://.../<n>``, flushed first) so tests
never see each other's jobs, and workers started for a test only work on that test's queue.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from .redis_server import available, redis_server

WORKER_STOP_TIMEOUT = 10.0
"""Seconds a worker gets to stop after SIGTERM before its whole process tree is SIGKILLed."""

_DB_NUMBERS = itertools.cycle(range(1, 64))


# -- generic helpers ----------------------------------------------------------------------------
def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (via /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to ``pid`` and all its descendants (snapshotted first); return the pids."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


# -- redis ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server_url():
    """``redis://127.0.0.1:<port>`` of a Debian redis-server private to this test session."""
    url = os.environ.get("CONDA_STORE_TEST_REDIS_URL")
    if url:
        yield url.rstrip("/")
        return
    if not available():
        pytest.skip("redis-server is not installed")
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url):
    """A fresh, empty logical Redis database for one test."""
    import redis

    url = f"{redis_server_url}/{next(_DB_NUMBERS)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


# -- S3 -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint():
    """``http://127.0.0.1:<port>`` of an in-process moto S3 server (real HTTP, in memory)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# -- a configured store + worker processes ------------------------------------------------------
@dataclass
class ServiceEnv:
    """A config file, the ``CondaStore`` loaded from it, and the worker processes started for it."""

    config: Path
    store: object
    tmp: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_worker(self, *args: str, name: str | None = None) -> subprocess.Popen:
        name = name or f"w{len(self.workers)}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        logfile = open(self.tmp / f"worker-{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "conda_store_jupyter.worker", "--config", str(self.config),
             "--name", name, *args],
            stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
        )
        logfile.close()
        self.workers.append(proc)
        return proc

    def worker_logs(self) -> str:
        """Everything the workers of this env printed (for assertion messages)."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("worker-*.log")))

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                tree = [proc.pid, *descendants(proc.pid)]
                proc.send_signal(signal.SIGTERM)  # warm shutdown
                time.sleep(0.1)
                proc.send_signal(signal.SIGTERM)  # second signal: cold shutdown (kills the horse)
                try:
                    proc.wait(timeout=WORKER_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
                for pid in tree:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait()


def write_config(path: Path, **traits: object) -> Path:
    """A config file with these ``CondaStore`` traits (see :mod:`conda_store_jupyter.testing.config`)."""
    from conda_store_jupyter.testing.config import write_config as write

    return write(path, traits)


@pytest.fixture
def service_factory(tmp_path, redis_url, local_channel, package_cache_dir):
    """Make a ``ServiceEnv`` (config file + store) with trait overrides; stops its workers after."""
    from conda_store_jupyter.testing.config import local_channel_traits
    from conda_store_jupyter.worker.tasks import load_store

    made: list[ServiceEnv] = []

    def make(**overrides: object) -> ServiceEnv:
        root = tmp_path / f"svc{len(made)}"
        root.mkdir()
        traits = dict(
            store_directory=str(root / "store"),
            database_url=f"sqlite:///{root / 'conda-store.sqlite'}",
            redis_url=redis_url,
            **local_channel_traits(local_channel, package_cache_dir),
            build_artifacts=["LOCKFILE", "YAML", "CONDA_PACK"],
            build_timeout=300,
        )
        traits.update(overrides)
        config = write_config(root / "conda_store_config.py", **traits)
        env = ServiceEnv(config=config, store=load_store(str(config)), tmp=root)
        made.append(env)
        return env

    yield make
    for env in made:
        env.stop_workers()
        env.store.dispose()


def make_build(store, spec_text: str, namespace: str = "default") -> int:
    """Create namespace/specification/environment rows and a QUEUED build (what the API does)."""
    from sqlalchemy import select

    from conda_store_jupyter import orm
    from conda_store_jupyter.schema import BuildStatus, parse_specification

    spec = parse_specification(spec_text)
    with store.session() as db:
        ns = db.scalars(select(orm.Namespace).filter_by(name=namespace)).one_or_none()
        if ns is None:
            ns = orm.Namespace(name=namespace)
            db.add(ns)
            db.flush()
        row = db.scalars(select(orm.Specification).filter_by(sha256=spec.sha256)).one_or_none()
        if row is None:
            row = orm.Specification(name=spec.name, spec=spec.to_environment_dict(), sha256=spec.sha256)
            db.add(row)
            db.flush()
        env = db.scalars(select(orm.Environment).filter_by(namespace_id=ns.id, name=spec.name)).one_or_none()
        if env is None:
            env = orm.Environment(namespace_id=ns.id, name=spec.name, description=spec.description)
            db.add(env)
            db.flush()
        build = orm.Build(specification_id=row.id, environment_id=env.id, status=BuildStatus.QUEUED)
        db.add(build)
        db.flush()
        return build.id
