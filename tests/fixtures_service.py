"""Fixtures for the queue/worker/storage tests: a real redis-server, moto S3, worker processes.

Registered in ``tests/conftest.py`` with ``pytest_plugins``. One redis-server serves the whole
session; each test gets its own logical database (``redis://.../<n>``, flushed first) so tests
never see each other's jobs, and workers started for a test only work on that test's queue.

Also the build helpers several test modules share: build rows (queued or completed), waiting on a
build's status, and :class:`HangingIndex` (the ``hanging_index`` fixture) for builds that must
stay running.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.schema import BuildArtifactType, BuildStatus
from conda_store_jupyter.storage.base import artifact_key
from conda_store_jupyter.worker.logs import read_log

from .processes import descendants, kill_tree, wait_for  # noqa: F401 - re-exported for the tests
from .redis_server import available, redis_server

WORKER_STOP_TIMEOUT = 10.0
"""Seconds a worker gets to stop after SIGTERM before its whole process tree is SIGKILLed."""

_DB_NUMBERS = itertools.cycle(range(1, 64))


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


@pytest.fixture
def service_factory(tmp_path, redis_url, local_channel, package_cache_dir):
    """Make a ``ServiceEnv`` (config file + store) with trait overrides; stops its workers after."""
    from conda_store_jupyter.testing.config import local_channel_traits, write_config
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
        config = write_config(root / "conda_store_config.py", traits)
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

    from conda_store_jupyter.schema import parse_specification

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


def completed_build(store, env_name: str, specs: list[str]) -> int:
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


# -- builds that hang in their pip stage; waiting on build status -------------------------------------
QUICK = "name: hi\ndependencies:\n  - hello\n"
QUICK2 = "name: hi\ndependencies:\n  - hello\n  - libgreet\n"
SLOW = "name: slow\ndependencies:\n  - python 3.11.*\n  - pip:\n    - tomli\n"

BUILD_DEADLINE = 120.0
"""Generous upper bound for one small build on a loaded CI machine."""


def work_queues(env, *queues: str) -> None:
    """Run an RQ worker (a real process) on ``queues`` of ``env``'s store until they are empty."""
    code = ("from rq import Queue, Worker; from conda_store_jupyter.worker.tasks import load_store;"
            f"s = load_store({str(env.config)!r}); Worker([Queue(q, connection=s.redis) for q in {list(queues)!r}],"
            " connection=s.redis).work(burst=True)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=BUILD_DEADLINE)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]


class HangingIndex:
    """A TCP server that accepts HTTP connections and never answers; tracks which are still open."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted = 0
        self.open = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/simple/"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    if not conn.recv(65536):
                        break
                except OSError:
                    break
        with self._lock:
            self.open -= 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hanging_index():
    server = HangingIndex()
    yield server
    server.close()


def status_of(store, build_id: int) -> tuple[BuildStatus, str | None]:
    with store.session() as db:
        build = db.get(orm.Build, build_id)
        return BuildStatus(build.status), build.status_info


def wait_status(store, build_id: int, *statuses: BuildStatus, timeout: float = BUILD_DEADLINE, env=None):
    def check():
        status, _ = status_of(store, build_id)
        return status in statuses

    try:
        wait_for(check, timeout, f"build {build_id} to become {[s.value for s in statuses]}")
    except AssertionError:
        logs = env.worker_logs()[-4000:] if env is not None else ""
        raise AssertionError(f"build {build_id} is {status_of(store, build_id)}; worker output:\n{logs}") from None
    return status_of(store, build_id)


def wait_in_pip_stage(store, build_id: int, env) -> list[str]:
    """Follow the live log until the build is installing its pip section (BUILDING all along)."""
    seen: list[str] = []
    state = {"after": "0-0"}

    def in_pip():
        lines, state["after"], _finished = read_log(store, build_id, state["after"])
        seen.extend(lines)
        return "-- pip" in seen and status_of(store, build_id)[0] == BuildStatus.BUILDING

    try:
        wait_for(in_pip, BUILD_DEADLINE, "the build to reach its pip stage")
    except AssertionError:
        raise AssertionError(f"log so far: {seen}\nworker output:\n{env.worker_logs()[-4000:]}") from None
    return seen


def build_row(store, build_id: int):
    with store.session() as db:
        build = db.get(orm.Build, build_id)
        _ = build.environment.namespace, build.specification, build.artifacts
        return build


# -- conda-store-server --standalone as a subprocess ------------------------------------------------
@dataclass
class StandaloneServer:
    """``conda-store-server --standalone`` in a subprocess (its own session), restartable on one store.

    ``token`` must be an admin token of the config (``predefined_tokens``)."""

    config: Path
    tmp: Path
    port: int
    token: str
    workers: int = 2
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.tmp / "server.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "conda-store-server"), "--standalone", f"--config={self.config}",
                 f"--port={self.port}", f"--workers={self.workers}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, start_new_session=True)
        wait_for(lambda: httpx.get(f"{self.url}/api/v1/", timeout=2).status_code == 200, 120,
                 "conda-store-server to answer", 0.2, proc=self.proc, log=log, ignore=httpx.HTTPError)

    def submit(self, spec: str, namespace: str = "team") -> int:
        resp = httpx.post(f"{self.url}/api/v1/specification/", json={"namespace": namespace, "specification": spec},
                          headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        assert resp.status_code == 200, resp.text
        return int(resp.json()["data"]["build_id"])

    def try_submit(self, spec: str, namespace: str = "team") -> int | None:
        """The build id, or None if the server does not accept it right now (down, 503)."""
        try:
            return self.submit(spec, namespace)
        except (httpx.HTTPError, AssertionError):
            return None

    def processes(self) -> dict[int, str]:
        """pid -> command name of every process the server started (and they started)."""
        return {p: proc_comm(p) for p in descendants(self.proc.pid)}

    def log(self) -> str:
        return (self.tmp / "server.log").read_text(errors="replace")[-4000:] + "".join(
            f"\n== {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted((self.tmp / "store" / ".logs").glob("*.log")))


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def proc_comm(pid: int) -> str:
    """The command name of a process ("?" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def proc_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
