"""Races between the worker's jobs and the API, with a real redis-server and real worker processes.

Each test sets up the losing interleaving deterministically (the API acts before a worker is
started, or a state is forced in the database), then waits on conditions with deadlines.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conda_store_jupyter import api, orm
from conda_store_jupyter.schema import BuildStatus, parse_specification

from .fixtures_service import make_build, wait_for
from .test_worker import BUILD_DEADLINE, QUICK, build_row, status_of, wait_status


def _namespace(db, name: str = "default") -> orm.Namespace:
    return db.scalars(select(orm.Namespace).filter_by(name=name)).one()


# -- 1. delete, then re-create before the deletion job ran --------------------------------------
@pytest.mark.parametrize("scope", ["environment", "namespace"])
def test_recreated_before_the_delete_job_keeps_its_new_build(service_factory, scope):
    env = service_factory()
    store = env.store
    old = make_build(store, QUICK)
    store.queue.enqueue_build(old)
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
        store.queue.enqueue_delete_environment(env_id)
    else:
        store.queue.enqueue_delete_namespace(ns_id)
    with store.session() as db:
        ns = api.create_namespace(db, "default", exist_ok=True) if scope == "namespace" else _namespace(db)
        new = api.submit_specification(db, ns, parse_specification(QUICK)).id
    store.queue.enqueue_build(new)

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
