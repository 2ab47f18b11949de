"""``conda-store-worker``: an RQ worker on the conda-store queues that also runs the reconciler.

    conda-store-worker [--config conda_store_config.py] [--burst] [--name NAME]

Loads the same config file as the server (``c.CondaStore.*``), checks Redis and the database
before taking jobs (a clear one-line error, no traceback, if either is unreachable), then works
the queues in priority order: deletions, builds, artifacts. Run as many as you like, on any host
that shares the store directory and reaches the same Redis, database and storage.

The worker is one thread that forks a work horse per job (``runner.BuildWorker``), which forks the
build child from it (``zygote.py``: the worker has imported what a build needs once); it survives
Redis restarts (it waits for Redis to come back and carries on) and stops on SIGTERM: the first
asks for a warm shutdown (after the current job), a second one at least a second later stops
the current job, whose build is queued again.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from ..urls import redact_url
from .queue import CONFIG_ENV, MIGRATED_ENV, WORKER_QUEUES
from .reconcile import RECONCILE_INTERVAL, STALE_AFTER

REDIS_WAIT_MAX = 5.0
"""Longest pause (s) between two attempts to reach Redis again after the worker lost it."""

log = logging.getLogger("conda_store_jupyter.worker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="conda-store-worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", "-c", default=os.environ.get(CONFIG_ENV),
                   help="traitlets config file (default: $CONDA_STORE_CONFIG)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--name", default=None, help="worker name (default: RQ's host.pid-based name)")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER,
                   help="seconds without a heartbeat before the reconciler fails a BUILDING build")
    p.add_argument("--reconcile-interval", type=float, default=RECONCILE_INTERVAL,
                   help="seconds between reconciler runs (0 disables the reconciler in this worker)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING...")
    return p.parse_args(argv)


def fail(message: str) -> int:
    print(f"conda-store-worker: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter on every start
    if args.config:
        args.config = os.path.abspath(args.config)
        os.environ[CONFIG_ENV] = args.config  # jobs and build children load the same file
    import redis
    from rq import Queue

    from .tasks import load_store

    try:
        store = load_store(args.config)
    except Exception as exc:  # noqa: BLE001 - config errors: one clear line
        return fail(f"cannot load config {args.config}: {type(exc).__name__}: {exc}")
    if not store.redis_url:
        return fail("CondaStore.redis_url is not set; point it at a Redis server (redis://host:6379/0)")
    try:
        store.redis.ping()
    except redis.exceptions.RedisError as exc:
        return fail(f"cannot reach Redis at {redact_url(store.redis_url)}: {exc}")
    try:
        store.engine  # applies migrations once here, not in every job
    except Exception as exc:  # noqa: BLE001
        return fail(f"cannot open the database {redact_url(store.database_url)}: {type(exc).__name__}: {exc}")
    os.environ[MIGRATED_ENV] = "1"  # jobs (forked work horses) and build processes skip alembic
    store.upgrade_database = False  # the same for the jobs that use this store (zygote.adopt)

    from sqlalchemy.orm import configure_mappers

    from .runner import BuildWorker

    # Fork safety (see runner.py): configure the mappers once, before any fork.
    configure_mappers()
    # The zygote (see zygote.py): import once what every build needs, so the work horses and
    # build children forked from this process start with it loaded.
    from .zygote import adopt, modules_for, preload

    try:
        log.info("preloaded the build modules in %.2f s", preload(modules_for(store)))
    except RuntimeError as exc:
        return fail(str(exc))
    # Jobs use this store (no config, engine or compiled statements made again per job); a forked
    # work horse never reuses this process's pooled DB connections (the reconciler's), Redis
    # connections or storage client.
    adopt(store, args.config)
    from .warmup import warm_statement_cache

    warmed = warm_statement_cache(store)  # so that no build compiles its SQL again (warmup.py)
    if warmed is not None:
        log.info("warmed the SQL statement cache in %.2f s", warmed)
    queues = [Queue(name, connection=store.redis) for name in WORKER_QUEUES]
    run = 0
    while True:
        # A fresh worker (and name) per run: the previous one may not have been able to
        # deregister from a Redis that went away.
        name = args.name if run == 0 or args.name is None else f"{args.name}.{run}"
        worker = BuildWorker(queues, connection=store.redis, name=name, store=store,
                             interval=args.reconcile_interval, stale_after=args.stale_after)
        try:
            worker.work(burst=args.burst, logging_level=args.log_level.upper(), with_scheduler=False)
        except redis.exceptions.ConnectionError as exc:  # raised by RQ's teardown with Redis gone
            log.warning("lost the connection to Redis at %s: %s", redact_url(store.redis_url), exc)
        if args.burst or worker.stop_signaled:
            return 0
        # RQ's handlers stay installed after work(); here a SIGTERM simply ends the process.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # RQ's loop gave up (Redis went away at a moment it does not retry): wait and carry on.
        log.warning("the worker loop ended without a stop request; waiting for Redis to start again")
        _wait_for_redis(store)
        run += 1


def _wait_for_redis(store) -> None:
    import redis

    pause = 0.5
    while True:
        try:
            store.redis.ping()
            return
        except redis.exceptions.RedisError:
            time.sleep(pause)
            pause = min(pause * 2, REDIS_WAIT_MAX)


if __name__ == "__main__":
    sys.exit(main())
