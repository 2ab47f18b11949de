"""Serving build artifacts after the permission check (shared by builds.py and environments.py).

Local storage: the server streams the file itself, with Content-Type, Content-Length and
Content-Disposition, in chunks so a multi-GB conda-pack archive never sits in memory. S3: a 307
to a short-lived presigned URL, so bytes do not pass through the server and the URL is useless
soon after. There is deliberately no static ``/storage`` mount (upstream's is unauthenticated).
"""

from __future__ import annotations

from .. import orm
from ..exceptions import NotFoundError
from ..schema import BuildArtifactType
from ..storage.base import artifact_key
from .base import BaseHandler

PRESIGNED_URL_SECONDS = 60
"""Lifetime of a presigned artifact URL: long enough to start the download, no more."""

_TYPES = {
    BuildArtifactType.LOCKFILE: ("text/yaml; charset=utf-8", "conda-lock.yml"),
    BuildArtifactType.YAML: ("text/yaml; charset=utf-8", "environment.yml"),
    BuildArtifactType.CONDA_PACK: ("application/gzip", "tar.gz"),
    BuildArtifactType.LOGS: ("text/plain; charset=utf-8", "log"),
}


def artifact_storage_key(build: orm.Build, kind: BuildArtifactType) -> str | None:
    """The recorded key of ``kind`` for ``build``; for logs also the conventional key."""
    row = build.artifact(kind)
    if row is not None:
        return row.key
    return artifact_key(kind, build.build_key) if kind == BuildArtifactType.LOGS else None


async def send_artifact(handler: BaseHandler, build: orm.Build, kind: BuildArtifactType) -> None:
    """Stream (or redirect to) artifact ``kind`` of ``build``; 404 if it does not exist (yet)."""
    key = artifact_storage_key(build, kind)
    storage = handler.store.storage
    if key is None or not storage.exists(key):
        state = build.status.value.lower()
        raise NotFoundError(f"build {build.id} ({state}) has no {kind.value.lower()} artifact")
    url = storage.presigned_url(key, expires_in=PRESIGNED_URL_SECONDS)
    if url:
        handler.redirect(url, status=307)
        return
    content_type, suffix = _TYPES[kind]
    handler.set_header("Content-Type", content_type)
    handler.set_header("Content-Length", str(storage.size(key)))
    handler.set_header("Content-Disposition", f'attachment; filename="{build.build_key}.{suffix}"')
    for chunk in storage.iter_chunks(key):
        handler.write(chunk)
        await handler.flush()  # back-pressure: wait for the socket before reading the next chunk
    handler.finish()
