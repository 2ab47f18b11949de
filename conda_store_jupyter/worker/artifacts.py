"""What every artifact job (conda-pack archive, image) shares: queueing, liveness, log lines, reasons.

A build is COMPLETED — and usable: prefix, lockfile, pinned YAML — before any of its
``POST_BUILD_ARTIFACTS`` exists. Their rows are PENDING from the COMPLETED commit on
(``lifecycle.complete``); :func:`queue_pending_artifacts` puts one job per PENDING row on the
artifacts queue (``tasks.finish_completed``, and repair for a lost one). Each job ends its row READY
or FAILED with a reason; the build itself never changes state because of an artifact.

Liveness: while a job works it refreshes ``conda-store:artifact:<build>:<type>:alive`` (a key with a
short TTL, so on Redis's own clock), which is how repair tells a running job from one whose worker
was SIGKILLed (RQ still calls that job "started"). A lost job is queued again, a few times at most
(:data:`MAX_REQUEUES`), then its artifact is FAILED: never PENDING forever.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Iterator, Sequence

from .. import orm
from ..exceptions import CondaStoreError
from ..schema import ArtifactStatus, BuildArtifactType

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

ALIVE_KEY = "conda-store:artifact:{build_id}:{kind}:alive"
"""Exists while the job making that artifact runs (refreshed every ``ALIVE_INTERVAL``)."""

ALIVE_INTERVAL = 2.0
"""Seconds between refreshes of a running artifact job's alive key."""

ALIVE_TTL = 10
"""TTL (s) of the alive key: a job silent this long is dead (its worker was killed)."""

REQUEUES_KEY = "conda-store:artifact:{build_id}:{kind}:requeues"
"""How often repair queued that artifact's job again (the job was lost)."""

MAX_REQUEUES = 3
"""Lost jobs of one artifact queued again at most this often; then the artifact is FAILED."""

LOG_LOCK_KEY = "conda-store:build:{build_id}:log-append"
"""Redis lock around the read-modify-write of a build's stored log (pack and image jobs append to
it, possibly at the same time on two workers)."""


def alive_key(build_id: int, kind: BuildArtifactType) -> str:
    return ALIVE_KEY.format(build_id=int(build_id), kind=BuildArtifactType(kind).value.lower())


def requeues_key(build_id: int, kind: BuildArtifactType) -> str:
    return REQUEUES_KEY.format(build_id=int(build_id), kind=BuildArtifactType(kind).value.lower())


@contextlib.contextmanager
def keep_alive(store: "CondaStore", build_id: int, kind: BuildArtifactType) -> Iterator[None]:
    """Refresh the artifact's alive key while the body runs (a thread in the work horse, which
    forks nothing: see ``runner.py`` for why the worker itself runs no threads)."""
    key = alive_key(build_id, kind)
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # Redis away: repair waits for the TTL anyway
                store.redis.set(key, "1", ex=ALIVE_TTL)
            if stop.wait(ALIVE_INTERVAL):
                return

    beat_thread = threading.Thread(target=beat, name=f"alive-{key}", daemon=True)
    beat_thread.start()
    try:
        yield
    finally:
        stop.set()
        beat_thread.join(timeout=5)
        with contextlib.suppress(Exception):
            store.redis.delete(key)


def queue_pending_artifacts(store: "CondaStore", build_id: int, kinds: Sequence[BuildArtifactType] | None = None
                            ) -> list[BuildArtifactType]:
    """Queue the job of every PENDING artifact of the build (or of ``kinds``); idempotent (unique
    job ids). Returns the artifacts whose job this call queued."""
    from .queue import BuildQueue

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None:
            return []
        pending = [a.artifact_type for a in build.artifacts if a.status is ArtifactStatus.PENDING
                   and (kinds is None or a.artifact_type in kinds)]
    order = {kind: i for i, kind in enumerate((BuildArtifactType.CONDA_PACK, BuildArtifactType.DOCKER_MANIFEST))}
    queued = []
    for kind in sorted(pending, key=lambda k: order.get(k, 99)):  # the archive first: run and kernels need it
        if BuildQueue(store).enqueue_artifact_once(build_id, kind) is not None:
            queued.append(kind)
    return queued


def failure_reason(exc: Exception) -> str:
    """One line for the build log and the artifact's ``reason``, both readable by every user of the
    build. Unexpected errors name only their type and (redacted, shortened) message: their
    traceback (paths, code, locals of the worker) goes to the worker's own log."""
    from ..urls import redact_text

    text = redact_text(" ".join(str(exc).split()))
    if isinstance(exc, CondaStoreError):
        return text
    if len(text) > 300:
        text = text[:299] + "…"
    return f"internal error: {type(exc).__name__}{': ' + text if text else ''} (details in the worker log)"


def append_build_log(store: "CondaStore", build_id: int, lines: list[str]) -> None:
    """Append ``lines`` to the stored LOGS artifact (the build job wrote it when the build ended).

    Read-modify-write under a per-build Redis lock: the archive and image jobs of one build may
    finish at the same moment on two workers. A missing log (older build, storage wiped) is started
    afresh. The upload happens outside any database transaction; a missing row is then added (or,
    if another writer added one meanwhile, left as it is).
    """
    from ..exceptions import NotFoundError
    from ..storage.base import artifact_key
    from . import lifecycle
    from .record import record_artifacts

    storage = store.storage
    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        if build is None:
            return
        key = build.log_key()
        has_row = build.artifact(BuildArtifactType.LOGS) is not None
        if key is None:
            key = artifact_key(BuildArtifactType.LOGS, build.build_key)
    lock = None
    try:
        lock = store.redis.lock(LOG_LOCK_KEY.format(build_id=int(build_id)), timeout=60, blocking_timeout=30)
        locked = lock.acquire()
    except Exception:  # noqa: BLE001 - no Redis (a store used in-process) or Redis away: append anyway
        locked = False
    try:
        try:
            text = storage.get_bytes(key).decode("utf-8", "replace")
        except (NotFoundError, FileNotFoundError):
            text = ""
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{line}\n" for line in lines)
        storage.put_bytes(key, text.encode("utf-8"), content_type=lifecycle.LOG_CONTENT_TYPE)
    finally:
        if locked:
            with contextlib.suppress(Exception):
                lock.release()
    if not has_row:
        with store.session() as db:
            record_artifacts(db, build_id, {BuildArtifactType.LOGS: key})
