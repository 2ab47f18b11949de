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
import datetime as dt
import json
import time
import weakref
from typing import Any, TypeVar

from tornado import iostream, web
from traitlets import Bool, Float, Unicode
from traitlets.config import LoggingConfigurable

from .. import orm
from ..auth.rbac import Permission
from ..exceptions import (
    AuthenticationError,
    CondaStoreError,
    InvalidNameError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ValidationError,
)
from ..naming import validate_name
from ..schema import BuildArtifactType, Specification
from ..storage.base import blob_key
from .base import run_sync
from .registry_manifests import (  # noqa: F401 - RegistryError, resolve_reference are re-exported
    DIGEST_RE,
    RegistryError,
    ResolvedImage,
    find_environment,
    image_failure,
    manifest_form,
    manifest_info,
    resolve_reference,
    stored_manifest_digest,
)
from .registry_names import (  # noqa: F401 - decode_dynamic_segment is re-exported
    DYNAMIC_NAMESPACE,
    decode_dynamic_segment,
    dynamic_environment_name,
)

T = TypeVar("T")


class Registry(LoggingConfigurable):
    """Settings of the built-in registry (``c.Registry.*``)."""

    dynamic_images = Bool(
        True,
        help="""Serve on-demand images named ``conda-store-dynamic/<pkg>/<pkg.op.version>/…``:
        decoded into a specification, built in the dynamic namespace, and served when ready.
        Any authenticated user may trigger them (they only contain channel packages).""",
    ).tag(config=True)

    dynamic_namespace = Unicode(
        DYNAMIC_NAMESPACE,
        help="""Namespace holding on-demand image environments (also the first path segment of their
        names). Only the default is reserved (no user gets it as a namespace, only store-wide admins
        write into it through the REST API): another value must not be a namespace users can own.""",
    ).tag(config=True)

    dynamic_wait_timeout = Float(
        600.0,
        help="Seconds a manifest request for an on-demand image waits for its build before failing.",
    ).tag(config=True)

    dynamic_poll_interval = Float(
        0.5,
        help="Seconds between checks of an on-demand build's state while a request waits for it.",
    ).tag(config=True)

    dynamic_solve_timeout = Float(
        60.0,
        help="""Seconds the server may spend solving a new on-demand name before it creates the
        environment (a name that cannot be solved is refused and leaves nothing behind).""",
    ).tag(config=True)

    dynamic_retry_after = Float(
        300.0,
        help="""Seconds during which a failed on-demand build is reported as is instead of being
        retried: a name that cannot be built (unknown package, conflict) must not start a new
        build on every pull.""",
    ).tag(config=True)


# -- handlers ---------------------------------------------------------------------------------------

class RegistryHandler(web.RequestHandler):
    """Base: registry-format errors, credentials, read permission on the repository.

    Database and storage calls run on the default executor (``run_sync``): a slow database or
    disk must not stall every other request, the on-demand waits included.
    """

    def initialize(self, store, auth, registry: Registry) -> None:
        self.store, self.auth, self.registry = store, auth, registry
        self.client_gone = False

    def on_connection_close(self) -> None:
        self.client_gone = True

    def check_xsrf_cookie(self) -> None:  # read-only API authenticated by headers, never cookies
        pass

    def set_default_headers(self) -> None:
        self.set_header("Docker-Distribution-API-Version", "registry/2.0")
        self.set_header("X-Content-Type-Options", "nosniff")

    @property
    def images_enabled(self) -> bool:
        return BuildArtifactType.DOCKER_MANIFEST.value in self.store.build_artifacts

    def is_dynamic(self, name: str) -> bool:
        return self.registry.dynamic_images and name.split("/", 1)[0] == self.registry.dynamic_namespace

    def authenticated(self):
        """The caller's identity; 401 (with the Basic challenge ``docker login`` answers) if anonymous."""
        try:
            identity = self.auth.authenticate_request(cookie=None, authorization=self.request.headers.get("Authorization"))
        except AuthenticationError as exc:  # a credential was presented and is not valid: say why
            raise RegistryError(401, "UNAUTHORIZED", str(exc)) from None
        except PermissionDeniedError as exc:  # e.g. a hub user whose name cannot be a namespace
            raise RegistryError(403, "DENIED", str(exc)) from None
        except ServiceUnavailableError as exc:
            raise RegistryError(503, "UNAVAILABLE", str(exc)) from None
        if identity.anonymous:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required: use a conda-store token "
                                "as the password (docker login -u <anything> -p <token>)")
        return identity

    def write_registry_error(self, status: int, code: str, message: str) -> None:
        self.clear()
        self.set_default_headers()
        if status == 401:
            self.set_header("WWW-Authenticate", 'Basic realm="conda-store"')
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

    def log_exception(self, typ, value, tb) -> None:
        # Expected answers, not server errors: the access log has their one line.
        if isinstance(value, RegistryError) or (isinstance(value, web.HTTPError) and value.status_code < 500):
            return
        super().log_exception(typ, value, tb)

    def _raise_for(self, exc: CondaStoreError) -> None:
        if isinstance(exc, AuthenticationError):
            raise RegistryError(401, "UNAUTHORIZED", "authentication required")
        if isinstance(exc, PermissionDeniedError):
            raise RegistryError(403, "DENIED", "requested access to the resource is denied")
        if isinstance(exc, NotFoundError):
            raise RegistryError(404, "NAME_UNKNOWN", str(exc))
        if isinstance(exc, ValidationError):
            raise RegistryError(400, "NAME_INVALID", str(exc))
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

    def dynamic_name(self, name: str) -> tuple[str, list[str]]:
        """(environment name, match specs) of an on-demand image name; 400 NAME_INVALID on junk."""
        segments = name.split("/")[1:]
        if not segments or segments == [""]:
            raise RegistryError(400, "NAME_INVALID",
                                f"name at least one package after {self.registry.dynamic_namespace}/")
        try:
            # Canonical order, as the environment name: every spelling of one set of packages is one
            # specification (same sha256), which is how a pull recognises its build.
            specs = [decode_dynamic_segment(s) for s in sorted(set(segments))]
        except InvalidNameError as exc:
            raise RegistryError(400, "NAME_INVALID", str(exc)) from None
        return dynamic_environment_name(segments), specs

    def repository(self, db, identity, name: str) -> orm.Environment:
        """The environment behind an image name, after the pull permission check.

        On-demand images hold only channel packages and any authenticated user may create them,
        so reading them needs authentication only.
        """
        if self.is_dynamic(name):
            env_name, _ = self.dynamic_name(name)
            return find_environment(db, self.registry.dynamic_namespace, env_name)
        namespace, env_name = self.split_name(name)
        self.require_pull(db, identity, namespace, env_name)
        return find_environment(db, namespace, env_name)


class BaseCheckHandler(RegistryHandler):
    """``GET /v2/``: tells clients this is a v2 registry and whether their credentials work."""

    async def get(self) -> None:
        await run_sync(self.authenticated)
        self.set_header("Content-Type", "application/json")
        self.finish("{}")

    head = get


DYNAMIC_SUBMIT_LOCK = "conda-store:registry:dynamic-submit:{env_name}"
"""Redis lock held by the one server process that checks for, and submits, an on-demand build."""

_DYNAMIC_LOCKS: "weakref.WeakValueDictionary[str, asyncio.Lock]" = weakref.WeakValueDictionary()
"""Per on-demand environment, held while one request decides whether to submit its build."""


class ManifestHandler(RegistryHandler):
    async def get(self, name: str, reference: str) -> None:
        await self._serve(name, reference, body=True)

    async def head(self, name: str, reference: str) -> None:
        await self._serve(name, reference, body=False)

    async def _serve(self, name: str, reference: str, body: bool) -> None:
        identity = await run_sync(self.authenticated)
        if self.is_dynamic(name):
            resolved = await self._dynamic(identity, name, reference)
        else:
            resolved = await run_sync(self._resolve, identity, name, reference)
        data = await run_sync(self._manifest_bytes, resolved.manifest_digest)
        self._write_manifest(resolved, data, body)

    def _resolve(self, identity, name: str, reference: str) -> ResolvedImage:
        with self.store.session() as db:
            env = self.repository(db, identity, name)
            return resolve_reference(db, env, reference, storage=self.store.storage,
                                     images_enabled=self.images_enabled)

    def _manifest_bytes(self, digest: str) -> bytes:
        try:
            return self.store.storage.get_bytes(blob_key(digest))
        except NotFoundError:
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {digest} is missing from storage") from None

    def _write_manifest(self, resolved: ResolvedImage, data: bytes, body: bool) -> None:
        """Serve the form :func:`manifest_form` picks: the digest's own form, or by ``Accept`` for tags."""
        accept = ",".join(self.request.headers.get_list("Accept"))
        data, media_type, digest = manifest_form(resolved, data, accept)
        self.set_header("Content-Type", media_type)
        self.set_header("Docker-Content-Digest", digest)
        self.set_header("Content-Length", str(len(data)))
        self.set_header("ETag", f'"{digest}"')
        self.finish(data if body else None)

    # -- on demand ------------------------------------------------------------------------------
    async def _dynamic(self, identity, name: str, reference: str) -> ResolvedImage:
        env_name, specs = self.dynamic_name(name)
        if reference != "latest":  # a digest or build key
            wanted = await run_sync(self._dynamic_sha256, env_name, specs)
            return await run_sync(self._resolve_dynamic, identity, name, reference, wanted)
        if not self.images_enabled:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "this conda-store does not build images "
                                "(DOCKER_MANIFEST is not in CondaStore.build_artifacts)")
        # One request per process decides whether to submit (and, across server processes, one
        # process: see _submit_dynamic_once); concurrent pulls of a new name then find its build
        # instead of each submitting one.
        lock = _DYNAMIC_LOCKS.get(env_name)
        if lock is None:
            lock = _DYNAMIC_LOCKS[env_name] = asyncio.Lock()
        async with lock:
            build_id = await run_sync(self._existing_dynamic_build, env_name, specs)
            if build_id is None:
                await self._check_solvable(name, env_name, specs)  # a typo must leave no rows behind
                build_id = await run_sync(self._submit_dynamic_once, identity, env_name, specs)
        return ResolvedImage(build_id, await self._wait_for_image(build_id))

    def _submit_dynamic_once(self, identity, env_name: str, specs: list[str]) -> int:
        """Check again and submit under a Redis lock: with several server processes, pulls of one
        new name reach different processes, whose asyncio locks know nothing of each other."""
        from redis.exceptions import LockError

        try:
            with self.store.redis.lock(DYNAMIC_SUBMIT_LOCK.format(env_name=env_name), timeout=60,
                                       blocking_timeout=60):
                build_id = self._existing_dynamic_build(env_name, specs)
                return build_id if build_id is not None else self._submit_dynamic_build(identity, env_name, specs)
        except LockError:
            raise RegistryError(503, "UNAVAILABLE", f"another request is still submitting the build of "
                                f"{env_name}; retry shortly") from None

    async def _check_solvable(self, name: str, env_name: str, specs: list[str]) -> None:
        """Solve the name's specification here, before any row exists, as the build would.

        An on-demand name is typed by hand (``docker pull …/nopkg-zz``); a name that cannot be
        solved would otherwise leave an environment whose only build failed in the shared
        namespace. Solving takes milliseconds once the channel's repodata is cached.
        """
        from ..worker.settings import settings_from_store
        from ..builder.solve import solve_specification
        from ..exceptions import SolveError

        spec = await run_sync(self._dynamic_specification, env_name, specs)
        try:
            await solve_specification(spec.dependencies, settings_from_store(self.store, spec),
                                      timeout=self.registry.dynamic_solve_timeout)
        except SolveError as exc:
            raise RegistryError(404, "NAME_UNKNOWN", f"cannot build {name}: {exc}") from None

    def _dynamic_specification(self, env_name: str, specs: list[str]) -> Specification:
        """The specification an on-demand name stands for (after the store's policy)."""
        from .. import api

        try:
            return api.prepare_specification(self.store, self._dynamic_spec(env_name, specs),
                                             namespace=self.registry.dynamic_namespace)
        except CondaStoreError as exc:
            raise RegistryError(400, "NAME_INVALID", f"cannot build this image: {exc}") from None

    def _dynamic_sha256(self, env_name: str, specs: list[str]) -> str:
        return self._dynamic_specification(env_name, specs).sha256

    @staticmethod
    def _dynamic_spec(env_name: str, specs: list[str]) -> dict[str, Any]:
        return {"name": env_name, "dependencies": specs}

    def _existing_dynamic_build(self, env_name: str, specs: list[str]) -> int | None:
        """The build whose image answers this pull: the current image, an in-flight build or a
        recent failure (reported, not retried); None if a build must be submitted.

        Only builds of exactly the specification the name decodes to count (same sha256): a build
        of anything else in this environment (posted through the REST API, or a name collision)
        must never be served under this name; a new build is submitted instead.
        """
        namespace = self.registry.dynamic_namespace
        wanted = self._dynamic_sha256(env_name, specs)
        with self.store.session() as db:
            env = find_environment(db, namespace, env_name, required=False)
            if env is None:
                return None
            current = env.current_build
            if (current is not None and current.deleted_on is None and stored_manifest_digest(current)
                    and current.specification.sha256 == wanted):
                return current.id
            live = [b for b in env.builds if b.deleted_on is None and b.specification.sha256 == wanted]
            if not live:
                return None
            latest = max(live, key=lambda b: b.id)
            failure = image_failure(latest)
            if failure is None:  # queued, building, or completed with its image coming
                return latest.id
            ended = latest.ended_on or latest.scheduled_on
            if (orm.utcnow() - ended) < dt.timedelta(seconds=self.registry.dynamic_retry_after):
                return latest.id
        return None

    def _submit_dynamic_build(self, identity, env_name: str, specs: list[str]) -> int:
        from .. import api

        try:
            return api.submit_dynamic_build(self.store, namespace=self.registry.dynamic_namespace,
                                            specification=self._dynamic_spec(env_name, specs),
                                            requested_by=identity.username)
        except ValidationError as exc:
            raise RegistryError(400, "NAME_INVALID", f"cannot build this image: {exc}") from None
        except CondaStoreError as exc:
            raise RegistryError(503 if exc.status_code >= 500 else 400, "UNAVAILABLE" if exc.status_code >= 500
                                else "NAME_INVALID", f"cannot build this image: {exc}") from None

    def _resolve_dynamic(self, identity, name: str, reference: str, wanted: str) -> ResolvedImage:
        """A digest or build key under an on-demand name: only builds of the name's own specification."""
        resolved = self._resolve(identity, name, reference)
        with self.store.session() as db:
            build = db.get(orm.Build, resolved.build_id)
            if build is None or build.specification.sha256 != wanted:
                raise RegistryError(404, "MANIFEST_UNKNOWN", f"{reference} is not an image of {name}")
        return resolved

    def _dynamic_state(self, build_id: int) -> tuple[str | None, str | None]:
        """(manifest digest, failure) of an on-demand build; both None while it is in progress."""
        with self.store.session() as db:
            build = db.get(orm.Build, build_id)
            if build is None or build.deleted_on is not None:
                return None, f"build {build_id} was deleted"
            return stored_manifest_digest(build), image_failure(build)

    async def _wait_for_image(self, build_id: int) -> str:
        """Poll until the image exists, the build fails, the client leaves, or the deadline passes.

        Each check runs on the executor and the pause is ``asyncio.sleep``: waiting requests cost
        the event loop nothing, however many there are.
        """
        deadline = time.monotonic() + self.registry.dynamic_wait_timeout
        while True:
            digest, failure = await run_sync(self._dynamic_state, build_id)
            if digest:
                return digest
            if failure:
                raise RegistryError(404, "MANIFEST_UNKNOWN", f"on-demand image failed: {failure}")
            if self.client_gone:
                raise web.Finish()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RegistryError(404, "MANIFEST_UNKNOWN",
                                    f"build {build_id} is not ready after {self.registry.dynamic_wait_timeout:g} s; "
                                    "it continues: pull again later")
            await asyncio.sleep(min(self.registry.dynamic_poll_interval, remaining))


class BlobHandler(RegistryHandler):
    CHUNK = 1 << 20

    async def get(self, name: str, digest: str) -> None:
        await self._serve(name, digest, body=True)

    async def head(self, name: str, digest: str) -> None:
        await self._serve(name, digest, body=False)

    async def _serve(self, name: str, digest: str, body: bool) -> None:
        if not DIGEST_RE.match(digest):
            raise RegistryError(400, "DIGEST_INVALID", f"{digest!r} is not a sha256 digest")
        size, url = await run_sync(self._locate, name, digest, body)
        if url:
            self.redirect(url, status=307)
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Docker-Content-Digest", digest)
        self.set_header("Content-Length", str(size))
        self.set_header("ETag", f'"{digest}"')
        self.set_header("Cache-Control", "max-age=31536000")  # content-addressed: never changes
        if not body:
            self.finish()
            return
        await self._stream(blob_key(digest))

    def _locate(self, name: str, digest: str, body: bool) -> tuple[int, str | None]:
        identity = self.authenticated()
        with self.store.session() as db:
            env = self.repository(db, identity, name)
            if not self._blob_in_repository(env, digest):
                raise RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} is not part of this repository")
        storage = self.store.storage
        key = blob_key(digest)
        url = storage.presigned_url(key) if body else None
        if url:
            return 0, url
        try:
            return storage.size(key), None
        except NotFoundError:
            raise RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} is missing from storage") from None

    async def _stream(self, key: str) -> None:
        """Send the blob chunk by chunk, reading on the executor and waiting for each send.

        ``flush()`` per chunk keeps memory at one chunk per download (a layer can be hundreds of
        MB) and applies the client's back-pressure.
        """
        f = await run_sync(self.store.storage.open, key)
        try:
            while chunk := await run_sync(f.read, self.CHUNK):
                self.write(chunk)
                await self.flush()
        except iostream.StreamClosedError:
            return
        finally:
            f.close()
        self.finish()

    def _blob_in_repository(self, env: orm.Environment, digest: str) -> bool:
        """Only blobs referenced by one of this repository's manifests may be pulled through it."""
        storage = self.store.storage
        for build in env.builds:
            manifest_digest = stored_manifest_digest(build)
            if build.deleted_on is not None or manifest_digest is None:
                continue
            if manifest_digest == digest:
                return True
            info = manifest_info(storage, manifest_digest)
            if info is not None and digest in info.blobs:
                return True
        return False


class TagsHandler(RegistryHandler):
    """``GET /v2/<name>/tags/list``: ``latest`` (when the current build has an image), then build keys."""

    async def get(self, name: str) -> None:
        tags = await run_sync(self._tags, name)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"name": name, "tags": tags}))

    def _tags(self, name: str) -> list[str]:
        identity = self.authenticated()
        with self.store.session() as db:
            env = self.repository(db, identity, name)
            tags = [b.build_key for b in env.builds if b.deleted_on is None and stored_manifest_digest(b)]
            current = env.current_build
            if current is not None and current.deleted_on is None and stored_manifest_digest(current):
                tags.insert(0, "latest")
        return tags


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
