"""Base images: environment images built on an image pulled from a v2 registry.

Two real sources: an in-test registry with the Bearer token flow serving OCI media types (index,
manifest, gzip layers: what Docker Hub or ghcr.io answer), and our own conda-store server, whose
environment image becomes the base of a second conda-store's images (Basic auth, Docker types).
Results are pulled with skopeo and unpacked with umoci, which re-checks every diff_id.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.schema import BuildArtifactType
from conda_store_jupyter.builder import base_image as bi
from conda_store_jupyter.builder.base_image import ImageReference, parse_challenge, parse_reference, resolve_base_image
from conda_store_jupyter.builder.image import build_image, image_architecture, write_oci_layout
from conda_store_jupyter.exceptions import ArtifactError
from conda_store_jupyter.storage.base import blob_key
from conda_store_jupyter.storage.local import LocalStorage
from conda_store_jupyter.testing.channel import install_prefix
from conda_store_jupyter.worker.images import image_for_build

from .fixtures_service import _DB_NUMBERS, completed_build
from .processes import free_port
from .test_registry import ADMIN, UMOCI, needs_clients, running_service, skopeo_copy, umoci_unpack

ARCH = image_architecture()


# -- references and challenges ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("debian", ImageReference("registry-1.docker.io", "library/debian", "latest")),
    ("debian:bookworm-slim", ImageReference("registry-1.docker.io", "library/debian", "bookworm-slim")),
    ("docker.io/library/debian:12", ImageReference("registry-1.docker.io", "library/debian", "12")),
    ("index.docker.io/jupyter/base-notebook", ImageReference("registry-1.docker.io", "jupyter/base-notebook")),
    ("myorg/tool:1.0", ImageReference("registry-1.docker.io", "myorg/tool", "1.0")),
    ("127.0.0.1:5000/team/env:latest", ImageReference("127.0.0.1:5000", "team/env", "latest")),
    ("localhost/x", ImageReference("localhost", "x")),  # not Docker Hub, so no library/
    ("ghcr.io/a/b/c@sha256:" + "a" * 64, ImageReference("ghcr.io", "a/b/c", "latest", "sha256:" + "a" * 64)),
    ("reg.example:443/a:v1@sha256:" + "b" * 64, ImageReference("reg.example:443", "a", "v1", "sha256:" + "b" * 64)),
])
def test_parse_reference(text, expected) -> None:
    assert parse_reference(text) == expected
    assert parse_reference(str(expected)) == expected  # str() round-trips


@pytest.mark.parametrize("text", [
    "", "Debian", "debian:", "debian:bad/tag", "host:5000/", "a//b", "http://host/x", "x@sha256:abc",
    "x@md5:" + "a" * 32, "bad_host_.com:5000/x", "x:" + "t" * 129, "a b", "-x", "x/../y",
])
def test_parse_reference_rejects_junk(text) -> None:
    with pytest.raises(ArtifactError, match="invalid base image reference"):
        parse_reference(text)


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                      "scope": "repository:samalba/my-app:pull,push"}
    assert parse_challenge('Basic realm="conda-store"') == ("basic", {"realm": "conda-store"})
    assert parse_challenge("Bearer realm=http://h/t, service=s") == ("bearer", {"realm": "http://h/t", "service": "s"})


# -- an OCI registry with the Bearer token flow, in the test -----------------------------------------

TOKEN = "token-1234"
CREDS = "robot:s3cret"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip of it in two members, as parallel compressors write)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    half = len(tar_bytes) // 2
    return tar_bytes, gzip.compress(tar_bytes[:half], mtime=0) + gzip.compress(tar_bytes[half:], mtime=0)


class FakeRegistry:
    """Pull-only registry: manifests/blobs need a Bearer token from /token (which needs Basic ``CREDS``)."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[str, bytes]] = {}  # "manifests/<ref>" | "blobs/<digest>"
        self.token_requests: list[dict] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/token":
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    registry.token_requests.append(query)
                    expected = "Basic " + base64.b64encode(CREDS.encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        return self._send(401, b'{"details":"bad credentials"}', {})
                    return self._send(200, json.dumps({"token": TOKEN}).encode(), {})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    challenge = (f'Bearer realm="http://{self.headers["Host"]}/token",service="fake",'
                                 'scope="repository:lib/img:pull"')
                    return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}',
                                      {"WWW-Authenticate": challenge})
                key = url.path.removeprefix("/v2/lib/img/")
                if key not in registry.objects:
                    return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"nope"}]}',
                                      {"Content-Type": "application/json"})
                media_type, body = registry.objects[key]
                self._send(200, body, {"Content-Type": media_type, "Docker-Content-Digest": _digest(body)})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def blob(self, data: bytes, media_type: str = "application/octet-stream") -> dict:
        self.objects[f"blobs/{_digest(data)}"] = (media_type, data)
        return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}

    def manifest(self, tag: str, obj: dict, media_type: str = OCI_MANIFEST) -> dict:
        data = json.dumps(obj).encode()
        self.objects[f"manifests/{tag}"] = self.objects[f"manifests/{_digest(data)}"] = (media_type, data)
        return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}


@pytest.fixture(scope="module")
def fake_registry() -> Iterator[FakeRegistry]:
    registry = FakeRegistry()
    tar1, gz1 = _layer({"etc/base-marker": b"from the base\n", "opt/conda/base-owned.txt": b"base\n"})
    tar2, gz2 = _layer({"usr/share/doc/base/README": b"second layer\n"})
    config = {"architecture": ARCH, "os": "linux",
              "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "CONDA_PREFIX=/nope"],
                         "WorkingDir": "/work", "User": "1000", "Entrypoint": ["/tini"], "Cmd": ["bash"]},
              "rootfs": {"type": "layers", "diff_ids": [_digest(tar1), _digest(tar2)]}}
    layers = [registry.blob(gz1, bi.OCI_LAYER_GZIP), registry.blob(gz2, bi.OCI_LAYER_GZIP)]
    cfg = registry.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    mine = registry.manifest("single", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": layers})
    other_arch = "s390x" if ARCH != "s390x" else "amd64"
    registry.manifest("latest", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**mine, "platform": {"os": "linux", "architecture": other_arch}},
        {**mine, "platform": {"os": "unknown", "architecture": "unknown"}},  # an attestation entry
        {**mine, "platform": {"os": "linux", "architecture": ARCH}},
    ]}, OCI_INDEX)
    registry.manifest("foreign", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**mine, "platform": {"os": "linux", "architecture": other_arch}}]}, OCI_INDEX)
    registry.manifest("zstd", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [
        {**layers[0], "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd"}]})
    registry.manifest("v1", {"schemaVersion": 1, "name": "lib/img", "fsLayers": []},
                      "application/vnd.docker.distribution.manifest.v1+prettyjws")
    bad = gz2[:-8] + bytes(8)  # right size, wrong bytes
    registry.manifest("corrupt", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [
        layers[0], {**layers[1], "digest": _digest(bad)}]})
    registry.objects[f"blobs/{_digest(bad)}"] = ("application/octet-stream", gz2)  # served under the wrong name
    registry.layers = layers  # type: ignore[attr-defined]
    registry.config = config  # type: ignore[attr-defined]
    thread = threading.Thread(target=registry.server.serve_forever, daemon=True)
    thread.start()
    yield registry
    registry.server.shutdown()
    registry.server.server_close()
    thread.join()


def test_bearer_flow_index_and_oci_layers(fake_registry, tmp_path, local_channel, package_cache_dir) -> None:
    storage = LocalStorage(store_directory=str(tmp_path / "store"))
    ref = f"{fake_registry.host}/lib/img:latest"
    base = resolve_base_image(ref, storage, credentials=CREDS, insecure=True)

    assert fake_registry.token_requests[-1] == {"service": "fake", "scope": "repository:lib/img:pull"}
    assert [l.digest for l in base.layers] == [l["digest"] for l in fake_registry.layers]
    assert [l.diff_id for l in base.layers] == fake_registry.config["rootfs"]["diff_ids"]
    assert all(l.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip" for l in base.layers)
    assert not any(l.reused for l in base.layers)
    for layer in base.layers:  # stored byte for byte
        assert _digest(storage.get_bytes(blob_key(layer.digest))) == layer.digest
    # Resolved once per process: the second call neither asks the token server nor downloads.
    asked = len(fake_registry.token_requests)
    again = resolve_base_image(ref, storage, credentials=CREDS, insecure=True)
    assert len(fake_registry.token_requests) == asked and all(l.reused for l in again.layers)
    bi._CACHE.clear()  # a new job is a new fork: the record in storage answers
    assert resolve_base_image(ref, storage, credentials=CREDS, insecure=True) == again
    assert len(fake_registry.token_requests) == asked
    # The same image by digest (the manifest the index pointed at).
    pinned = resolve_base_image(f"{fake_registry.host}/lib/img@{base.manifest_digest}", storage,
                                credentials=CREDS, insecure=True)
    assert [(l.digest, l.diff_id, l.reused) for l in pinned.layers] == [(l.digest, l.diff_id, True) for l in again.layers]

    prefix = install_prefix(local_channel.url, package_cache_dir, tmp_path / "env", ["hello"])
    image = build_image(prefix, storage, base=base, work_dir=tmp_path)
    manifest = json.loads(image.manifest)
    config = json.loads(image.config)
    assert [l["digest"] for l in manifest["layers"][:2]] == [l.digest for l in base.layers]
    assert {l["mediaType"] for l in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert config["rootfs"]["diff_ids"][:2] == [l.diff_id for l in base.layers]
    assert config["config"] == {"Env": ["PATH=/opt/conda/bin:/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
                                        "CONDA_PREFIX=/opt/conda"],
                                "Cmd": ["/bin/sh"], "WorkingDir": "/work", "User": "1000"}
    assert config["history"][0]["created_by"] == f"base: {parse_reference(ref)}"
    if UMOCI:
        write_oci_layout(storage, image.digest, tmp_path / "oci")
        conda = umoci_unpack(tmp_path / "oci", "latest", tmp_path / "bundle")
        assert (conda.parent.parent / "etc" / "base-marker").read_text() == "from the base\n"
        assert (conda / "base-owned.txt").exists() and (conda / "bin" / "hello").exists()


@pytest.mark.parametrize("tag, creds, message", [
    ("nope", CREDS, "tag or digest 'nope' not found in 127.0.0.1:"),
    ("single", "robot:wrong", "the token server http://127.0.0.1:"),
    ("foreign", CREDS, f"has no linux/{ARCH} image (it has: linux/"),
    ("zstd", CREDS, "has media type 'application/vnd.oci.image.layer.v1.tar+zstd'; only gzip layers"),
    ("v1", CREDS, "Docker schema 1 manifests are not supported"),
    ("corrupt", CREDS, "digest mismatch for layer sha256:"),
])
def test_base_image_errors_are_clear(fake_registry, tmp_path, tag, creds, message) -> None:
    storage = LocalStorage(store_directory=str(tmp_path / "store"))
    with pytest.raises(ArtifactError, match=re.escape(message)) as err:
        resolve_base_image(f"{fake_registry.host}/lib/img:{tag}", storage, credentials=creds, insecure=True)
    assert creds.split(":")[1] not in str(err.value)  # never leak the password
    if tag == "corrupt":  # nothing unverified was stored
        assert not storage.exists(blob_key(fake_registry.layers[1]["digest"]))


def test_credentials_never_go_to_a_plain_http_token_server(fake_registry) -> None:
    """A registry reached over https whose challenge names an http realm: before, the Basic
    credentials were sent there in clear text. Only ``insecure`` (plain-http registries) allows it."""
    client = bi.RegistryClient(parse_reference(f"{fake_registry.host}/lib/img:single"), credentials=CREDS)
    client.base_url = f"http://{fake_registry.host}/v2/lib/img"  # stands in for the https registry
    before = len(fake_registry.token_requests)
    try:
        with pytest.raises(ArtifactError, match="is not https.*docker_base_image_insecure") as err:
            client.get_json("manifests", "single")
    finally:
        client.close()
    assert len(fake_registry.token_requests) == before  # the token server was never asked
    assert CREDS.split(":")[1] not in str(err.value)


def test_unreachable_registry(tmp_path) -> None:
    port = free_port()  # a port nobody listens on
    with pytest.raises(ArtifactError, match=f"registry 127.0.0.1:{port} unreachable"):
        resolve_base_image(f"127.0.0.1:{port}/lib/img:latest", LocalStorage(store_directory=str(tmp_path)),
                           insecure=True)


# -- our own registry as the source: a conda-store image under another conda-store's images -----------

@pytest.fixture(scope="module")
def source(tmp_path_factory, redis_server_url, local_channel, package_cache_dir):
    """conda-store A with team/base (hello 2 + greet-data) and its image."""
    with running_service(tmp_path_factory.mktemp("source"), f"{redis_server_url}/{next(_DB_NUMBERS)}",
                         local_channel, package_cache_dir) as service:
        build_id = service.submit("team", "base", ["hello", "greet-data"])
        digest = service.wait_for_image(build_id)
        manifest = json.loads(service.store.storage.get_bytes(blob_key(digest)))
        config = json.loads(service.store.storage.get_bytes(blob_key(manifest["config"]["digest"])))
        yield service, manifest, config


@needs_clients
def test_environment_image_on_a_conda_store_base(source, tmp_path, redis_server_url, local_channel,
                                                 package_cache_dir) -> None:
    service_a, base_manifest, base_config = source
    extra = {"CondaStore": {"default_docker_base_image": f"{service_a.host}/team/base:latest",
                            "docker_base_image_credentials": f"x:{ADMIN}",
                            "docker_base_image_insecure": True}}
    (tmp_path / "b").mkdir()
    with running_service(tmp_path / "b", f"{redis_server_url}/{next(_DB_NUMBERS)}", local_channel,
                         package_cache_dir, extra) as service_b:
        build_id = service_b.submit("team", "pyenv", ["python", "six"])
        digest = service_b.wait_for_image(build_id)
        manifest = json.loads(service_b.store.storage.get_bytes(blob_key(digest)))
        config = json.loads(service_b.store.storage.get_bytes(blob_key(manifest["config"]["digest"])))
        n = len(base_manifest["layers"])
        assert [l["digest"] for l in manifest["layers"][:n]] == [l["digest"] for l in base_manifest["layers"]]
        assert config["rootfs"]["diff_ids"][:n] == base_config["rootfs"]["diff_ids"]
        assert len(manifest["layers"]) > n
        assert config["config"]["Env"][0].startswith("PATH=/opt/conda/bin:/usr/local/sbin")
        assert config["config"]["Env"].count("CONDA_PREFIX=/opt/conda") == 1
        assert f"base: {service_a.host}/team/base:latest" in service_b.log(build_id)
        # The configured base wins: its own (host runtime) base is not added a second time.
        assert base_config["history"][0]["created_by"].startswith("base: host runtime")
        host_base_layer = base_manifest["layers"][0]
        assert manifest["layers"].count(host_base_layer) == 1

        copied = skopeo_copy(f"docker://{service_b.host}/team/pyenv:latest", f"oci:{tmp_path / 'oci'}:latest")
        assert copied.returncode == 0, copied.stderr
    conda = umoci_unpack(tmp_path / "oci", "latest", tmp_path / "bundle")
    assert (conda / "share" / "greet-data" / "greetings.txt").exists()  # from the base
    hello = subprocess.run([conda / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert hello.stdout.startswith("hello 2.")
    run = subprocess.run([conda / "bin" / "python", "-c", "import six, sys; print(sys.prefix)"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == str(conda)
    metas = sorted(p.name.split("-")[0] for p in (conda / "conda-meta").glob("*.json"))
    assert "hello" in metas and "python" in metas  # both environments' records, merged


def _failed_image_reason(tmp_path: Path, package_cache_dir: Path, **traits: object) -> str:
    """Run the image job in-process for a store with these base traits; the reason it recorded."""
    store = CondaStore(store_directory=str(tmp_path / "store"), package_cache_directory=str(package_cache_dir),
                       docker_base_image_insecure=True, **traits)
    try:
        build_id = completed_build(store, "env", ["python"])
        with store.session() as db:
            prefix = db.get(orm.Build, build_id).prefix_path(store.store_path)
        (prefix / "conda-meta").mkdir(parents=True)  # the base fails before the prefix is read
        assert image_for_build(store, build_id) is None
        with store.session() as db:
            build = db.get(orm.Build, build_id)
            assert build.status.value == "COMPLETED" and build.image_status.value == "FAILED"
            from conda_store_jupyter.server.registry import RegistryError, resolve_reference

            with pytest.raises(RegistryError) as err:  # a pull of that environment says why
                resolve_reference(db, build.environment, "latest")
            reason = build.artifact_state(BuildArtifactType.DOCKER_MANIFEST).reason
            assert reason in err.value.message
            return reason
    finally:
        store.dispose()


def test_base_failures_are_recorded_on_the_build(source, tmp_path, package_cache_dir) -> None:
    host = source[0].host
    reason = _failed_image_reason(tmp_path / "1", package_cache_dir,
                                  default_docker_base_image=f"{host}/team/base:no-such-tag",
                                  docker_base_image_credentials=f"x:{ADMIN}")
    assert "not found" in reason and "MANIFEST_UNKNOWN" in reason and "no-such-tag" in reason
    reason = _failed_image_reason(tmp_path / "2", package_cache_dir,
                                  default_docker_base_image=f"{host}/team/base:latest",
                                  docker_base_image_credentials="x:not-a-token")
    assert "the configured credentials were rejected" in reason and "HTTP 401" in reason
    assert "not-a-token" not in reason
    reason = _failed_image_reason(tmp_path / "3", package_cache_dir,
                                  default_docker_base_image=f"{host}/team/base:latest")
    assert "requires credentials" in reason


def test_host_base_failures_are_recorded_on_the_build(tmp_path, package_cache_dir) -> None:
    reason = _failed_image_reason(tmp_path, package_cache_dir,
                                  docker_host_base_packages=["libc6", "no-such-package-zz"])
    assert "host runtime base" in reason and "no-such-package-zz not installed" in reason


def test_scratch_means_no_base(tmp_path, local_channel, package_cache_dir) -> None:
    """``default_docker_base_image = "scratch"``: images hold only the environment, as before bases."""
    store = CondaStore(store_directory=str(tmp_path / "store"), package_cache_directory=str(package_cache_dir),
                       default_docker_base_image="scratch")
    try:
        build_id = completed_build(store, "env", ["python", "six"])
        with store.session() as db:
            prefix = db.get(orm.Build, build_id).prefix_path(store.store_path)
        install_prefix(local_channel.url, package_cache_dir, prefix, ["python", "six"])
        digest = image_for_build(store, build_id)
        manifest = json.loads(store.storage.get_bytes(blob_key(digest)))
        config = json.loads(store.storage.get_bytes(blob_key(manifest["config"]["digest"])))
    finally:
        store.dispose()
    assert not [h for h in config["history"] if h["created_by"].startswith("base: ")]
    assert config["history"][0]["created_by"].startswith("conda package")
    assert config["config"]["Env"] == [
        "PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CONDA_PREFIX=/opt/conda"]
