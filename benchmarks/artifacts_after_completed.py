"""How long after COMPLETED are a build's conda-pack archive and image ready? (target: both <= 2 s)

    .venv/bin/python benchmarks/artifacts_after_completed.py [--builds 7] [--workers 2]

Real redis-server, real ``conda-store-worker`` processes (two by default, as ``--standalone``
starts), the default artifacts (lockfile, YAML, archive, image on the host runtime base), the local
test channel and a warm package cache. One warm-up build (fills the package cache and the shared
image base), then ``--builds`` builds of ``python 3.11.* + six`` one after the other. Each is
polled in the database (the source of truth) every 10 ms: the moment it is COMPLETED, the moment
its CONDA_PACK row is READY, the moment its DOCKER_MANIFEST row is READY. Then, side by side in
the same run, a raw ``conda_pack.pack`` of that same prefix in this process (same compression
level): the floor any archive job has to pay. Prints the median delays after COMPLETED, the raw
pack time and the difference (what the job system adds), and the median submit -> COMPLETED.
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
from conda_store_jupyter.worker.queue import BuildQueue  # noqa: E402
from tests.fixtures_service import ServiceEnv, make_build  # noqa: E402
from tests.processes import wait_for  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402

SPEC = "name: {name}\ndependencies:\n  - python 3.11.*\n  - six\n"
POLL = 0.01
TIMEOUT = 600.0


def one_build(env: ServiceEnv, name: str) -> dict[str, float]:
    from conda_store_jupyter import orm
    from conda_store_jupyter.schema import ArtifactStatus, BuildArtifactType, BuildStatus

    store = env.store
    build_id = make_build(store, SPEC.format(name=name))
    t0 = time.monotonic()
    BuildQueue(store).enqueue_build(build_id)
    seen: dict[str, float] = {}
    deadline = t0 + TIMEOUT
    while len(seen) < 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"build {build_id} not done: {seen}\n{env.worker_logs()[-3000:]}")
        with store.session() as db:
            build = db.get(orm.Build, build_id)
            now = time.monotonic()
            if build.status in (BuildStatus.FAILED, BuildStatus.CANCELED):
                raise RuntimeError(f"build {build_id} {build.status.value}: {build.status_info}")
            if build.status is BuildStatus.COMPLETED:
                seen.setdefault("completed", now)
            for kind, label in ((BuildArtifactType.CONDA_PACK, "archive"), (BuildArtifactType.DOCKER_MANIFEST, "image")):
                row = build.artifact_state(kind)
                if row is not None and row.status is ArtifactStatus.FAILED:
                    raise RuntimeError(f"build {build_id}: {label} FAILED: {row.reason}")
                if row is not None and row.status is ArtifactStatus.READY:
                    seen.setdefault(label, now)
        time.sleep(POLL)
    return {"submit->completed": seen["completed"] - t0, "archive": seen["archive"] - seen["completed"],
            "image": seen["image"] - seen["completed"],
            "both": max(seen["archive"], seen["image"]) - seen["completed"], "raw pack": raw_pack(store, build_id)}


def raw_pack(store, build_id: int) -> float:
    """Seconds of a bare ``conda_pack.pack`` of the build's prefix (what the archive job wraps)."""
    import shutil

    from conda_store_jupyter import orm
    from conda_store_jupyter.builder.pack import pack_prefix

    with store.session() as db:
        prefix = db.get(orm.Build, build_id).prefix_path(store.store_path)
    out = Path(tempfile.mkdtemp(prefix="bench-raw-pack-"))
    try:
        t0 = time.perf_counter()
        pack_prefix(prefix, out / "env.tar.gz", int(store.conda_pack_compress_level))
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from conda_store_jupyter.testing.channel import build_channel, cache_root
    from conda_store_jupyter.worker.tasks import load_store

    channel = build_channel(cache_root() / "channel")
    package_cache = cache_root() / "pkgs"
    with redis_server() as redis_url:
        root = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
        config = write_config(root / "conda_store_config.py", dict(
            store_directory=str(root / "store"), database_url=f"sqlite:///{root / 'conda-store.sqlite'}",
            redis_url=redis_url, **local_channel_traits(channel, package_cache),
            build_artifacts=["LOCKFILE", "YAML", "CONDA_PACK", "DOCKER_MANIFEST"],
        ))
        env = ServiceEnv(config=config, store=load_store(str(config)), tmp=root)
        try:
            for _ in range(args.workers):
                env.start_worker("--reconcile-interval", "0")
            wait_for(lambda: len(env.store.redis.smembers("rq:workers")) >= args.workers, 60, "the workers")
            one_build(env, "warmup")
            runs = [one_build(env, f"env-{i:02d}") for i in range(args.builds)]
        finally:
            env.stop_workers()
            env.store.dispose()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"{args.builds} builds of python + six, {args.workers} workers, medians:")
    print(f"  submit -> COMPLETED          {med['submit->completed']:.3f} s")
    print(f"  COMPLETED -> archive READY   {med['archive']:.3f} s")
    print(f"  COMPLETED -> image READY     {med['image']:.3f} s")
    print(f"  COMPLETED -> both READY      {med['both']:.3f} s   (target <= 2 s: {'met' if med['both'] <= 2 else 'NOT met'})")
    print(f"  raw conda-pack, same prefix  {med['raw pack']:.3f} s   (archive delay - raw pack: "
          f"{med['archive'] - med['raw pack']:+.3f} s)")
    print(f"  load average during the run  {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
