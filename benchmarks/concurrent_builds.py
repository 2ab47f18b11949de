"""Throughput of the build queue: N builds on 1 worker vs 2 workers (real redis-server, real workers).

    .venv/bin/python benchmarks/concurrent_builds.py [--builds 20] [--spec python|quick] [--workers 1 2]

Each round gets a fresh store and SQLite database, starts its `conda-store-worker` processes and
waits until they are idle, then enqueues all builds at once and measures the wall time until the
last one has ended (polling the database, the source of truth). Builds use the local test channel
(built and cached under .cache/ like the test suite) and the shared package cache, so after the
first round every package is already extracted and the figures measure the queue + pipeline, not
downloads. The last line is the throughput ratio (2 workers / 1 worker).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from conda_store_jupyter.testing.config import local_channel_traits, write_config  # noqa: E402
from conda_store_jupyter.worker.queue import BuildQueue
from tests.fixtures_service import ServiceEnv, make_build  # noqa: E402
from tests.processes import wait_for  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402

SPECS = {
    "python": "name: {name}\ndependencies:\n  - python 3.11.*\n  - six\n",
    "quick": "name: {name}\ndependencies:\n  - hello\n",
}
POLL = 0.1
ROUND_TIMEOUT = 1800.0


def run_round(redis_url: str, channel, package_cache: Path, workers: int, builds: int, spec: str) -> dict:
    from sqlalchemy import func, select

    from conda_store_jupyter import orm
    from conda_store_jupyter.schema import BuildStatus
    from conda_store_jupyter.worker.tasks import load_store

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    root = Path(tempfile.mkdtemp(prefix=f"bench-{workers}w-"))
    config = write_config(root / "conda_store_config.py", dict(
        store_directory=str(root / "store"),
        database_url=f"sqlite:///{root / 'conda-store.sqlite'}",
        redis_url=redis_url,
        **local_channel_traits(channel, package_cache),
        build_artifacts=["LOCKFILE", "YAML", "CONDA_PACK"],
    ))
    env = ServiceEnv(config=config, store=load_store(str(config)), tmp=root)
    store = env.store
    ids = [make_build(store, SPECS[spec].format(name=f"env-{i:02d}")) for i in range(builds)]
    try:
        for _ in range(workers):
            env.start_worker("--reconcile-interval", "0")
        try:  # registered = ready to take jobs
            wait_for(lambda: len(store.redis.smembers("rq:workers")) >= workers, 60, "the workers to start", POLL)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}:\n{env.worker_logs()[-3000:]}") from None
        t0 = time.monotonic()
        for build_id in ids:
            BuildQueue(store).enqueue_build(build_id)
        finished = [BuildStatus.COMPLETED, BuildStatus.FAILED, BuildStatus.CANCELED]

        def all_finished() -> bool:
            with store.session() as db:
                return db.scalar(select(func.count()).select_from(orm.Build)
                                 .where(orm.Build.status.in_(finished))) == builds

        wait_for(all_finished, ROUND_TIMEOUT, "the round's builds to finish", POLL)
        wall = time.monotonic() - t0
        with store.session() as db:
            rows = db.scalars(select(orm.Build)).all()
            failed = [b.id for b in rows if b.status != BuildStatus.COMPLETED]
            durations = [(b.ended_on - b.started_on).total_seconds() for b in rows if b.started_on]
    finally:
        env.stop_workers()
        store.dispose()
    if failed:
        raise RuntimeError(f"builds {failed} did not complete:\n{env.worker_logs()[-3000:]}")
    return {"workers": workers, "wall": wall, "per_min": 60 * builds / wall,
            "mean_build": statistics.mean(durations), "p95_build": sorted(durations)[int(0.95 * (len(durations) - 1))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=20)
    parser.add_argument("--spec", choices=sorted(SPECS), default="python")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from conda_store_jupyter.testing.channel import build_channel, cache_root

    cache = cache_root()
    channel = build_channel(cache / "channel")
    package_cache = cache / "pkgs"
    package_cache.mkdir(parents=True, exist_ok=True)
    print(f"{args.builds} builds of spec {args.spec!r}; host: {os.cpu_count()} CPUs")
    results = []
    with redis_server() as url:
        # Warm-up: one build so the package cache and repodata cache are populated for every round.
        run_round(f"{url}/1", channel, package_cache, 1, 1, args.spec)
        for n in args.workers:
            r = run_round(f"{url}/1", channel, package_cache, n, args.builds, args.spec)
            results.append(r)
            print(f"{n} worker(s): {r['wall']:7.2f} s wall, {r['per_min']:6.1f} builds/min, "
                  f"build {r['mean_build']:.2f} s mean / {r['p95_build']:.2f} s p95")
    if len(results) >= 2:
        print(f"throughput ratio ({results[-1]['workers']} vs {results[0]['workers']} workers): "
              f"{results[-1]['per_min'] / results[0]['per_min']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
