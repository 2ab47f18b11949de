"""Docker Registry HTTP API v2 (pull side): every environment is an image.

``docker pull host/<namespace>/<environment>:latest`` pulls the environment's current build,
``:<build key>`` an exact build, ``@sha256:…`` a manifest by digest. Names under
``conda-store-dynamic/`` are decoded into a specification (``python.lt.3.12/six``), built on demand,
and served once ready — the handler awaits the build without blocking the event loop.

Always mounted at the server root (``/v2/``), whatever ``url_prefix`` is, because clients build
``/v2/`` URLs from the host name alone. Errors use the registry's own body format
(``{"errors": [{"code", "message", "detail"}]}``), not the REST API envelope.
Authentication: Basic with any username and one of our tokens as password (``docker login``),
or ``Authorization: Bearer <token>``. Pulling needs ``environment::read`` on ``<ns>/<env>``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

from sqlalchemy import select
from tornado import web
from traitlets import Bool, Float, Unicode
from traitlets.config import LoggingConfigurable

from .. import orm
from ..auth.rbac import Permission, is_allowed
from ..exceptions import (
    AuthenticationError,
    CondaStoreError,
    InvalidNameError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from ..naming import parse_build_key, validate_name, validate_tag
from ..schema import BuildArtifactType, BuildStatus
from ..storage.base import blob_key

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

_OPERATORS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}
_SEGMENT_RE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*?)"
    r"(?:\.(?P<op>lt|le|gt|ge|eq)\.(?P<version>[0-9][0-9a-z]*(?:\.[0-9a-z]+)*))?$"
)


class RegistryError(Exception):
    """A registry-protocol error: HTTP status + distribution-spec error code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Registry(LoggingConfigurable):
    """Settings of the built-in registry (``c.Registry.*``)."""

    dynamic_images = Bool(
        True,
        help="""Serve on-demand images named ``conda-store-dynamic/<pkg>/<pkg.op.version>/…``:
        decoded into a specification, built in the dynamic namespace, and served when ready.
        Any authenticated user may trigger them (they only contain channel packages).""",
    ).tag(config=True)

    dynamic_namespace = Unicode(
        "conda-store-dynamic",
        help="Namespace holding on-demand image environments (also the first path segment of their names).",
    ).tag(config=True)

    dynamic_wait_timeout = Float(
        600.0,
        help="Seconds a manifest request for an on-demand image waits for its build before failing.",
    ).tag(config=True)

    dynamic_poll_interval = Float(
        0.5,
        help="Seconds between checks of an on-demand build's state while a request waits for it.",
    ).tag(config=True)


# -- on-demand names ------------------------------------------------------------------------------

def decode_dynamic_segment(segment: str) -> str:
    """``python.lt.3.12`` → ``python <3.12``; ``six`` → ``six``. Raises InvalidNameError on junk."""
    m = _SEGMENT_RE.match(segment)
    if not m or len(segment) > 100:
        raise InvalidNameError(
            f"image name segment {segment!r} is not '<package>' or '<package>.<lt|le|gt|ge|eq>.<version>'"
        )
    if m.group("op") is None:
        return m.group("name")
    return f"{m.group('name')} {_OPERATORS[m.group('op')]}{m.group('version')}"


def dynamic_environment_name(segments: list[str]) -> str:
    """A stable environment name for a set of segments (order does not matter)."""
    import hashlib

    canonical = sorted(set(segments))
    readable = "-".join(canonical)
    if len(readable) <= 64:
        try:
            return validate_name(readable)
        except InvalidNameError:
            pass
    return "dyn-" + hashlib.sha256("/".join(canonical).encode()).hexdigest()[:16]


# -- manifest lookup --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedImage:
    build_id: int
    manifest_digest: str


def _manifest_digest(build: orm.Build) -> str | None:
    artifact = build.artifact(BuildArtifactType.DOCKER_MANIFEST)
    if artifact is None:
        return None
    return "sha256:" + artifact.key.rsplit("/", 1)[-1]


def _find_environment(db, namespace: str, name: str) -> orm.Environment:
    env = db.scalars(
        select(orm.Environment)
        .join(orm.Namespace)
        .where(orm.Namespace.name == namespace, orm.Namespace.deleted_on.is_(None),
               orm.Environment.name == name, orm.Environment.deleted_on.is_(None))
    ).one_or_none()
    if env is None:
        raise RegistryError(404, "NAME_UNKNOWN", f"repository {namespace}/{name} is not known to this registry")
    return env


def resolve_reference(db, env: orm.Environment, reference: str) -> ResolvedImage:
    """``latest`` | ``<build key>`` | ``sha256:<hex>`` → the build and its manifest digest."""
    if DIGEST_RE.match(reference):
        for build in env.builds:
            if build.deleted_on is None and _manifest_digest(build) == reference:
                return ResolvedImage(build.id, reference)
        raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {reference} is not part of this repository")
    if reference == "latest":
        build = env.current_build
        if build is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "the environment has no current build yet")
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
    digest = _manifest_digest(build)
    if digest is None:
        state = "is still being built" if not build.status.finished else f"is {build.status.value} without an image"
        raise RegistryError(404, "MANIFEST_UNKNOWN", f"build {build.id} {state}")
    return ResolvedImage(build.id, digest)


# -- handlers ---------------------------------------------------------------------------------------

class RegistryHandler(web.RequestHandler):
    """Base: registry-format errors, credentials, read permission on the repository."""

    def initialize(self, store, auth, registry: Registry) -> None:
        self.store, self.auth, self.registry = store, auth, registry

    def check_xsrf_cookie(self) -> None:  # read-only API authenticated by headers, never cookies
        pass

    def set_default_headers(self) -> None:
        self.set_header("Docker-Distribution-API-Version", "registry/2.0")

    def _identity(self):
        return self.auth.authenticate_request(cookie=None, authorization=self.request.headers.get("Authorization"))

    def _challenge(self) -> None:
        self.set_header("WWW-Authenticate", 'Basic realm="conda-store"')

    def write_registry_error(self, status: int, code: str, message: str) -> None:
        self.clear()
        self.set_default_headers()
        if status == 401:
            self._challenge()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if self.request.method != "HEAD":
            self.finish(json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}))
        else:
            self.finish()

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, RegistryError):
            return self.write_registry_error(exc.status, exc.code, exc.message)
        if isinstance(exc, web.HTTPError) and status_code < 500:
            code = {404: "NAME_UNKNOWN", 405: "UNSUPPORTED"}.get(status_code, "UNSUPPORTED")
            return self.write_registry_error(status_code, code, exc.log_message or self._reason)
        self.write_registry_error(500, "UNKNOWN", "internal error")

    def _raise_for(self, exc: CondaStoreError) -> None:
        if isinstance(exc, AuthenticationError):
            raise RegistryError(401, "UNAUTHORIZED", "authentication required")
        if isinstance(exc, PermissionDeniedError):
            raise RegistryError(403, "DENIED", "requested access to the resource is denied")
        if isinstance(exc, (ValidationError, NotFoundError)):
            raise RegistryError(404 if isinstance(exc, NotFoundError) else 400, "NAME_INVALID", str(exc))
        raise exc

    def require_pull(self, db, identity, namespace: str, name: str) -> None:
        try:
            self.auth.authorize(db, identity, Permission.ENVIRONMENT_READ, f"{namespace}/{name}")
        except CondaStoreError as exc:
            self._raise_for(exc)

    def split_name(self, name: str) -> tuple[str, str]:
        parts = name.split("/")
        if len(parts) != 2:
            raise RegistryError(404, "NAME_UNKNOWN", f"repository {name!r} must be <namespace>/<environment>")
        try:
            return validate_name(parts[0], "namespace"), validate_name(parts[1], "environment name")
        except InvalidNameError as exc:
            raise RegistryError(400, "NAME_INVALID", str(exc)) from None


class BaseCheckHandler(RegistryHandler):
    """``GET /v2/``: tells clients this is a v2 registry and whether their credentials work."""

    def get(self) -> None:
        if self._identity().anonymous:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required")
        self.set_header("Content-Type", "application/json")
        self.finish("{}")


class ManifestHandler(RegistryHandler):
    async def get(self, name: str, reference: str) -> None:
        await self._serve(name, reference, body=True)

    async def head(self, name: str, reference: str) -> None:
        await self._serve(name, reference, body=False)

    async def _serve(self, name: str, reference: str, body: bool) -> None:
        identity = self._identity()
        if identity.anonymous:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required")
        if self.registry.dynamic_images and name.split("/", 1)[0] == self.registry.dynamic_namespace:
            digest = await self._dynamic(identity, name, reference)
        else:
            namespace, env_name = self.split_name(name)
            with self.store.session() as db:
                self.require_pull(db, identity, namespace, env_name)
                env = _find_environment(db, namespace, env_name)
                digest = resolve_reference(db, env, reference).manifest_digest
        self._write_manifest(digest, body)

    def _write_manifest(self, digest: str, body: bool) -> None:
        try:
            data = self.store.storage.get_bytes(blob_key(digest))
        except NotFoundError:
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {digest} is missing from storage") from None
        media_type = json.loads(data).get("mediaType", MANIFEST_V2)
        accept = self.request.headers.get("Accept", "")
        if media_type == MANIFEST_V2 and accept and MANIFEST_V2 not in accept and OCI_MANIFEST in accept:
            from ..build.image import oci_manifest

            data, media_type = oci_manifest(data), OCI_MANIFEST
            digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
        self.set_header("Content-Type", media_type)
        self.set_header("Docker-Content-Digest", digest)
        self.set_header("Content-Length", str(len(data)))
        self.set_header("ETag", f'"{digest}"')
        self.finish(data if body else None)

    # -- on demand ------------------------------------------------------------------------------
    async def _dynamic(self, identity, name: str, reference: str) -> str:
        if reference != "latest":
            raise RegistryError(404, "MANIFEST_UNKNOWN", "on-demand images only have the tag 'latest'")
        segments = name.split("/")[1:]
        if not segments:
            raise RegistryError(404, "NAME_UNKNOWN", "name at least one package after conda-store-dynamic/")
        try:
            specs = [decode_dynamic_segment(s) for s in segments]
        except InvalidNameError as exc:
            raise RegistryError(400, "NAME_INVALID", str(exc)) from None
        env_name = dynamic_environment_name(segments)
        build_id = await asyncio.get_running_loop().run_in_executor(
            None, self._ensure_dynamic_build, identity, env_name, specs
        )
        return await self._wait_for_image(build_id)

    def _ensure_dynamic_build(self, identity, env_name: str, specs: list[str]) -> int:
        """Reuse the environment's current or in-flight build, else submit a new one."""
        from .. import api

        namespace = self.registry.dynamic_namespace
        with self.store.session() as db:
            env = db.scalars(
                select(orm.Environment).join(orm.Namespace)
                .where(orm.Namespace.name == namespace, orm.Environment.name == env_name,
                       orm.Environment.deleted_on.is_(None))
            ).one_or_none()
            if env is not None:
                for build in sorted(env.builds, key=lambda b: b.id, reverse=True):
                    if build.deleted_on is None and build.status in (BuildStatus.QUEUED, BuildStatus.BUILDING):
                        return build.id
                    if build.deleted_on is None and build.status is BuildStatus.COMPLETED and _manifest_digest(build):
                        return build.id
        spec = {"name": env_name, "dependencies": specs}
        try:
            return api.submit_dynamic_build(self.store, namespace=namespace, specification=spec,
                                            requested_by=identity.username)
        except CondaStoreError as exc:
            raise RegistryError(400, "NAME_INVALID", f"cannot build this image: {exc}") from None

    async def _wait_for_image(self, build_id: int) -> str:
        deadline = time.monotonic() + self.registry.dynamic_wait_timeout
        while True:
            with self.store.session() as db:
                build = db.get(orm.Build, build_id)
                digest = _manifest_digest(build)
                status, info = build.status, build.status_info
            if digest:
                return digest
            if status in (BuildStatus.FAILED, BuildStatus.CANCELED):
                raise RegistryError(404, "MANIFEST_UNKNOWN", f"build {build_id} {status.value}: {info or ''}".strip())
            if time.monotonic() > deadline:
                raise RegistryError(404, "MANIFEST_UNKNOWN",
                                    f"build {build_id} is not ready after {self.registry.dynamic_wait_timeout:.0f} s")
            if self.request.connection.stream.closed():  # the client gave up; stop waiting
                raise web.Finish()
            await asyncio.sleep(self.registry.dynamic_poll_interval)


class BlobHandler(RegistryHandler):
    def get(self, name: str, digest: str) -> None:
        self._serve(name, digest, body=True)

    def head(self, name: str, digest: str) -> None:
        self._serve(name, digest, body=False)

    def _serve(self, name: str, digest: str, body: bool) -> None:
        if not DIGEST_RE.match(digest):
            raise RegistryError(400, "DIGEST_INVALID", f"{digest!r} is not a sha256 digest")
        identity = self._identity()
        if identity.anonymous:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required")
        with self.store.session() as db:
            env = self._environment_for(db, identity, name)
            if not self._blob_in_repository(env, digest):
                raise RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} is not part of this repository")
        key = blob_key(digest)
        storage = self.store.storage
        url = storage.presigned_url(key) if body else None
        if url:
            self.redirect(url, status=307)
            return
        try:
            size = storage.size(key)
        except NotFoundError:
            raise RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} is missing from storage") from None
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Docker-Content-Digest", digest)
        self.set_header("Content-Length", str(size))
        if not body:
            self.finish()
            return
        for chunk in storage.iter_chunks(key):
            self.write(chunk)
        self.finish()

    def _environment_for(self, db, identity, name: str) -> orm.Environment:
        if self.registry.dynamic_images and name.split("/", 1)[0] == self.registry.dynamic_namespace:
            segments = name.split("/")[1:]
            try:
                [decode_dynamic_segment(s) for s in segments]
            except InvalidNameError as exc:
                raise RegistryError(400, "NAME_INVALID", str(exc)) from None
            namespace, env_name = self.registry.dynamic_namespace, dynamic_environment_name(segments)
        else:
            namespace, env_name = self.split_name(name)
            self.require_pull(db, identity, namespace, env_name)
        return _find_environment(db, namespace, env_name)

    def _blob_in_repository(self, env: orm.Environment, digest: str) -> bool:
        """Only blobs referenced by one of this repository's manifests may be pulled through it."""
        storage = self.store.storage
        for build in env.builds:
            manifest_digest = _manifest_digest(build)
            if build.deleted_on is not None or manifest_digest is None:
                continue
            if manifest_digest == digest:
                return True
            try:
                manifest = json.loads(storage.get_bytes(blob_key(manifest_digest)))
            except NotFoundError:
                continue
            if digest == manifest["config"]["digest"] or any(l["digest"] == digest for l in manifest["layers"]):
                return True
        return False


class TagsHandler(RegistryHandler):
    def get(self, name: str) -> None:
        identity = self._identity()
        if identity.anonymous:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required")
        namespace, env_name = self.split_name(name)
        with self.store.session() as db:
            self.require_pull(db, identity, namespace, env_name)
            env = _find_environment(db, namespace, env_name)
            tags = [b.build_key for b in env.builds if b.deleted_on is None and _manifest_digest(b)]
            if env.current_build is not None and _manifest_digest(env.current_build):
                tags.insert(0, "latest")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"name": name, "tags": tags}))


class CatchAllHandler(RegistryHandler):
    """Anything else under /v2/ (push endpoints included): a registry-format error, never HTML."""

    def prepare(self) -> None:
        if self.request.method in ("POST", "PUT", "PATCH", "DELETE"):
            raise RegistryError(405, "UNSUPPORTED", "this registry is read-only; images are built by conda-store")
        raise RegistryError(404, "NAME_UNKNOWN", "unknown registry endpoint")


def registry_handlers(store, auth, registry: Registry) -> list[tuple]:
    """Routes for the tornado Application (mounted at the server root, not under url_prefix)."""
    kw = {"store": store, "auth": auth, "registry": registry}
    name = r"(?P<name>[a-z0-9][a-z0-9._/-]*)"
    return [
        (r"/v2/?", BaseCheckHandler, kw),
        (rf"/v2/{name}/manifests/(?P<reference>[A-Za-z0-9_:.-]+)", ManifestHandler, kw),
        (rf"/v2/{name}/blobs/(?P<digest>[A-Za-z0-9_:.-]+)", BlobHandler, kw),
        (rf"/v2/{name}/tags/list", TagsHandler, kw),
        (r"/v2/.*", CatchAllHandler, kw),
    ]
