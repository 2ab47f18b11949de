"""Serving build artifacts after the permission check (shared by builds.py and environments.py).

Local storage: the server streams the file itself, with Content-Type, Content-Length and
Content-Disposition, in chunks so a multi-GB conda-pack archive never sits in memory. S3: a 307
to a short-lived presigned URL, so bytes do not pass through the server and the URL is useless
soon after. There is deliberately no static ``/storage`` mount (upstream's is unauthenticated).

Every storage call runs on the default executor (:func:`run_sync`): with S3 each one is a
network round trip, and a slow bucket must delay only the download, not every other request.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

from .. import orm
from ..exceptions import ArtifactFailedError, ArtifactPendingError, NotFoundError
from ..schema import POST_BUILD_ARTIFACTS, ArtifactStatus, BuildArtifactType, BuildStatus
from .base import BaseHandler, run_sync

T = TypeVar("T")

PRESIGNED_URL_SECONDS = 60
"""Lifetime of a presigned artifact URL: long enough to start the download, no more."""

RETRY_AFTER = 1
"""``Retry-After`` (s) of a pending artifact: an archive takes about a second after COMPLETED."""

_NAMES = {BuildArtifactType.CONDA_PACK: "conda-pack archive", BuildArtifactType.DOCKER_MANIFEST: "image"}

_TYPES = {
    BuildArtifactType.LOCKFILE: ("text/yaml; charset=utf-8", "conda-lock.yml"),
    BuildArtifactType.YAML: ("text/yaml; charset=utf-8", "environment.yml"),
    BuildArtifactType.CONDA_PACK: ("application/gzip", "tar.gz"),
    BuildArtifactType.LOGS: ("text/plain; charset=utf-8", "log"),
}


def artifact_storage_key(build: orm.Build, kind: BuildArtifactType) -> str | None:
    """The recorded key of ``kind`` for ``build``; for logs also the conventional key."""
    row = build.artifact(kind)
    if kind == BuildArtifactType.LOGS:
        return build.log_key()
    return row.key if row is not None else None


def check_made_after_completed(build: orm.Build, kind: BuildArtifactType, configured: list[str]) -> None:
    """An artifact made after COMPLETED that is not there: 409 + Retry-After while it is PENDING
    (also between the commit and its row on an older build), 410 with the reason once FAILED."""
    if kind not in POST_BUILD_ARTIFACTS or build.status is not BuildStatus.COMPLETED or build.deleted_on:
        return
    row = build.artifact_state(kind)
    what = _NAMES.get(kind, kind.value.lower())
    if row is not None and row.status is ArtifactStatus.FAILED:
        raise ArtifactFailedError(f"the {what} of build {build.id} failed: {row.reason or 'no reason recorded'}",
                                  artifact=kind.value, reason=row.reason)
    if (row is not None and row.status is ArtifactStatus.PENDING) or (row is None and kind.value in configured):
        raise ArtifactPendingError(f"the {what} of build {build.id} is still being made; retry in {RETRY_AFTER} s",
                                   artifact=kind.value, retry_after=RETRY_AFTER)


async def send_artifact(handler: BaseHandler, build: orm.Build, kind: BuildArtifactType,
                        made: Sequence[str] | None = None) -> None:
    """Stream (or redirect to) artifact ``kind`` of ``build``; 409 while it is being made (after
    COMPLETED), 410 if that failed, 404 if it does not exist. ``made``: the artifacts the build's
    environment makes (its settings); default the configuration's."""
    check_made_after_completed(build, kind, list(handler.store.build_artifacts if made is None else made))
    key = artifact_storage_key(build, kind)
    storage = handler.store.storage
    if key is None or not await run_sync(storage.exists, key):
        state = build.status.value.lower()
        raise NotFoundError(f"build {build.id} ({state}) has no {kind.value.lower()} artifact")
    # Presigning is local, but creating the S3 client may first fetch credentials (network).
    url = await run_sync(storage.presigned_url, key, PRESIGNED_URL_SECONDS)
    if url:
        handler.redirect(url, status=307)
        return
    content_type, suffix = _TYPES[kind]
    handler.set_header("Content-Type", content_type)
    handler.set_header("Content-Length", str(await run_sync(storage.size, key)))
    handler.set_header("Content-Disposition", f'attachment; filename="{build.build_key}.{suffix}"')
    chunks = storage.iter_chunks(key)
    try:
        # Each read on the executor (one at a time, so the generator is never run concurrently).
        while (chunk := await run_sync(next, chunks, None)) is not None:
            handler.write(chunk)
            await handler.flush()  # back-pressure: wait for the socket before reading the next chunk
    finally:
        chunks.close()  # closes the file or S3 body if the client went away mid-download
    handler.finish()
