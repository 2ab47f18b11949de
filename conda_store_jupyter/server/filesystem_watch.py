"""Who runs the filesystem sync (``api.filesystem``): exactly one ``conda-store-server`` at a time.

Why the server and not the workers: the sync only reads small files and submits builds through
the service layer, as ``POST /api/v1/specification/`` does; the server is the one process every
deployment has (``--standalone`` or with separate ``conda-store-worker`` hosts), while workers come
in any number and fork per job (they run no threads: ``worker/runner.py``). Builds still run on
the workers.

Why a lease: a deployment may run several servers behind a load balancer. Each server with
``watch_paths`` configured tries, every ``watch_interval``, to take or renew a Redis lease
(``SET NX PX`` under a compare-and-renew script); only the holder scans. If it dies, the lease
expires after ``LEASE_SECONDS`` and another server takes over. A server that loses the lease
forgets what it read, so it re-reads every file when it gets the lease back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from ..api.filesystem import FilesystemSync
from ..app import CondaStore
from .base import run_sync

log = logging.getLogger(__name__)

LEASE_KEY = "conda-store:filesystem-watch:lease"
LEASE_SECONDS = 10.0
"""How long a lease lasts unless renewed: the longest a dead holder's directories go unwatched."""

_TAKE_OR_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """A Redis lease held by at most one process (see the module docstring)."""

    def __init__(self, store: CondaStore, seconds: float = LEASE_SECONDS) -> None:
        self.store = store
        self.token = uuid.uuid4().hex
        self.ms = int(max(seconds, 3 * store.watch_interval) * 1000)

    def hold(self) -> bool:
        """Take the lease or renew ours; True while we hold it."""
        return bool(self.store.redis.eval(_TAKE_OR_RENEW, 1, LEASE_KEY, self.token, self.ms))

    def release(self) -> None:
        self.store.redis.eval(_RELEASE, 1, LEASE_KEY, self.token)


async def watch_forever(store: CondaStore) -> None:
    """Sync ``store.watch_paths`` every ``watch_interval`` while holding the lease; never raises
    (Redis or the database may be away for a while), stops when cancelled."""
    sync = FilesystemSync(store)
    lease = Lease(store)
    holding = False
    failing = False
    log.info("filesystem: watching %s for namespace %s", ", ".join(store.watch_paths), store.filesystem_namespace)
    try:
        while True:
            try:
                held = await run_sync(lease.hold)
                if held != holding:
                    log.info("filesystem: %s the watch lease", "took" if held else "lost")
                    if not held:
                        sync.forget()
                    holding = held
                if held:
                    await run_sync(sync.sync)
                if failing:
                    log.info("filesystem: watching again")
                failing = False
            except Exception as exc:  # noqa: BLE001 - keep watching once the outage is over
                if not failing:
                    log.warning("filesystem: sync failed, retrying every %.1f s: %s: %s",
                                store.watch_interval, type(exc).__name__, exc)
                failing = True
            await asyncio.sleep(store.watch_interval)
    finally:
        if holding:
            try:
                lease.release()  # let another server take over at once
            except Exception:  # noqa: BLE001 - it expires on its own
                pass


def start_watching(store: CondaStore) -> asyncio.Task | None:
    """Start :func:`watch_forever` on the running loop if ``watch_paths`` is configured."""
    if not store.watch_paths:
        return None
    return asyncio.get_running_loop().create_task(watch_forever(store), name="filesystem-watch")
