"""Faults under load: builds keep arriving while Redis, the server or a worker is killed at random.

    .venv/bin/python benchmarks/faults.py [--mode standalone|external] [--builds 12] [--rounds 6] [--seed 1]

``standalone`` (default): ``conda-store-server --standalone`` (embedded Redis, 2 workers) in a
subprocess, builds submitted over the REST API. Each round submits its share of the builds,
waits a random 0.2-3 s and injects one fault; the faults come in a random order, every kind once
before any kind twice:

* ``redis``   kill -9 of the embedded redis-server (the server restarts it),
* ``server``  kill -9 of the server (its children get SIGTERM from the kernel), then started again,
* ``restart`` a graceful restart (SIGTERM, wait, start again),
* ``worker``  kill -9 of one worker process (the server restarts it).

``external``: a Debian redis-server without persistence (the worst case: a restart empties it)
and 2 ``conda-store-worker`` processes; builds are created in the database and enqueued as the
API does. Faults: ``redis`` (kill -9, started again empty on the same port) and ``worker``
(kill -9 of a worker, a new one started, as systemd would).

Recovery time of a fault = from the fault until a build started after it has COMPLETED again
(the service is doing useful work again; this includes one small build, ~1-3 s). Then it waits
for every build to end and prints: submitted, completed, lost (anything else: must be 0), and
the worst recovery time. Uses the local test channel and the shared package cache like the tests.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from conda_store_jupyter.testing.config import local_channel_traits, write_config  # noqa: E402
from conda_store_jupyter.worker.queue import BuildQueue
from tests.fixtures_service import ServiceEnv, StandaloneServer, make_build  # noqa: E402
from tests.processes import free_port, stop_process, wait_for  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

ADMIN = "faults-benchmark-admin-token-0123456789"
RECOVERY_TIMEOUT = 300.0
FINISH_TIMEOUT = 1800.0
POLL = 0.1


def spec(i: int) -> str:
    packages = ["hello"] if i % 2 else ["libgreet"]
    return f"name: env{i:03d}\ndependencies:\n" + "".join(f"  - {p}\n" for p in packages)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # orm.utcnow(): naive UTC


def completed_since(store, since: datetime) -> bool:
    """Has a build that started after ``since`` COMPLETED?"""
    from sqlalchemy import select

    from conda_store_jupyter import orm
    from conda_store_jupyter.schema import BuildStatus

    with store.session() as db:
        return db.scalar(select(orm.Build.id).where(orm.Build.status == BuildStatus.COMPLETED,
                                                    orm.Build.started_on > since).limit(1)) is not None


def statuses(store) -> dict[int, str]:
    from sqlalchemy import select

    from conda_store_jupyter import orm

    with store.session() as db:
        return {i: s.value for i, s in db.execute(select(orm.Build.id, orm.Build.status))}


class Standalone:
    faults = ("redis", "server", "restart", "worker")

    def __init__(self, root: Path, channel, package_cache: Path) -> None:
        from conda_store_jupyter.worker.tasks import load_store

        config = write_config(
            root / "conda_store_config.py",
            {"store_directory": str(root / "store"), **local_channel_traits(channel, package_cache),
             "build_artifacts": ["LOCKFILE", "YAML"]},
            AuthenticationBackend={"predefined_tokens": {
                ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "admin"}}},
        )
        self.server = StandaloneServer(config=config, tmp=root, port=free_port(), token=ADMIN)
        self.store = load_store(str(config))
        self.server.start()

    def submit(self, i: int) -> int:
        # A submission during a restart gets no answer: retry like a client would.
        return wait_for(lambda: self.server.try_submit(spec(i)), RECOVERY_TIMEOUT, "the server to accept a build", 0.2)

    def _children(self, name: str) -> list[int]:
        return [p for p, comm in self.server.processes().items() if comm.startswith(name)]

    def inject(self, fault: str) -> None:
        proc = self.server.proc
        if fault == "redis":
            os.kill(random.choice(self._children("redis-server")), signal.SIGKILL)
        elif fault == "worker":
            workers = [p for p in self._children("python") if _parent(p) == proc.pid]
            os.kill(random.choice(workers), signal.SIGKILL)
        elif fault == "server":
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            self.server.start()
        elif fault == "restart":
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            self.server.start()

    def close(self) -> None:
        if self.server.proc is not None:
            stop_process(self.server.proc, group=True)
        self.store.dispose()


class External:
    faults = ("redis", "worker")

    def __init__(self, root: Path, channel, package_cache: Path, workers: int = 2) -> None:
        from conda_store_jupyter.worker.tasks import load_store

        self.redis = RedisServer()
        self.redis.start()
        config = write_config(root / "conda_store_config.py", dict(
            store_directory=str(root / "store"), database_url=f"sqlite:///{root / 'conda-store.sqlite'}",
            redis_url=f"{self.redis.url}/0", **local_channel_traits(channel, package_cache),
            build_artifacts=["LOCKFILE", "YAML"],
        ))
        self.env = ServiceEnv(config=config, store=load_store(str(config)), tmp=root)
        self.store = self.env.store
        for _ in range(workers):
            self.env.start_worker("--reconcile-interval", "2")

    def submit(self, i: int) -> int:
        build_id = make_build(self.store, spec(i), namespace="team")
        wait_for(lambda: self._enqueue(build_id), RECOVERY_TIMEOUT, "Redis to accept the build", 0.2)
        return build_id

    def _enqueue(self, build_id: int) -> bool:
        from conda_store_jupyter.worker.queue import QueueUnavailableError

        try:
            BuildQueue(self.store).enqueue_build(build_id)
            return True
        except QueueUnavailableError:
            return False

    def inject(self, fault: str) -> None:
        if fault == "redis":
            self.redis.kill()
            self.redis.start()
        elif fault == "worker":
            alive = [w for w in self.env.workers if w.poll() is None]
            victim = random.choice(alive)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            self.env.start_worker("--reconcile-interval", "2")

    def close(self) -> None:
        self.env.stop_workers()
        self.store.dispose()
        self.redis.stop()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["standalone", "external"], default="standalone")
    parser.add_argument("--builds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)

    from conda_store_jupyter.testing.channel import build_channel, cache_root

    cache = cache_root()
    channel = build_channel(cache / "channel")
    package_cache = cache / "pkgs"
    package_cache.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"faults-{args.mode}-"))
    service = (Standalone if args.mode == "standalone" else External)(root, channel, package_cache)
    submitted: list[int] = []
    recoveries: list[tuple[str, float]] = []
    order: list[str] = []
    per_round = args.builds // args.rounds
    plan = [per_round] * (args.rounds - 1) + [args.builds - per_round * (args.rounds - 1)]
    try:
        for r, count in enumerate(plan):
            submitted += [service.submit(len(submitted)) for _ in range(count)]
            time.sleep(random.uniform(0.2, 3.0))  # a random point of the builds' lives
            if not order:
                order = random.sample(service.faults, len(service.faults))
            fault = order.pop()
            at, t0 = utcnow(), time.monotonic()
            service.inject(fault)
            # A probe build, so there is work after the fault even if the round's are done.
            submitted.append(service.submit(len(submitted)))
            wait_for(lambda: completed_since(service.store, at), RECOVERY_TIMEOUT, f"recovery from {fault}", POLL)
            recoveries.append((fault, time.monotonic() - t0))
            print(f"round {r + 1}: {fault:8s} recovered in {recoveries[-1][1]:5.1f} s", flush=True)
        wait_for(lambda: all(s in ("COMPLETED", "FAILED", "CANCELED") for s in statuses(service.store).values()),
                 FINISH_TIMEOUT, "every build to end", POLL)
        final = statuses(service.store)
    finally:
        service.close()
    completed = [b for b in submitted if final.get(b) == "COMPLETED"]
    lost = [b for b in submitted if final.get(b) != "COMPLETED"]
    worst = max(recoveries, key=lambda fr: fr[1])
    print(f"mode {args.mode}: builds submitted {len(submitted)}, completed {len(completed)}, lost {len(lost)}"
          + (f" {[(b, final.get(b)) for b in lost]}" if lost else ""))
    print(f"faults: {', '.join(f for f, _ in recoveries)}; worst fault -> recovery: {worst[1]:.1f} s ({worst[0]})")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
