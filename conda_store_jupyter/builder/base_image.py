"""Base images: pull an image from any Docker Registry v2 / OCI distribution registry into storage.

``CondaStore.default_docker_base_image`` puts an existing image (``debian:bookworm-slim``, another
conda-store's environment, ...) under every environment image. Only what an image builder needs is
implemented: resolve a reference to one linux manifest for this host's architecture, copy its layer
blobs into our storage (verified, once: blobs are content-addressed, so a base pulled by one build
is reused by every later build) and read its config for ``rootfs.diff_ids`` and the runtime settings
(Env, WorkingDir, User) our image inherits. Pushing, schema 1 and non-gzip layers are out of scope.

Why our own client: the libraries checked (oras, python-dxf) loop on Basic-only registries or refuse
Basic auth over plain http (see ``shared/notes/toolchain.md`` §5), and both auth schemes in use are
small: ``Basic`` (our own registry, ``docker login``-style) and the Bearer token flow
(``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` → GET realm → ``{"token": …}``; Docker Hub,
ghcr.io, quay.io).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import httpx

from ..exceptions import ArtifactError
from ..storage.base import Storage, blob_key
from ._oci import LAYER_TAR_GZIP, MANIFEST_V2, OCI_INDEX, OCI_MANIFEST, sha256_digest
from .image_config import BaseImage, Layer, image_architecture

log = logging.getLogger(__name__)

MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_V1 = ("application/vnd.docker.distribution.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.v1+prettyjws")
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
GZIP_LAYERS = (LAYER_TAR_GZIP, OCI_LAYER_GZIP)
"""The same bytes under two names: both are converted to the Docker name in our (Docker v2 s2) manifest."""
_ACCEPT = ", ".join([MANIFEST_V2, OCI_MANIFEST, MANIFEST_LIST_V2, OCI_INDEX])

DOCKER_HUB = "registry-1.docker.io"
TAG_CACHE_SECONDS = 600.0
"""How long a base resolved from a tag is trusted before the registry is asked again (a digest: forever)."""
MAX_JSON_BYTES = 4 << 20  # manifests and configs are a few KB; refuse anything absurd

_HOST = re.compile(r"^(localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(:[0-9]{1,5})?$")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)')


# -- references -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageReference:
    """``registry/repository`` plus a tag or a digest (a digest wins when both are given)."""

    registry: str  # host[:port]
    repository: str
    tag: str = "latest"
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``."""
        return self.digest or self.tag

    def __str__(self) -> str:
        tag = f":{self.tag}" if not self.digest or self.tag != "latest" else ""
        return f"{self.registry}/{self.repository}{tag}" + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> ImageReference:
    """Parse ``[host[:port]/]repo[:tag][@sha256:…]`` the way ``docker pull`` does.

    The first component is a registry host only if it has a ``.`` or ``:`` or is ``localhost``
    (``myorg/tool`` is a Docker Hub repository); Docker Hub names (``docker.io``, ``index.docker.io``)
    become ``registry-1.docker.io``, where one-component names live under ``library/``.
    """
    ref = text.strip()
    if not ref or any(c.isspace() for c in ref) or "://" in ref:
        raise ArtifactError(f"invalid base image reference {text!r}: expected host[:port]/repository[:tag|@sha256:…]")
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise ArtifactError(f"invalid base image reference {text!r}: {digest!r} is not sha256:<64 hex>")
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
        if not _HOST.match(registry):
            raise ArtifactError(f"invalid base image reference {text!r}: bad registry host {registry!r}")
    else:
        registry, path = DOCKER_HUB, ref
    if registry in ("docker.io", "index.docker.io"):
        registry = DOCKER_HUB
    tag = "latest"
    name, colon, maybe_tag = path.rpartition(":")
    if colon and "/" not in maybe_tag:
        path, tag = name, maybe_tag
        if not _TAG.match(tag):
            raise ArtifactError(f"invalid base image reference {text!r}: bad tag {tag!r}")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _REPOSITORY.match(path) or len(path) > 255:
        raise ArtifactError(f"invalid base image reference {text!r}: bad repository name {path!r} "
                            "(lowercase letters, digits and . _ - separators, / between components)")
    return ImageReference(registry, path, tag, digest)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="a:b:pull,push"`` → (``bearer``, {realm, service, scope}).

    Values may be quoted (and then contain commas, as scopes with several actions do) or bare.
    """
    scheme, _, params = header.strip().partition(" ")
    values = {}
    for key, value in _PARAM.findall(params):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[key.lower()] = value
    return scheme.lower(), values


# -- the client -------------------------------------------------------------------------------------

class RegistryClient:
    """Pull-only v2 client for one repository: authenticates on the first 401 and keeps the result."""

    def __init__(self, ref: ImageReference, credentials: str | None = None, insecure: bool = False,
                 timeout: float = 60.0):
        self.ref = ref
        self.base_url = f"{'http' if insecure else 'https'}://{ref.registry}/v2/{ref.repository}"
        self._credentials = credentials
        self._insecure = insecure
        self._authorization: str | None = None
        # httpx drops Authorization on redirects to another origin (blob downloads from S3/CDNs).
        self._http = httpx.Client(timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self._http.close()

    def _send(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET ``url`` (streamed; the caller closes it), authenticating once if challenged."""
        for attempt in (0, 1):
            request = self._http.build_request("GET", url, headers={
                **(headers or {}), **({"Authorization": self._authorization} if self._authorization else {})})
            try:
                response = self._http.send(request, stream=True)
            except httpx.HTTPError as err:
                raise ArtifactError(f"base image {self.ref}: registry {self.ref.registry} unreachable: "
                                    f"{type(err).__name__}: {err}") from err
            if response.status_code != 401 or attempt:
                break
            challenges = response.headers.get_list("www-authenticate")
            response.close()
            self._authenticate(challenges)
        if response.status_code in (401, 403):
            response.read()
            response.close()
            who = "the configured credentials" if self._credentials else "anonymous access"
            verb = "were rejected" if self._credentials else "is not allowed"
            raise ArtifactError(f"base image {self.ref}: {who} {verb} by {self.ref.registry} "
                                f"(HTTP {response.status_code}{_error_text(response)}); "
                                "check CondaStore.docker_base_image_credentials")
        return response

    def _authenticate(self, challenges: list[str]) -> None:
        parsed = [parse_challenge(c) for c in challenges]
        bearer = next((p for s, p in parsed if s == "bearer"), None)
        if bearer is not None:
            self._authorization = "Bearer " + self._token(bearer)
        elif any(s == "basic" for s, _ in parsed) and self._credentials:
            self._authorization = "Basic " + base64.b64encode(self._credentials.encode()).decode()
        elif not self._credentials:
            raise ArtifactError(f"base image {self.ref}: {self.ref.registry} requires credentials; "
                                "set CondaStore.docker_base_image_credentials to user:password")
        else:
            raise ArtifactError(f"base image {self.ref}: unsupported authentication challenge {challenges!r}")

    def _token(self, challenge: dict[str, str]) -> str:
        """The Bearer token flow: ask the realm for a pull token, with Basic credentials if we have them."""
        realm = challenge.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise ArtifactError(f"base image {self.ref}: Bearer challenge without a usable realm: {challenge!r}")
        # The realm is named by whoever answered the challenge, and gets our credentials: never in
        # clear text unless the registry itself is trusted over plain http (insecure). Another host
        # is normal (Docker Hub's auth.docker.io), so only the scheme is checked.
        if not realm.startswith("https://") and not self._insecure:
            raise ArtifactError(f"base image {self.ref}: the token server {realm} is not https; refusing to "
                                "send it credentials or trust its token (set "
                                "CondaStore.docker_base_image_insecure to allow plain-http registries)")
        params = {"scope": challenge.get("scope") or f"repository:{self.ref.repository}:pull"}
        if challenge.get("service"):
            params["service"] = challenge["service"]
        auth = tuple(self._credentials.split(":", 1)) if self._credentials and ":" in self._credentials else None
        try:
            response = self._http.get(realm, params=params, auth=auth)  # type: ignore[arg-type]
        except httpx.HTTPError as err:
            raise ArtifactError(f"base image {self.ref}: token server {realm} unreachable: {err}") from err
        if response.status_code in (401, 403):
            raise ArtifactError(f"base image {self.ref}: the token server {realm} rejected "
                                f"{'the configured credentials' if auth else 'anonymous access'} "
                                f"(HTTP {response.status_code})")
        try:
            response.raise_for_status()
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (httpx.HTTPError, ValueError, AttributeError) as err:
            raise ArtifactError(f"base image {self.ref}: bad answer from token server {realm}: {err}") from err
        if not token:
            raise ArtifactError(f"base image {self.ref}: token server {realm} returned no token")
        return str(token)

    def get_json(self, kind: str, reference: str, accept: str | None = None) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest (``kind="manifests"``) or config blob (``"blobs"``).

        The bytes are checked against the digest asked for, or against ``Docker-Content-Digest``
        when asking by tag: nothing unverified reaches the image.
        """
        response = self._send(f"{self.base_url}/{kind}/{reference}", {"Accept": accept} if accept else None)
        try:
            if response.status_code == 404:
                what = f"tag or digest {reference!r}" if kind == "manifests" else f"blob {reference}"
                raise ArtifactError(f"base image {self.ref}: {what} not found in {self.ref.registry}/"
                                    f"{self.ref.repository}{_error_text(response)}")
            if response.status_code != 200:
                raise ArtifactError(f"base image {self.ref}: GET {kind}/{reference} answered "
                                    f"HTTP {response.status_code}{_error_text(response)}")
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > MAX_JSON_BYTES:
                    raise ArtifactError(f"base image {self.ref}: {kind}/{reference} is larger than "
                                        f"{MAX_JSON_BYTES} bytes")
        except httpx.HTTPError as err:
            raise ArtifactError(f"base image {self.ref}: reading {kind}/{reference} failed: {err}") from err
        finally:
            response.close()
        digest = sha256_digest(data)
        expected = reference if _DIGEST.match(reference) else response.headers.get("docker-content-digest")
        if expected and expected.startswith("sha256:") and expected != digest:
            raise ArtifactError(f"base image {self.ref}: digest mismatch for {kind}/{reference}: "
                                f"expected {expected}, got {digest}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return data, media_type, digest

    def copy_blob(self, descriptor: dict[str, Any], diff_id: str, storage: Storage, work_dir: Path) -> bool:
        """Stream a gzip layer into storage, checking size, digest and diff_id; False if already stored."""
        digest, size = descriptor["digest"], int(descriptor["size"])
        if storage.exists(blob_key(digest)):
            return False
        raw, gz = hashlib.sha256(), hashlib.sha256()
        inflate = _Inflater()
        received = 0
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix="base-", suffix=".tar.gz") as tmp:
            response = self._send(f"{self.base_url}/blobs/{digest}")
            try:
                if response.status_code != 200:
                    raise ArtifactError(f"base image {self.ref}: layer {digest} answered HTTP "
                                        f"{response.status_code}{_error_text(response)}")
                for chunk in response.iter_bytes(1 << 20):
                    received += len(chunk)
                    if received > size:
                        break
                    gz.update(chunk)
                    tmp.write(chunk)
                    for piece in inflate.feed(chunk):
                        raw.update(piece)
                raw.update(inflate.finish())
            except (httpx.HTTPError, zlib.error) as err:
                raise ArtifactError(f"base image {self.ref}: layer {digest} could not be read: {err}") from err
            finally:
                response.close()
            if received != size or "sha256:" + gz.hexdigest() != digest:
                raise ArtifactError(f"base image {self.ref}: digest mismatch for layer {digest} "
                                    f"({received} bytes received, {size} declared; got sha256:{gz.hexdigest()})")
            if "sha256:" + raw.hexdigest() != diff_id:
                raise ArtifactError(f"base image {self.ref}: layer {digest} does not match its diff_id "
                                    f"{diff_id} in the image config")
            tmp.flush()
            storage.put_file(blob_key(digest), Path(tmp.name), LAYER_TAR_GZIP)
        return True


class _Inflater:
    """Incremental gunzip of a possibly multi-member gzip stream (pigz and friends write several)."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            yield self._z.decompress(data, 1 << 22)  # bounded: a small chunk may inflate hugely
            if not self._z.eof:
                data = self._z.unconsumed_tail
                continue
            data = self._z.unused_data
            if not data.strip(b"\0"):  # zero padding after the last member, as gzip(1) tolerates
                return
            self._z = zlib.decompressobj(wbits=31)

    def finish(self) -> bytes:
        """Whatever zlib still holds once the input has ended."""
        return self._z.flush()


def _error_text(response: httpx.Response) -> str:
    """``: CODE message`` from a registry ``{"errors": […]}`` body, if it is one."""
    try:
        response.read()
        errors = response.json().get("errors") or []
        return ": " + "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors) if errors else ""
    except Exception:  # noqa: BLE001 - only decoration of an error message
        return ""


# -- resolving ------------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str | None, bool], tuple[BaseImage, float]] = {}
_CACHE_LOCK = threading.Lock()


def _record_key(ref: ImageReference, arch: str) -> str:
    return "docker/base-images/" + hashlib.sha256(f"{ref}|linux/{arch}".encode()).hexdigest()


def resolve_base_image(reference: str, storage: Storage, *, credentials: str | None = None,
                       insecure: bool = False, work_dir: str | Path | None = None,
                       architecture: str | None = None) -> BaseImage:
    """The base image ``reference`` with its layer blobs in ``storage`` (pulled if missing).

    Resolved once, then trusted: a digest reference forever, a tag for :data:`TAG_CACHE_SECONDS`
    (after which a tag that moved gives a new base). The resolution is kept in memory *and* as a
    small record in storage, because RQ runs every job in a fresh fork: without the record each image
    job would ask the registry again. A resolution whose blobs left storage is pulled again.
    """
    ref = parse_reference(reference)
    arch = architecture or image_architecture()
    key = (f"{ref}|{arch}", credentials, insecure)
    ttl = float("inf") if ref.digest else TAG_CACHE_SECONDS
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    cached = hit[0] if hit is not None and time.monotonic() < hit[1] else _stored_resolution(storage, ref, arch, ttl)
    if cached is not None and all(storage.exists(blob_key(layer.digest)) for layer in cached.layers):
        return replace(cached, layers=tuple(replace(layer, reused=True) for layer in cached.layers))
    start = time.perf_counter()
    client = RegistryClient(ref, credentials, insecure)
    try:
        base = _pull(client, ref, storage, arch, Path(work_dir) if work_dir else None)
    finally:
        client.close()
    new = sum(layer.size for layer in base.layers if not layer.reused)
    log.info("base image %s = %s: %d layers, %d bytes downloaded in %.2f s", ref, base.manifest_digest,
             len(base.layers), new, time.perf_counter() - start)
    with _CACHE_LOCK:
        _CACHE[key] = (base, time.monotonic() + ttl)
    storage.put_bytes(_record_key(ref, arch), json.dumps({
        "resolved_at": time.time(), "reference": base.reference, "manifest_digest": base.manifest_digest,
        "config": base.config, "layers": [[layer.digest, layer.diff_id, layer.size] for layer in base.layers],
    }).encode(), "application/json")
    return base


def _stored_resolution(storage: Storage, ref: ImageReference, arch: str, ttl: float) -> BaseImage | None:
    """The resolution another job stored, if still fresh (see :func:`resolve_base_image`)."""
    try:
        record = json.loads(storage.get_bytes(_record_key(ref, arch)))
        if time.time() - float(record["resolved_at"]) > ttl:
            return None
        layers = tuple(Layer(digest, diff_id, int(size), created_by=f"base: {ref}", media_type=LAYER_TAR_GZIP)
                       for digest, diff_id, size in record["layers"])
        return BaseImage(str(ref), record["manifest_digest"], layers, record["config"])
    except Exception:  # noqa: BLE001 - missing or unreadable: resolve again
        return None


def _pull(client: RegistryClient, ref: ImageReference, storage: Storage, arch: str,
          work_dir: Path | None) -> BaseImage:
    data, media_type, digest = client.get_json("manifests", ref.reference, _ACCEPT)
    manifest = _load(data, ref, "manifest")
    media_type = manifest.get("mediaType") or media_type
    if media_type in (MANIFEST_LIST_V2, OCI_INDEX) or "manifests" in manifest:
        entry = _pick_platform(manifest, ref, arch)
        data, media_type, digest = client.get_json("manifests", entry["digest"], _ACCEPT)
        manifest = _load(data, ref, "manifest")
        media_type = manifest.get("mediaType") or media_type
    if media_type in MANIFEST_V1 or manifest.get("schemaVersion") == 1:
        raise ArtifactError(f"base image {ref}: Docker schema 1 manifests are not supported (re-push the "
                            "image with a current client to get a v2 schema 2 or OCI manifest)")
    if media_type not in (MANIFEST_V2, OCI_MANIFEST) or "config" not in manifest:
        raise ArtifactError(f"base image {ref}: unsupported manifest media type {media_type!r}")
    config_bytes, _, _ = client.get_json("blobs", manifest["config"]["digest"])
    config = _load(config_bytes, ref, "config")
    if config.get("os", "linux") != "linux" or config.get("architecture", arch) != arch:
        raise ArtifactError(f"base image {ref} is {config.get('os')}/{config.get('architecture')}; "
                            f"images here are built for linux/{arch}")
    descriptors = manifest.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    for d in descriptors:
        if d.get("mediaType") not in GZIP_LAYERS or not _DIGEST.match(str(d.get("digest"))):
            raise ArtifactError(f"base image {ref}: layer {d.get('digest')} has media type {d.get('mediaType')!r}; "
                                "only gzip layers (Docker or OCI tar+gzip) can go into a Docker v2 image")
    if len(diff_ids) != len(descriptors):
        raise ArtifactError(f"base image {ref}: {len(descriptors)} layers but {len(diff_ids)} diff_ids in its config")
    tmp = Path(tempfile.mkdtemp(prefix="base-image-", dir=work_dir))
    try:
        layers = tuple(
            Layer(d["digest"], diff_id, int(d["size"]), created_by=f"base: {ref}",
                  reused=not client.copy_blob(d, diff_id, storage, tmp), media_type=LAYER_TAR_GZIP)
            for d, diff_id in zip(descriptors, diff_ids, strict=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BaseImage(str(ref), digest, layers, config)


def _load(data: bytes, ref: ImageReference, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as err:
        raise ArtifactError(f"base image {ref}: its {what} is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise ArtifactError(f"base image {ref}: its {what} is not a JSON object")
    return value


def _pick_platform(index: dict[str, Any], ref: ImageReference, arch: str) -> dict[str, Any]:
    """The linux/<arch> entry of a manifest list or OCI index (attestation entries have os 'unknown')."""
    available = []
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") or {}
        available.append(f"{platform.get('os')}/{platform.get('architecture')}")
        if platform.get("os") == "linux" and platform.get("architecture") == arch and _DIGEST.match(
                str(entry.get("digest"))):
            return entry
    raise ArtifactError(f"base image {ref} has no linux/{arch} image (it has: {', '.join(available) or 'none'})")
