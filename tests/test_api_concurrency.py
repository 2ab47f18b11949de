"""Concurrent requests against real servers, on SQLite and PostgreSQL.

- Get-or-create races: several requests creating into one new namespace (or the same new
  specification/environment) at once, through two server instances sharing one database (two
  replicas, as in production) — every request succeeds and each row exists once. This was a 500
  for all but one of them (IntegrityError).
- No blocking on the event loop: while the database is locked by another writer, a request
  waiting for it must not stop the server from answering others.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.api.namespaces import create_namespace
from conda_store_jupyter.auth.tokens import check_token
from conda_store_jupyter.server.testing import bearer, running_server, user_token

from .processes import wait_for

ADMIN = "admin-token-for-concurrency-tests"
CONCURRENCY = 6
ROUNDS = 4


def config(store_dir, database_url, redis_url, channel_url) -> Config:
    c = Config()
    c.CondaStore.store_directory = str(store_dir)
    c.CondaStore.database_url = database_url
    c.CondaStore.redis_url = redis_url
    c.CondaStore.conda_default_channels = [channel_url]
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "admin", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    return c


@pytest.fixture
def replicas(database_url, redis_url, tmp_path, local_channel):
    """Two servers (separate engines, threads, event loops) on one database and one store."""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(running_server(config(tmp_path / "store", database_url, redis_url,
                                                             local_channel.url)))
                   for _ in range(2)]
        yield servers


def at_once(calls) -> list[httpx.Response]:
    """Run ``calls`` (callables) in threads released together, so their transactions overlap."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def post(url: str, token: str, **body):
    return lambda: httpx.post(url, headers=bearer(token), json=body, timeout=60)


def test_concurrent_submissions_into_a_new_namespace(replicas):
    store = replicas[0].store
    for round_ in range(ROUNDS):
        namespace = f"team{round_}"
        # the same new specification and environment, and other environments, at once
        calls = [post(replicas[i % 2].api("specification/"), ADMIN, namespace=namespace,
                      specification=f"name: {'same' if i % 2 else f'env{i}'}\ndependencies: [python]")
                 for i in range(CONCURRENCY)]
        answers = at_once(calls)
        assert [r.status_code for r in answers] == [200] * CONCURRENCY, [r.text for r in answers]
        with store.session() as db:
            ns = db.scalars(select(orm.Namespace).where(orm.Namespace.name == namespace)).one()
            envs = db.scalars(select(orm.Environment.name).where(orm.Environment.namespace_id == ns.id)).all()
            assert sorted(envs) == sorted({"same"} | {f"env{i}" for i in range(0, CONCURRENCY, 2)})
            builds = db.scalar(select(func.count(orm.Build.id)).join(orm.Build.environment)
                               .where(orm.Environment.namespace_id == ns.id))
            assert builds == CONCURRENCY  # every submission is a build
    with store.session() as db:  # one specification row per distinct specification
        sha = db.scalars(select(orm.Specification.sha256)).all()
        assert len(sha) == len(set(sha))


def test_concurrent_namespace_creation_is_one_200_and_409s(replicas):
    for round_ in range(ROUNDS):
        url = lambda i: replicas[i % 2].api(f"namespace/new{round_}/")  # noqa: E731
        answers = at_once([lambda i=i: httpx.post(url(i), headers=bearer(ADMIN), timeout=60)
                           for i in range(CONCURRENCY)])
        codes = sorted(r.status_code for r in answers)
        assert codes == [200] + [409] * (CONCURRENCY - 1), [r.text for r in answers]
        assert {r.json()["message"] for r in answers if r.status_code == 409} == {
            f"namespace 'new{round_}' already exists"}


def test_concurrent_first_submissions_of_one_user(replicas):
    """The UI's case: a new user's first clicks both create their namespace (and its owner)."""
    token = user_token(replicas[0], "dora")
    answers = at_once([post(replicas[i % 2].api("specification/"), token,
                            specification=f"name: e{i}\ndependencies: [python]") for i in range(CONCURRENCY)])
    assert [r.status_code for r in answers] == [200] * CONCURRENCY, [r.text for r in answers]
    with replicas[0].store.session() as db:
        assert db.scalars(select(orm.Namespace.owner).where(orm.Namespace.name == "dora")).one() == "dora"


def thread_in(function) -> bool:
    """Is some thread of this process executing ``function`` right now?"""
    code = function.__code__
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code is code:
                return True
            frame = frame.f_back
    return False


def test_a_waiting_database_call_does_not_block_other_requests(tmp_path, redis_url, local_channel):
    """A write waiting for SQLite's lock (another process is writing) waits on the executor; the
    event loop keeps answering. Before, the handler blocked the loop for the whole wait."""
    db_path = tmp_path / "conda-store.sqlite"
    c = config(tmp_path / "store", f"sqlite:///{db_path}", redis_url, local_channel.url)
    with running_server(c) as server, httpx.Client(headers=bearer(ADMIN), timeout=60) as client:
        assert client.get(server.api("namespace/")).status_code == 200  # migrated, warmed up
        user = user_token(server, "ursula")  # never used yet: its first use records last_used
        locker = sqlite3.connect(db_path, timeout=1, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # holds the write lock, as a busy writer would
        try:
            with ThreadPoolExecutor(2) as pool:
                pending = pool.submit(client.post, server.api("namespace/locked/"))
                authenticating = pool.submit(httpx.get, server.api("permission/"), headers=bearer(user), timeout=60)
                # Both are inside the server, waiting for the lock (wherever they run).
                wait_for(lambda: thread_in(create_namespace) and thread_in(check_token), 30,
                         "the two writes to wait for the lock")
                assert not pending.done() and not authenticating.done()
                started = time.monotonic()
                for path in ("", "namespace/", "build/", "permission/"):
                    r = client.get(server.api(path), timeout=10)
                    assert r.status_code == 200, r.text
                answered = time.monotonic() - started
                assert not pending.done()  # still waiting for the lock while the others were served
                locker.execute("COMMIT")
                assert pending.result(timeout=60).status_code == 200
                assert authenticating.result(timeout=60).json()["data"]["username"] == "ursula"
        finally:
            locker.close()
    assert answered < 5, answered


def test_no_handler_touches_the_database_on_the_event_loop():
    """Cheap guard for the rule the test above checks in one case: every REST verb is a coroutine
    whose database work goes through ``in_db`` and whose Redis/storage calls go through
    ``run_sync``, never a direct session, queue or storage call."""
    import inspect
    import re as re_

    from conda_store_jupyter.server.app import HANDLER_MODULES
    from conda_store_jupyter.server.base import BaseHandler

    direct = re_.compile(r"\.session\(\)|(?:store\.queue|BuildQueue\([^)]*\))\.\w+\(|storage\.\w+\(")
    checked = []
    for module in HANDLER_MODULES:
        for _path, handler in module.HANDLERS:
            assert issubclass(handler, BaseHandler)
            for verb in ("get", "post", "put", "patch", "delete", "head"):
                method = handler.__dict__.get(verb)
                if method is None:
                    continue
                name, source = f"{handler.__name__}.{verb}", inspect.getsource(method)
                checked.append(name)
                assert not direct.search(source), f"{name}: {direct.search(source).group()}"
                if not inspect.iscoroutinefunction(method):  # runs on the loop: must do no I/O at all
                    assert not re_.search(r"self\.auth\.|in_db|run_sync|await", source), name
    assert len(checked) > 30
