"""RQ job: the conda-pack archive of a COMPLETED build (the CONDA_PACK artifact).

Runs after the build job, on the artifacts queue, like the image (:mod:`.images`): the build is
COMPLETED and usable before its archive exists, and a failed archive never turns it FAILED. The
archive's state is its ``build_artifact`` row (PENDING from the COMPLETED commit, then READY or
FAILED with the reason, which also ends up at the end of the build's log).

Idempotent: a build whose archive is READY is left alone; the archive is packed into a private
scratch directory and uploaded under the build's canonical key, so a job re-run after its worker
was killed simply starts over.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import TYPE_CHECKING

from .. import orm
from ..exceptions import ArtifactError, CondaStoreError
from ..schema import BuildArtifactType, BuildStatus
from ..storage.base import artifact_key
from . import lifecycle
from .artifacts import append_build_log, failure_reason, keep_alive

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

WORK_DIR_NAME = ".archive-work"
"""Scratch directory under the store (``<store>/.archive-work/<build id>/``): one per build, emptied
when a job starts, so what a killed job left is removed by the job that replaces it."""

CONTENT_TYPE = "application/gzip"


def build_pack_artifact(build_id: int, config_path: str | None = None) -> str | None:
    """Pack, upload and record the archive of build ``build_id``; returns its storage key, or None
    (not COMPLETED, deleted, or the archive failed: the reason is on its row and in the log)."""
    from .tasks import load_store  # the same loading rules as the build job

    store = load_store(config_path)
    try:
        return pack_for_build(store, int(build_id))
    finally:
        store.dispose()


def pack_for_build(store: "CondaStore", build_id: int) -> str | None:
    """:func:`build_pack_artifact` on an already loaded store (tests and embedded workers)."""
    kind = BuildArtifactType.CONDA_PACK
    with store.session() as db:
        build = db.get(orm.Build, build_id)
        if build is None:
            log.warning("archive job: build %s does not exist", build_id)
            return None
        existing = build.artifact(kind)
        if existing is not None:
            return existing.key
        if build.status is not BuildStatus.COMPLETED or build.deleted_on is not None:
            log.info("archive job: build %s is %s%s; no archive", build_id, build.status.value,
                     " (deleted)" if build.deleted_on else "")
            return None
        prefix = build.prefix_path(store.store_path)
        key = artifact_key(kind, build.build_key)

    start = time.perf_counter()
    scratch = store.store_path / WORK_DIR_NAME / str(int(build_id))
    shutil.rmtree(scratch, ignore_errors=True)  # a killed earlier job's partial archive
    with keep_alive(store, build_id, kind):
        try:
            size = _pack_and_upload(store, prefix, scratch, key)
        except Exception as exc:  # noqa: BLE001 - any failure leaves a usable build without an archive
            reason = failure_reason(exc)
            if isinstance(exc, CondaStoreError):
                log.warning("archive of build %s failed: %s", build_id, reason)
            else:
                log.error("archive of build %s failed: %s", build_id, reason, exc_info=True)
            lifecycle.artifact_failed(store, build_id, kind, reason)
            _log(store, build_id, start, f"ARCHIVE FAILED: {reason}")
            return None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        recorded = lifecycle.artifact_ready(store, build_id, kind, key)  # before the alive key goes
    if not recorded:  # deleted meanwhile: the purge may already have run, so remove what we added
        store.storage.delete(key)
        return None
    _log(store, build_id, start, f"ARCHIVE READY: {size / 1e6:.1f} MB")
    return key


def _pack_and_upload(store: "CondaStore", prefix, scratch, key: str) -> int:
    from ..builder.pack import pack_prefix

    if not (prefix / "conda-meta").is_dir():
        raise ArtifactError(f"the build prefix {prefix} is gone (deleted or never installed)")
    scratch.mkdir(parents=True, exist_ok=True)
    archive = pack_prefix(prefix, scratch / "environment.tar.gz", int(store.conda_pack_compress_level))
    try:
        store.storage.put_file(key, archive, content_type=CONTENT_TYPE)
    except Exception as exc:  # noqa: BLE001 - a storage failure is the archive's, with its reason
        raise ArtifactError(f"storing the conda-pack archive failed: {type(exc).__name__}: {exc}") from exc
    return archive.stat().st_size


def _log(store: "CondaStore", build_id: int, start: float, last: str) -> None:
    """The archive's lines at the end of the build log (its outcome last, as a build's status is)."""
    try:
        append_build_log(store, build_id, ["", "-- conda-pack",
                                           f"== conda-pack: {time.perf_counter() - start:.3f} s", last])
    except Exception:  # noqa: BLE001 - the state is recorded; the log line is a convenience
        log.exception("archive of build %s: could not append to its log", build_id)
