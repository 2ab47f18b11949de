"""Registry manifest lookup: which build and which manifest form a pull reference names.

Split from :mod:`.registry` (the handlers) so each stays readable; no tornado here. A build's image
is stored once, as a Docker v2 schema 2 manifest; the OCI form served to OCI-only clients is
derived from it (:func:`~..build.image.oci_manifest`) and has its own digest, which clients come
back with. A digest therefore names one of two byte strings, and :class:`ResolvedImage` says which.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from .. import orm
from ..api import completed_current_build
from ..builder._oci import sha256_digest
from ..exceptions import InvalidNameError, NotFoundError
from ..naming import parse_build_key, validate_tag
from ..schema import ArtifactStatus, BuildArtifactType, BuildStatus
from ..storage.base import blob_key

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(Exception):
    """A registry-protocol error: HTTP status + distribution-spec error code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class ResolvedImage:
    build_id: int
    manifest_digest: str
    """Digest of the *stored* (Docker v2) manifest: the storage key of its bytes."""
    oci: bool = False
    """True when the reference was the digest of the derived OCI form: that form must be served,
    whatever ``Accept`` says, or the client's digest check fails (item: digest-pinned pulls)."""
    by_digest: bool = False
    """The reference was a digest: the form is fixed; only tag references are content-negotiated."""


@dataclass(frozen=True)
class _ManifestInfo:
    """What the handlers need from a stored manifest; immutable because manifests are content-addressed."""

    blobs: frozenset[str]  # config + layer digests
    oci_digest: str  # digest of the OCI form served to clients that accept only OCI manifests


_MANIFEST_CACHE: OrderedDict[tuple[int, str], _ManifestInfo] = OrderedDict()
_MANIFEST_CACHE_SIZE = 2048
_MANIFEST_CACHE_LOCK = threading.Lock()
"""Handlers call :func:`manifest_info` from executor threads: ``move_to_end`` and the eviction loop
mutate the OrderedDict and are not atomic, so every access holds this lock (never during I/O)."""


def manifest_info(storage, digest: str) -> _ManifestInfo | None:
    """Blobs of the stored manifest ``digest`` (cached: a pull asks once per blob); None if missing."""
    key = (id(storage), digest)
    with _MANIFEST_CACHE_LOCK:
        info = _MANIFEST_CACHE.get(key)
        if info is not None:
            _MANIFEST_CACHE.move_to_end(key)
            return info
    try:  # outside the lock: two threads may both read a missing entry; they compute the same value
        data = storage.get_bytes(blob_key(digest))
    except NotFoundError:
        return None
    from ..builder.image import oci_manifest

    parsed = json.loads(data)
    blobs = frozenset([parsed["config"]["digest"], *(layer["digest"] for layer in parsed["layers"])])
    info = _ManifestInfo(blobs, sha256_digest(oci_manifest(data)))
    with _MANIFEST_CACHE_LOCK:
        _MANIFEST_CACHE[key] = info
        while len(_MANIFEST_CACHE) > _MANIFEST_CACHE_SIZE:
            _MANIFEST_CACHE.popitem(last=False)
    return info


def stored_manifest_digest(build: orm.Build) -> str | None:
    """Digest of the build's stored manifest; None while it has no image."""
    artifact = build.artifact(BuildArtifactType.DOCKER_MANIFEST)
    if artifact is None:
        return None
    return "sha256:" + artifact.key.rsplit("/", 1)[-1]


def image_failure(build: orm.Build) -> str | None:
    """Why a finished build has (and will get) no image; None while one may still come."""
    if build.status in (BuildStatus.FAILED, BuildStatus.CANCELED):
        return f"build {build.id} {build.status.value}: {build.status_info or 'no reason recorded'}"
    row = build.artifact_state(BuildArtifactType.DOCKER_MANIFEST)
    if build.status is BuildStatus.COMPLETED and row is not None and row.status is ArtifactStatus.FAILED:
        return f"build {build.id} has no image: {row.reason or 'no reason recorded'}"
    return None


def find_environment(db, namespace: str, name: str, *, required: bool = True) -> orm.Environment | None:
    """The live environment ``namespace/name`` with its builds, their artifacts and specifications
    loaded in three queries (pulls walk every build: lazy loads would cost one query per build).
    RegistryError NAME_UNKNOWN if it does not exist and ``required``, else None."""
    builds = selectinload(orm.Environment.builds)
    env = db.scalars(
        select(orm.Environment)
        .join(orm.Namespace)
        .where(orm.Namespace.name == namespace, orm.Namespace.deleted_on.is_(None),
               orm.Environment.name == name, orm.Environment.deleted_on.is_(None))
        .options(builds.selectinload(orm.Build.artifacts), builds.selectinload(orm.Build.specification))
    ).one_or_none()
    if env is None and required:
        raise RegistryError(404, "NAME_UNKNOWN", f"repository {namespace}/{name} is not known to this registry")
    return env


def resolve_reference(db, env: orm.Environment, reference: str, *, storage=None,
                      images_enabled: bool = True) -> ResolvedImage:
    """``latest`` | ``<build key>`` | ``sha256:<hex>`` → the build, its manifest and which form.

    A digest may be the stored (Docker) manifest's or, given ``storage``, the OCI form's that
    OCI-only clients were served, so they can come back by digest; ``oci`` records which.
    """
    if DIGEST_RE.match(reference):
        for build in env.builds:
            digest = stored_manifest_digest(build)
            if build.deleted_on is not None or digest is None:
                continue
            if digest == reference:
                return ResolvedImage(build.id, reference, oci=False, by_digest=True)
            info = manifest_info(storage, digest) if storage is not None else None
            if info is not None and info.oci_digest == reference:
                return ResolvedImage(build.id, digest, oci=True, by_digest=True)
        raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {reference} is not part of this repository")
    if reference == "latest":
        build = completed_current_build(env)  # a new environment's current build may be queued
        if build is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "the environment has no completed build yet")
    else:
        try:
            validate_tag(reference)
            build_id = parse_build_key(reference)
        except InvalidNameError:
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"tag {reference!r} is not 'latest' or a build key") from None
        build = db.get(orm.Build, build_id)
        if build is None or build.environment_id != env.id or build.build_key != reference:
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"tag {reference} does not exist")
    if build.deleted_on is not None:
        raise RegistryError(404, "MANIFEST_UNKNOWN", f"build {build.id} was deleted")
    digest = stored_manifest_digest(build)
    if digest is None:
        if not build.status.finished:
            state = f"build {build.id} is still {build.status.value}"
        elif not images_enabled:
            state = "this conda-store does not build images (DOCKER_MANIFEST is not in CondaStore.build_artifacts)"
        else:
            state = image_failure(build) or f"the image of build {build.id} is still being built; retry shortly"
        raise RegistryError(404, "MANIFEST_UNKNOWN", state)
    return ResolvedImage(build.id, digest)


def manifest_form(resolved: ResolvedImage, data: bytes, accept: str) -> tuple[bytes, str, str]:
    """(bytes, media type, digest) to serve for ``resolved``, whose stored bytes are ``data``.

    By digest: exactly the form whose sha256 is that digest, whatever ``Accept`` says — a client
    pinning a digest verifies the body against it, and the distribution spec requires the manifest
    with that digest. If its ``Accept`` does not list the form, we still serve it (as the reference
    registry does for a Docker v2 manifest asked by digest) with its true ``Content-Type``: the
    bytes are the only ones that digest can name, and a 404 would fail the pull just the same.
    By tag: the stored Docker form, unless the client accepts OCI but not Docker manifests.
    """
    from ..builder.image import oci_manifest

    media_type = json.loads(data).get("mediaType", MANIFEST_V2)
    if resolved.by_digest:
        oci = resolved.oci
    else:
        oci = media_type == MANIFEST_V2 and bool(accept) and MANIFEST_V2 not in accept and OCI_MANIFEST in accept
    if not oci:
        return data, media_type, resolved.manifest_digest
    converted = oci_manifest(data)
    return converted, OCI_MANIFEST, sha256_digest(converted)
