"""RQ job: the Docker/OCI image of a COMPLETED build (the DOCKER_MANIFEST artifact).

Runs after the build job (enqueued on the artifacts queue), so a slow image never delays the
environment itself: the build is COMPLETED and usable before its image exists, and an image
failure never turns it FAILED. The image's own state is its DOCKER_MANIFEST row (PENDING from the
COMPLETED commit, then READY or FAILED, see :mod:`.lifecycle` and :mod:`.artifacts`); a failure's
reason goes to the end of the build's log and onto that row, which is how the registry tells a
puller "this build will not get an image" at once instead of waiting out its timeout.

The job is idempotent: a build that already has a DOCKER_MANIFEST is left alone, and blobs are
content-addressed and written once (see :mod:`conda_store_jupyter.builder.image`), so re-running it
after a crash costs one hash per layer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import orm
from ..exceptions import ArtifactError, CondaStoreError
from ..schema import BuildArtifactType, BuildStatus
from ..storage.base import blob_key
from . import lifecycle
from .artifacts import append_build_log, failure_reason, keep_alive

if TYPE_CHECKING:
    from ..app import CondaStore
    from ..builder.image import ImageManifest
    from ..builder.image_config import BaseImage

log = logging.getLogger(__name__)

SCRATCH = "scratch"
"""``default_docker_base_image`` meaning "no base" (Docker's name for the empty image)."""

WORK_DIR_NAME = ".image-work"
"""Scratch directory under the store: on the prefixes' filesystem, so conda-pack hardlinks."""


def build_image_artifact(build_id: int, config_path: str | None = None) -> str | None:
    """Build and record the image of build ``build_id``; returns the manifest digest, or None.

    None means no image was made: the build is not COMPLETED (deleted, failed, rebuilt over) or the
    image failed, in which case the reason is in the build's log and ``status_info``.
    """
    from .tasks import load_store  # the same loading rules as the build job

    store = load_store(config_path)
    try:
        return image_for_build(store, int(build_id))
    finally:
        store.dispose()


def image_for_build(store: "CondaStore", build_id: int) -> str | None:
    """:func:`build_image_artifact` on an already loaded store (tests and embedded workers)."""
    with store.session() as db:
        build = db.get(orm.Build, build_id)
        if build is None:
            log.warning("image job: build %s does not exist", build_id)
            return None
        existing = build.artifact(BuildArtifactType.DOCKER_MANIFEST)
        if existing is not None:
            return "sha256:" + existing.key.rsplit("/", 1)[-1]
        if build.status is not BuildStatus.COMPLETED or build.deleted_on is not None:
            log.info("image job: build %s is %s%s; no image", build_id, build.status.value,
                     " (deleted)" if build.deleted_on else "")
            return None
        prefix = build.prefix_path(store.store_path)
    # Alive until the outcome is recorded: repair queues a silent job's artifact again.
    with keep_alive(store, build_id, BuildArtifactType.DOCKER_MANIFEST):
        return _make_image(store, build_id, prefix)


def _make_image(store: "CondaStore", build_id: int, prefix: Path) -> str | None:
    lines = ["", "-- docker image"]
    start = time.perf_counter()
    try:
        image = _build(store, prefix)
    except Exception as exc:  # noqa: BLE001 - any failure leaves a usable build without an image
        reason = failure_reason(exc)
        if isinstance(exc, CondaStoreError):
            log.warning("image of build %s failed: %s", build_id, reason)
        else:  # a bug or an environment problem: the traceback is for operators, not build readers
            log.error("image of build %s failed: %s", build_id, reason, exc_info=True)
        # The image's outcome is the log's last line, as a build's final status is.
        lines += [f"== docker image: {time.perf_counter() - start:.3f} s", f"IMAGE FAILED: {reason}"]
        append_build_log(store, build_id, lines)
        lifecycle.image_failed(store, build_id, reason)
        return None

    lines += _describe(image)
    lines.append(f"== docker image: {time.perf_counter() - start:.3f} s")
    recorded = lifecycle.image_ready(store, build_id, blob_key(image.digest))
    lines.append(f"IMAGE READY: {image.digest}" if recorded else
                 "IMAGE NOT RECORDED: the build was deleted while its image was built")
    append_build_log(store, build_id, lines)
    return image.digest if recorded else None


def _build(store: "CondaStore", prefix: Path) -> "ImageManifest":
    from ..builder.image import build_image

    if not (prefix / "conda-meta").is_dir():
        raise ArtifactError(f"the build prefix {prefix} is gone (deleted or never installed)")
    work_dir = store.store_path / WORK_DIR_NAME
    work_dir.mkdir(parents=True, exist_ok=True)
    return build_image(prefix, store.storage, work_dir=work_dir, base=_base_image(store, work_dir))


def _base_image(store: "CondaStore", work_dir: Path) -> "BaseImage | None":
    """The base ``default_docker_base_image`` names: the host runtime base (empty), none
    (``scratch``), or an image pulled from a registry. Either base is stored once and shared."""
    setting = store.default_docker_base_image.strip()
    if setting == SCRATCH:
        return None
    if not setting:
        from ..builder.host_base import host_runtime_base

        return host_runtime_base(store.storage, store.docker_host_base_packages, work_dir=work_dir)
    from ..builder.base_image import resolve_base_image

    return resolve_base_image(setting, store.storage, work_dir=work_dir,
                              credentials=store.docker_base_image_credentials,
                              insecure=store.docker_base_image_insecure)


def _describe(image: "ImageManifest") -> list[str]:
    """Log lines: the image, then one line per layer (biggest reuse questions answered here)."""
    new = image.total_bytes - image.reused_bytes
    lines = [
        f"image {image.digest}: {len(image.layers)} layers, {image.total_bytes / 1e6:.1f} MB compressed; "
        f"{image.reused_bytes / 1e6:.1f} MB ({100 * image.reused_share:.0f} %) reused from earlier images, "
        f"{new / 1e6:.1f} MB new",
    ]
    for layer in image.layers:
        what = " ".join(layer.packages) if layer.packages else layer.created_by
        lines.append(f"  {layer.digest[:19]} {layer.size / 1e6:8.2f} MB {'reused' if layer.reused else 'new   '} {what}")
    timings = " ".join(f"{k}={v:.2f}s" for k, v in image.timings.items())
    if timings:
        lines.append(f"  timings: {timings}")
    return lines
