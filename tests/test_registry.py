"""Environments as images: the image job (worker side) and the Docker v2 registry (server side).

Everything is real: prefixes are installed by rattler from the local test channel, images are pulled
with Debian's skopeo and unpacked with umoci (which re-hashes every layer against its diff_id), and
the end-to-end tests run ``conda-store-server`` with real Redis and real ``conda-store-worker``
processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import httpx
import pytest
from sqlalchemy import select

from conda_store_jupyter import orm
from conda_store_jupyter.app import CondaStore
from conda_store_jupyter.exceptions import InvalidNameError
from conda_store_jupyter.schema import ArtifactStatus, BuildArtifactType, BuildStatus
from conda_store_jupyter.server.testing import bearer
from conda_store_jupyter.testing.channel import install_prefix
from conda_store_jupyter.storage.base import blob_key
from conda_store_jupyter.worker.images import image_for_build

from .fixtures_service import completed_build, wait_for
from .processes import stop_process
from .rootfs import image_env, needs_root, oci_config, run_in_rootfs

UMOCI = shutil.which("umoci")
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SKOPEO = shutil.which("skopeo")


# -- the image job, without a queue ------------------------------------------------------------------

def _log(store: CondaStore, build_id: int) -> str:
    with store.session() as db:
        key = db.get(orm.Build, build_id).artifact(BuildArtifactType.LOGS).key
    return store.storage.get_bytes(key).decode()


@pytest.fixture
def store(tmp_path, package_cache_dir) -> CondaStore:
    store = CondaStore(store_directory=str(tmp_path / "store"), package_cache_directory=str(package_cache_dir))
    yield store
    store.dispose()


def test_image_job_records_manifest_and_logs_layers(store, local_channel, package_cache_dir) -> None:
    build_id = completed_build(store, "sixenv", ["python", "six"])
    with store.session() as db:
        prefix = db.get(orm.Build, build_id).prefix_path(store.store_path)
    install_prefix(local_channel.url, package_cache_dir, prefix, ["python", "six"])

    digest = image_for_build(store, build_id)

    assert digest is not None and digest.startswith("sha256:")
    with store.session() as db:
        build = db.get(orm.Build, build_id)
        assert build.status is BuildStatus.COMPLETED and build.status_info is None
        assert build.artifact(BuildArtifactType.DOCKER_MANIFEST).key == blob_key(digest)
    manifest = store.storage.get_bytes(blob_key(digest))
    assert hashlib.sha256(manifest).hexdigest() == digest.split(":")[1]
    text = _log(store, build_id)
    assert text.startswith("BUILD COMPLETED")  # appended to, not replaced
    assert f"image {digest}:" in text and "== docker image:" in text
    assert "python-" in text and "six-" in text  # one line per package layer
    assert "base: host runtime libc6:" in text  # images run by default: the host runtime base is first
    # Idempotent: a second run finds the artifact and builds nothing.
    assert image_for_build(store, build_id) == digest
    assert _log(store, build_id).count("-- docker image") == 1
    assert not any((store.store_path / ".image-work").iterdir())  # scratch space cleaned


def test_image_job_failure_leaves_build_completed_with_reason(store) -> None:
    build_id = completed_build(store, "gone", ["python"])  # its prefix was never installed

    assert image_for_build(store, build_id) is None

    with store.session() as db:
        build = db.get(orm.Build, build_id)
        assert build.status is BuildStatus.COMPLETED
        assert build.artifact(BuildArtifactType.DOCKER_MANIFEST) is None
        assert build.image_status is ArtifactStatus.FAILED and build.status_info is None  # the build is fine
        assert "prefix" in build.artifact_state(BuildArtifactType.DOCKER_MANIFEST).reason
    assert "IMAGE FAILED: the build prefix" in _log(store, build_id)
    # A pull of it says why at once (no waiting for an image that will not come).
    from conda_store_jupyter.server.registry import RegistryError, resolve_reference

    with store.session() as db:
        env = db.get(orm.Build, build_id).environment
        with pytest.raises(RegistryError) as err:
            resolve_reference(db, env, "latest")
    assert err.value.code == "MANIFEST_UNKNOWN" and "has no image: the build prefix" in err.value.message


def test_image_job_internal_error_keeps_the_traceback_out_of_the_build_log(store, monkeypatch, caplog) -> None:
    """Build logs and status_info are readable by every user of the build: one line of reason there,
    the traceback (worker paths and code) only in the worker's own log."""
    import logging

    from conda_store_jupyter.worker import images

    def broken(store, prefix):
        raise RuntimeError("disk said no\nat /srv/secret/path")

    monkeypatch.setattr(images, "_build", broken)
    build_id = completed_build(store, "broken", ["python"])
    with caplog.at_level(logging.ERROR, logger=images.__name__):
        assert image_for_build(store, build_id) is None
    text = _log(store, build_id)
    assert "Traceback" not in text and "def broken" not in text and "raise RuntimeError" not in text
    (failed,) = [line for line in text.splitlines() if line.startswith("IMAGE FAILED")]
    assert failed == ("IMAGE FAILED: internal error: RuntimeError: disk said no at /srv/secret/path "
                      "(details in the worker log)")
    with store.session() as db:
        info = db.get(orm.Build, build_id).artifact_state(BuildArtifactType.DOCKER_MANIFEST).reason
    assert info == "internal error: RuntimeError: disk said no at /srv/secret/path (details in the worker log)"
    (record,) = [r for r in caplog.records if r.name == images.__name__ and r.levelno == logging.ERROR]
    assert record.exc_info is not None and f"build {build_id}" in record.getMessage()


def test_image_job_skips_unfinished_builds(store) -> None:
    build_id = completed_build(store, "queued", ["python"])
    with store.session() as db:
        db.get(orm.Build, build_id).status = BuildStatus.FAILED
    assert image_for_build(store, build_id) is None
    assert "docker image" not in _log(store, build_id)


# -- end to end: conda-store-server + Redis + conda-store-worker, pulled by skopeo -------------------

ADMIN = "registry-admin-token-0123456789"
OTHER = "registry-other-token-0123456789"  # admin of namespace "other" only
DYNAMIC_OWNER = "registry-dynamic-token-0123456789"  # what hub user "Conda-Store-Dynamic" used to get
BUILD_TIMEOUT = 240.0
needs_clients = pytest.mark.skipif(SKOPEO is None or UMOCI is None, reason="skopeo/umoci not installed")


@dataclass
class Service:
    env: object  # fixtures_service.ServiceEnv (config file, store, workers)
    server: subprocess.Popen
    url: str  # REST base URL, with url_prefix
    host: str  # 127.0.0.1:<port>: the registry is at its root whatever url_prefix is

    @property
    def store(self) -> CondaStore:
        return self.env.store

    def v2(self, path: str) -> str:
        return f"http://{self.host}/v2/{path.lstrip('/')}"

    def submit(self, namespace: str, name: str, dependencies: list[str]) -> int:
        spec = json.dumps({"name": name, "dependencies": dependencies})
        r = httpx.post(f"{self.url}api/v1/specification/", headers=bearer(ADMIN),
                       json={"namespace": namespace, "specification": spec}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["data"]["build_id"]

    def wait_for_image(self, build_id: int) -> str:
        """Wait for the build and its image job; returns the manifest digest."""

        def image() -> str | None:
            with self.store.session() as db:
                build = db.get(orm.Build, build_id)
                assert build.status not in (BuildStatus.FAILED, BuildStatus.CANCELED), build.status_info
                assert build.image_status is not ArtifactStatus.FAILED, \
                    build.artifact_state(BuildArtifactType.DOCKER_MANIFEST).reason
                artifact = build.artifact(BuildArtifactType.DOCKER_MANIFEST)
                return "sha256:" + artifact.key.rsplit("/", 1)[1] if artifact else None

        try:
            return wait_for(image, BUILD_TIMEOUT, f"the image of build {build_id}", interval=0.2)
        except AssertionError:
            print(self.env.worker_logs()[-4000:])
            raise

    def build_key(self, build_id: int) -> str:
        with self.store.session() as db:
            return db.get(orm.Build, build_id).build_key

    def log(self, build_id: int) -> str:
        return _log(self.store, build_id)


def _basic(token: str, user: str = "x") -> tuple[str, str]:
    return (user, token)


def _errors(response: httpx.Response) -> list[str]:
    """Error codes of a registry error body (and it must be one)."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return [e["code"] for e in response.json()["errors"]]


@contextlib.contextmanager
def running_service(root: Path, redis_url: str, channel, package_cache_dir: Path,
                    extra_config: Mapping[str, Mapping[str, object]] | None = None) -> Iterator[Service]:
    """conda-store-server (a real subprocess, url_prefix /conda-store) and two workers on one config.

    ``extra_config``: more config sections (``{"CondaStore": {...}, "S3Storage": {...}}``); its
    traits override the defaults here."""
    import redis

    from conda_store_jupyter.testing.config import local_channel_traits, write_config
    from conda_store_jupyter.worker.tasks import load_store

    from .fixtures_service import ServiceEnv

    redis.Redis.from_url(redis_url).flushdb()
    tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "admin"},
        OTHER: {"primary_namespace": "other", "role_bindings": {"other/*": ["admin"]}, "username": "bob"},
        DYNAMIC_OWNER: {"primary_namespace": "conda-store-dynamic",
                        "role_bindings": {"conda-store-dynamic/*": ["admin"]}, "username": "mallory"},
    }
    sections: dict[str, dict[str, object]] = {
        "CondaStore": {
            "store_directory": str(root / "store"),
            "database_url": f"sqlite:///{root / 'conda-store.sqlite'}",
            "redis_url": redis_url,
            **local_channel_traits(channel, package_cache_dir),
            "build_artifacts": ["LOCKFILE", "YAML", "DOCKER_MANIFEST"],
            "build_timeout": int(BUILD_TIMEOUT),
        },
        "AuthenticationBackend": {"predefined_tokens": tokens},
        "CondaStoreServer": {"url_prefix": "/conda-store"},
        "Registry": {"dynamic_wait_timeout": BUILD_TIMEOUT, "dynamic_poll_interval": 0.2},
    }
    for section, traits in (extra_config or {}).items():
        sections[section] = {**sections.get(section, {}), **traits}
    config = write_config(root / "conda_store_config.py", sections.pop("CondaStore"), **sections)
    env = ServiceEnv(config=config, store=load_store(str(config)), tmp=root)
    out = root / "server.log"
    with open(out, "wb") as log:
        server = subprocess.Popen([str(Path(sys.executable).with_name("conda-store-server")), "--config", str(config),
                                   "--port", "0"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        line = wait_for(lambda: re.search(r"listening on (http://(\S+?)(/\S*))", out.read_text()), 60,
                        "conda-store-server to listen")
        env.start_worker()
        env.start_worker()
        yield Service(env=env, server=server, url=line.group(1), host=line.group(2))
    finally:
        stop_process(server, timeout=10)
        env.stop_workers()
        env.store.dispose()
        print(out.read_text()[-3000:])


@pytest.fixture(scope="module")
def service(tmp_path_factory, redis_server_url, local_channel, package_cache_dir) -> Iterator[Service]:
    from .fixtures_service import _DB_NUMBERS

    with running_service(tmp_path_factory.mktemp("registry"), f"{redis_server_url}/{next(_DB_NUMBERS)}",
                         local_channel, package_cache_dir) as service:
        yield service


@pytest.fixture(scope="module")
def sixenv(service) -> dict:
    """team/sixenv (python, six, hello 2) built with its image: the first build of the environment."""
    build_id = service.submit("team", "sixenv", ["python", "six", "hello"])
    digest = service.wait_for_image(build_id)
    return {"build_id": build_id, "digest": digest, "key": service.build_key(build_id)}


def skopeo_copy(src: str, dest: str, token: str = ADMIN, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([SKOPEO, "copy", "--src-tls-verify=false", "--src-creds", f"x:{token}", *extra,
                           src, dest], capture_output=True, text=True, timeout=BUILD_TIMEOUT + 60)


def umoci_unpack(layout: Path, ref: str, bundle: Path) -> Path:
    """Unpack with umoci, which recomputes every layer's diff_id against the config."""
    subprocess.run([UMOCI, "unpack", "--rootless", "--image", f"{layout}:{ref}", str(bundle)],
                   check=True, capture_output=True, text=True)
    return bundle / "rootfs" / "opt" / "conda"


def test_v2_base_requires_credentials(service) -> None:
    r = httpx.get(service.v2(""))
    assert r.status_code == 401 and _errors(r) == ["UNAUTHORIZED"]
    assert r.headers["www-authenticate"] == 'Basic realm="conda-store"'
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert httpx.get(service.v2(""), auth=_basic("not-a-token")).status_code == 401
    ok = httpx.get(service.v2(""), auth=_basic(OTHER))
    assert ok.status_code == 200 and ok.json() == {}
    # Mounted at the server root although the REST API lives under /conda-store/.
    assert service.url.endswith("/conda-store/")
    assert httpx.get(f"{service.url}v2/", auth=_basic(ADMIN)).status_code == 404
    # Anything else under /v2/ answers in registry format, pushes included.
    put = httpx.put(service.v2("team/x/manifests/latest"), auth=_basic(ADMIN), content=b"{}")
    assert put.status_code == 405 and _errors(put) == ["UNSUPPORTED"]
    unknown = httpx.get(service.v2("team/nope/manifests/latest"), auth=_basic(ADMIN))
    assert unknown.status_code == 404 and _errors(unknown) == ["NAME_UNKNOWN"]


@needs_clients
def test_skopeo_pulls_and_umoci_unpacks_a_runnable_image(service, sixenv, tmp_path) -> None:
    ref = f"docker://{service.host}/team/sixenv:latest"
    copied = skopeo_copy(ref, f"dir:{tmp_path / 'dir'}")
    assert copied.returncode == 0, copied.stderr
    manifest = (tmp_path / "dir" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == sixenv["digest"]  # served byte-for-byte
    assert manifest == service.store.storage.get_bytes(blob_key(sixenv["digest"]))

    copied = skopeo_copy(ref, f"oci:{tmp_path / 'oci'}:latest")
    assert copied.returncode == 0, copied.stderr
    conda = umoci_unpack(tmp_path / "oci", "latest", tmp_path / "bundle")
    run = subprocess.run([conda / "bin" / "python", "-c", "import six, sys; print(six.__name__, sys.prefix)"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["six", str(conda)]
    assert subprocess.run([conda / "bin" / "hello"], capture_output=True, text=True,
                          check=True).stdout.startswith("hello 2.")
    # What `docker run -it <host>/team/sixenv python` needs: Env, and python on its PATH.
    config = oci_config(tmp_path / "oci", "latest")
    env = image_env(config)
    assert env["PATH"].startswith("/opt/conda/bin:") and "/usr/bin" in env["PATH"].split(":")
    assert env["LANG"] == "C.UTF-8" and env["CONDA_PREFIX"] == "/opt/conda"
    assert config["config"]["Cmd"] == ["/opt/conda/bin/python"] and "Entrypoint" not in config["config"]
    # The image job's report is at the end of the build's log.
    text = service.log(sixenv["build_id"])
    assert f"image {sixenv['digest']}:" in text and "== docker image:" in text
    assert text.endswith(f"\nIMAGE READY: {sixenv['digest']}\n")  # the image's outcome is the last line
    build = httpx.get(f"{service.url}api/v1/build/{sixenv['build_id']}/", headers=bearer(ADMIN)).json()["data"]
    assert (build["status"], build["image_status"]) == ("COMPLETED", "READY")


def _runs_in_chroot(layout: Path, ref: str, bundle: Path, code: str) -> str:
    """Unpack ``ref`` and run ``python -c code`` inside its root filesystem, as ``docker run`` would."""
    umoci_unpack(layout, ref, bundle)
    run = run_in_rootfs(bundle / "rootfs", ["python", "-c", code], image_env(oci_config(layout, ref)))
    assert run.returncode == 0, run.stderr
    return run.stdout


@needs_clients
@needs_root
def test_pulled_image_runs_in_its_own_root(service, sixenv, tmp_path) -> None:
    """Nothing from the host: the image brings its C runtime (the host runtime base, by default)."""
    copied = skopeo_copy(f"docker://{service.host}/team/sixenv:latest", f"oci:{tmp_path / 'oci'}:latest")
    assert copied.returncode == 0, copied.stderr
    out = _runs_in_chroot(tmp_path / "oci", "latest", tmp_path / "bundle",
                          "import six, sys, os; print(six.__name__, sys.executable, os.path.exists('/root'))")
    assert out.split() == ["six", "/opt/conda/bin/python", "True"]


def test_head_and_tags(service, sixenv) -> None:
    auth = _basic(ADMIN)
    head = httpx.head(service.v2("team/sixenv/manifests/latest"), auth=auth)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["docker-content-digest"] == sixenv["digest"]
    assert head.headers["content-type"] == "application/vnd.docker.distribution.manifest.v2+json"
    manifest = httpx.get(service.v2(f"team/sixenv/manifests/{sixenv['digest']}"), auth=auth)
    assert manifest.status_code == 200 and int(head.headers["content-length"]) == len(manifest.content)
    layer = manifest.json()["layers"][0]
    blob_head = httpx.head(service.v2(f"team/sixenv/blobs/{layer['digest']}"), auth=auth)
    assert blob_head.status_code == 200 and blob_head.content == b""
    assert int(blob_head.headers["content-length"]) == layer["size"]
    assert blob_head.headers["docker-content-digest"] == layer["digest"]
    blob = httpx.get(service.v2(f"team/sixenv/blobs/{layer['digest']}"), auth=auth)
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
    # An OCI-only client gets the OCI form (same blobs) and can come back by its digest.
    oci = httpx.get(service.v2("team/sixenv/manifests/latest"), auth=auth,
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert oci.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    assert oci.json()["layers"][0]["digest"] == layer["digest"]
    again = httpx.head(service.v2(f"team/sixenv/manifests/{oci.headers['docker-content-digest']}"), auth=auth,
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert again.status_code == 200
    tags = httpx.get(service.v2("team/sixenv/tags/list"), auth=auth).json()
    assert tags == {"name": "team/sixenv", "tags": ["latest", sixenv["key"]]}
    missing = httpx.head(service.v2("team/sixenv/blobs/sha256:" + "0" * 64), auth=auth)
    assert missing.status_code == 404
    bad = httpx.get(service.v2("team/sixenv/blobs/md5:abc"), auth=auth)
    assert bad.status_code == 400 and _errors(bad) == ["DIGEST_INVALID"]
    unknown_tag = httpx.get(service.v2("team/sixenv/manifests/v1.0"), auth=auth)
    assert unknown_tag.status_code == 404 and _errors(unknown_tag) == ["MANIFEST_UNKNOWN"]


def test_manifest_by_digest_is_served_in_the_form_that_digest_names(service, sixenv) -> None:
    """A digest pins bytes: the body's sha256 is the requested digest whatever Accept says
    (only tag references are content-negotiated)."""
    auth, both = _basic(ADMIN), {"Accept": f"{OCI_MANIFEST}, {MANIFEST_V2}"}
    oci_digest = httpx.head(service.v2("team/sixenv/manifests/latest"), auth=auth,
                            headers={"Accept": OCI_MANIFEST}).headers["docker-content-digest"]
    assert oci_digest != sixenv["digest"]
    for digest, accept, media_type in ((oci_digest, both, OCI_MANIFEST),
                                       (sixenv["digest"], {"Accept": OCI_MANIFEST}, MANIFEST_V2),
                                       (sixenv["digest"], both, MANIFEST_V2),
                                       (oci_digest, {"Accept": MANIFEST_V2}, OCI_MANIFEST)):
        r = httpx.get(service.v2(f"team/sixenv/manifests/{digest}"), auth=auth, headers=accept)
        assert r.status_code == 200, (digest, accept, r.text)
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest, (digest, accept)
        assert r.headers["docker-content-digest"] == digest and r.headers["content-type"] == media_type
        head = httpx.head(service.v2(f"team/sixenv/manifests/{digest}"), auth=auth, headers=accept)
        assert head.headers["docker-content-digest"] == digest
        assert int(head.headers["content-length"]) == len(r.content)


def test_pull_needs_a_token_with_read_access(service, sixenv, tmp_path) -> None:
    manifest = service.v2("team/sixenv/manifests/latest")
    anonymous = httpx.get(manifest)
    assert anonymous.status_code == 401 and _errors(anonymous) == ["UNAUTHORIZED"]
    assert "www-authenticate" in anonymous.headers
    layer = service.store.storage.get_bytes(blob_key(sixenv["digest"]))
    blob = service.v2(f"team/sixenv/blobs/{json.loads(layer)['layers'][0]['digest']}")
    for url in (manifest, blob, service.v2("team/sixenv/tags/list")):
        denied = httpx.get(url, auth=_basic(OTHER))
        assert denied.status_code == 403 and _errors(denied) == ["DENIED"], url
        assert httpx.get(url).status_code == 401
    if SKOPEO is not None:
        refused = skopeo_copy(f"docker://{service.host}/team/sixenv:latest", f"dir:{tmp_path / 'x'}", OTHER)
        assert refused.returncode != 0 and "denied" in refused.stderr.lower(), refused.stderr


def _oci_blobs(layout: Path) -> dict[str, int]:
    blobs = layout / "blobs" / "sha256"
    return {p.name: p.stat().st_size for p in blobs.iterdir()} if blobs.exists() else {}


@pytest.fixture(scope="module")
def pkgenv(service) -> dict:
    """team/pkgenv (python, six, packaging): shares python and six with team/sixenv."""
    build_id = service.submit("team", "pkgenv", ["python", "six", "packaging"])
    return {"build_id": build_id, "digest": service.wait_for_image(build_id)}


def _image(service: Service, manifest_digest: str) -> tuple[dict, dict]:
    manifest = json.loads(service.store.storage.get_bytes(blob_key(manifest_digest)))
    return manifest, json.loads(service.store.storage.get_bytes(blob_key(manifest["config"]["digest"])))


def test_environments_share_one_base_layer(service, sixenv, pkgenv) -> None:
    """The default base is one layer, the same blob under every environment's image."""
    (six_manifest, six_config), (pkg_manifest, pkg_config) = _image(service, sixenv["digest"]), \
        _image(service, pkgenv["digest"])
    assert six_manifest["layers"][0] == pkg_manifest["layers"][0]
    assert six_config["rootfs"]["diff_ids"][0] == pkg_config["rootfs"]["diff_ids"][0]
    for config in (six_config, pkg_config):
        bases = [h["created_by"] for h in config["history"] if h["created_by"].startswith("base: ")]
        assert len(bases) == 1 and bases[0].startswith("base: host runtime libc6:")
        assert config["history"][0]["created_by"] == bases[0]
    reused = [line for line in service.log(pkgenv["build_id"]).splitlines() if "base: host runtime" in line]
    assert len(reused) == 1 and " reused " in reused[0]  # stored by the first image, only hashed since


@needs_clients
def test_second_environment_reuses_shared_layers(service, sixenv, pkgenv, tmp_path) -> None:
    """team/pkgenv shares python and six with team/sixenv: those layers are stored and pulled once."""
    build_id, digest = pkgenv["build_id"], pkgenv["digest"]
    layout = tmp_path / "layout"
    first = skopeo_copy(f"docker://{service.host}/team/sixenv:latest", f"oci:{layout}:sixenv")
    assert first.returncode == 0, first.stderr
    before = _oci_blobs(layout)
    second = skopeo_copy(f"docker://{service.host}/team/pkgenv:latest", f"oci:{layout}:pkgenv")
    assert second.returncode == 0, second.stderr
    layers = json.loads(service.store.storage.get_bytes(blob_key(digest)))["layers"]
    total = sum(layer["size"] for layer in layers)
    reused = sum(layer["size"] for layer in layers if layer["digest"].split(":")[1] in before)
    print(f"\nsecond pull: {reused} of {total} layer bytes ({100 * reused / total:.0f} %) were already "
          f"in the local layout; {len(_oci_blobs(layout)) - len(before)} new blobs")
    assert reused / total > 0.8
    # The image job saw the same thing on the server side and logged it.
    assert re.search(r"MB \((8[0-9]|9[0-9]) %\) reused from earlier images", service.log(build_id)), \
        service.log(build_id)
    conda = umoci_unpack(layout, "pkgenv", tmp_path / "bundle")
    subprocess.run([conda / "bin" / "python", "-c", "import six, packaging"], check=True)


def _history(service: Service, manifest_digest: str) -> str:
    manifest = json.loads(service.store.storage.get_bytes(blob_key(manifest_digest)))
    config = json.loads(service.store.storage.get_bytes(blob_key(manifest["config"]["digest"])))
    return " ".join(h["created_by"] for h in config["history"])


@needs_clients
def test_build_key_tag_keeps_pulling_the_older_build(service, sixenv, tmp_path) -> None:
    new_id = service.submit("team", "sixenv", ["python", "six", "hello <2"])  # a new build of the env
    new_digest = service.wait_for_image(new_id)
    assert new_digest != sixenv["digest"]

    def pulled(tag: str, name: str) -> tuple[str, Path]:
        copied = skopeo_copy(f"docker://{service.host}/team/sixenv:{tag}", f"dir:{tmp_path / name}")
        assert copied.returncode == 0, copied.stderr
        manifest = (tmp_path / name / "manifest.json").read_bytes()
        return "sha256:" + hashlib.sha256(manifest).hexdigest(), tmp_path / name

    assert pulled("latest", "latest")[0] == new_digest
    assert pulled(sixenv["key"], "old")[0] == sixenv["digest"]
    assert "hello-2." in _history(service, sixenv["digest"]) and "hello-1." in _history(service, new_digest)
    tags = httpx.get(service.v2("team/sixenv/tags/list"), auth=_basic(ADMIN)).json()["tags"]
    assert tags == ["latest", sixenv["key"], service.build_key(new_id)]


def test_dynamic_environment_names_never_collide() -> None:
    from conda_store_jupyter.server.registry_names import (
        decode_dynamic_segment,
        dynamic_environment_name,
    )

    assert dynamic_environment_name(["python", "six"]) == "python--six"
    assert dynamic_environment_name(["python-six"]) == "python-six"  # one package, another environment
    assert dynamic_environment_name(["hello.ge.2.0"]) != dynamic_environment_name(["hello.ge.2.0", "six"])
    with pytest.raises(InvalidNameError):
        decode_dynamic_segment("python--six")


def _dynamic_builds(service: Service, env_name: str) -> list[orm.Build]:
    from sqlalchemy import select

    with service.store.session() as db:
        return list(db.scalars(select(orm.Build).join(orm.Build.environment).join(orm.Environment.namespace).where(
            orm.Namespace.name == "conda-store-dynamic", orm.Environment.name == env_name)))


@needs_clients
def test_on_demand_image_pulls_and_runs(service, tmp_path) -> None:
    copied = skopeo_copy(f"docker://{service.host}/conda-store-dynamic/python/six:latest",
                         f"oci:{tmp_path / 'oci'}:latest")
    assert copied.returncode == 0, copied.stderr
    conda = umoci_unpack(tmp_path / "oci", "latest", tmp_path / "bundle")
    subprocess.run([conda / "bin" / "python", "-c", "import six"], check=True)
    (build,) = _dynamic_builds(service, "python--six")
    assert build.status is BuildStatus.COMPLETED
    # Pulled again (any segment order): served from the existing build, no new one.
    again = httpx.head(service.v2("conda-store-dynamic/six/python/manifests/latest"), auth=_basic(OTHER))
    assert again.status_code == 200 and len(_dynamic_builds(service, "python--six")) == 1
    tags = httpx.get(service.v2("conda-store-dynamic/python/six/tags/list"), auth=_basic(OTHER)).json()
    assert tags["tags"][0] == "latest"


@needs_clients
@needs_root
def test_on_demand_image_runs_in_its_own_root(service, tmp_path) -> None:
    copied = skopeo_copy(f"docker://{service.host}/conda-store-dynamic/six/python:latest",
                         f"oci:{tmp_path / 'oci'}:latest")
    assert copied.returncode == 0, copied.stderr
    assert _runs_in_chroot(tmp_path / "oci", "latest", tmp_path / "bundle", "import six; print('ok')") == "ok\n"


def test_only_store_admins_write_into_the_on_demand_namespace(service) -> None:
    """Admin of conda-store-dynamic by binding (as a user of that name was by default) is not enough."""
    api, h = f"{service.url}api/v1/", bearer(DYNAMIC_OWNER)
    spec = json.dumps({"name": "python--six", "dependencies": ["python", "hello"]})
    for body in ({"namespace": "conda-store-dynamic", "specification": spec}, {"specification": spec}):
        r = httpx.post(f"{api}specification/", headers=h, json=body, timeout=30)
        assert r.status_code == 403, r.text
    for method, path, body in (("POST", "namespace/conda-store-dynamic/", None),
                               ("PUT", "namespace/conda-store-dynamic/", {"metadata": {"x": 1}}),
                               ("PUT", "namespace/conda-store-dynamic/metadata/", {"x": 1}),
                               ("POST", "namespace/conda-store-dynamic/role/", {"other_namespace": "other",
                                                                              "role": "admin"}),
                               ("DELETE", "namespace/conda-store-dynamic/", None),
                               ("PUT", "environment/conda-store-dynamic/python--six/", {"description": "x"}),
                               ("DELETE", "environment/conda-store-dynamic/python--six/", None)):
        r = httpx.request(method, f"{api}{path}", headers=h, json=body, timeout=30)
        assert r.status_code == 403, (method, path, r.text)
    # Reading stays as it was, and store-wide admins may still manage the namespace.
    assert httpx.get(f"{api}namespace/conda-store-dynamic/", headers=h).status_code in (200, 404)
    r = httpx.put(f"{api}namespace/conda-store-dynamic/metadata/", headers=bearer(ADMIN), json={"ok": True})
    assert r.status_code in (200, 404), r.text


def test_on_demand_pull_never_serves_a_build_of_another_specification(service) -> None:
    """A spec posted under an on-demand name (here by a store admin, the only one who still can)
    is not what the name decodes to: the pull builds the real one instead of serving it."""
    planted_id = service.submit("conda-store-dynamic", "hello--python", ["python", "six"])
    planted = service.wait_for_image(planted_id)
    auth = _basic(OTHER)
    r = httpx.get(service.v2("conda-store-dynamic/python/hello/manifests/latest"), auth=auth,
                  timeout=BUILD_TIMEOUT + 30)
    assert r.status_code == 200, r.text
    assert r.headers["docker-content-digest"] != planted
    config = json.loads(httpx.get(service.v2("conda-store-dynamic/python/hello/blobs/"
                                             + r.json()["config"]["digest"]), auth=auth).content)
    history = " ".join(h["created_by"] for h in config["history"])
    assert "hello-" in history and "six-" not in history
    assert len(_dynamic_builds(service, "hello--python")) == 2
    # Nor is the planted image reachable under the name by its digest.
    by_digest = httpx.get(service.v2(f"conda-store-dynamic/python/hello/manifests/{planted}"), auth=auth)
    assert by_digest.status_code == 404 and _errors(by_digest) == ["MANIFEST_UNKNOWN"]


def test_concurrent_on_demand_pulls_share_one_build_and_never_block_the_server(service) -> None:
    """Three pulls of a new name wait together on one build while the server keeps answering."""
    import concurrent.futures
    import time

    url = service.v2("conda-store-dynamic/hello.ge.2.0/manifests/latest")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        pulls = [pool.submit(httpx.get, url, auth=_basic(OTHER), timeout=BUILD_TIMEOUT + 30) for _ in range(3)]
        wait_for(lambda: _dynamic_builds(service, "hello.ge.2.0"), 30, "the on-demand build to be submitted")
        latencies = []
        while not all(p.done() for p in pulls):
            start = time.monotonic()
            assert httpx.get(service.v2(""), auth=_basic(OTHER), timeout=5).status_code == 200
            latencies.append(time.monotonic() - start)
            concurrent.futures.wait(pulls, timeout=0.2)
        responses = [p.result() for p in pulls]
    assert [r.status_code for r in responses] == [200, 200, 200], responses[0].text
    assert len({r.headers["docker-content-digest"] for r in responses}) == 1
    assert len(_dynamic_builds(service, "hello.ge.2.0")) == 1
    assert latencies and max(latencies) < 1.0, latencies
    print(f"\n/v2/ answered {len(latencies)} times during the on-demand build, slowest {max(latencies) * 1000:.0f} ms")
    config = json.loads(httpx.get(service.v2("conda-store-dynamic/hello.ge.2.0/blobs/"
                                             + responses[0].json()["config"]["digest"]), auth=_basic(OTHER)).content)
    assert "hello-2." in " ".join(h["created_by"] for h in config["history"])


def test_on_demand_errors_are_registry_errors(service) -> None:
    auth = _basic(OTHER)
    for name in ("six.xx.1", "six.lt.", "python/six.lt.3.", "python..six"):
        r = httpx.get(service.v2(f"conda-store-dynamic/{name}/manifests/latest"), auth=auth)
        assert r.status_code == 400 and _errors(r) == ["NAME_INVALID"], (name, r.text)
    # Characters outside the name grammar never reach the decoder, but still get a registry error.
    for path in ("conda-store-dynamic/Six/manifests/latest", "conda-store-dynamic/six.lt.>3/manifests/latest",
                 "conda-store-dynamic/manifests/latest"):
        r = httpx.get(service.v2(path), auth=auth)
        assert 400 <= r.status_code < 500 and _errors(r), (path, r.text)
    assert httpx.get(service.v2("conda-store-dynamic/six/manifests/latest")).status_code == 401
    # A well-formed name that cannot be solved: the pull says why, and nothing is created
    # (see test_on_demand_typo_leaves_nothing_behind).
    r = httpx.get(service.v2("conda-store-dynamic/no-such-package/manifests/latest"), auth=auth,
                  timeout=BUILD_TIMEOUT + 30)
    assert r.status_code == 404 and _errors(r) == ["NAME_UNKNOWN"], r.text
    assert "no-such-package" in r.json()["errors"][0]["message"]
    assert _dynamic_builds(service, "no-such-package") == []


def test_on_demand_typo_leaves_nothing_behind(redis_url, local_channel, package_cache_dir, tmp_path) -> None:
    """``docker pull …/conda-store-dynamic/nopkg-zz`` used to leave an environment whose only
    build failed in the shared namespace: the name is now solved before any row exists."""
    from traitlets.config import Config

    from conda_store_jupyter.server.testing import running_server

    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.redis_url = redis_url
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.CondaStore.package_cache_directory = str(package_cache_dir)
    c.CondaStore.build_artifacts = ["LOCKFILE", "YAML", "DOCKER_MANIFEST"]
    c.AuthenticationBackend.predefined_tokens = {ADMIN: {"primary_namespace": "team",
                                                         "role_bindings": {"*/*": ["admin"]}}}
    c.Registry.dynamic_wait_timeout = 1.0
    with running_server(c) as server:
        host = server.url.split("/")[2]
        for name in ("nopkg-zz", "python/nopkg-zz", "six.lt.0.1"):
            r = httpx.get(f"http://{host}/v2/conda-store-dynamic/{name}/manifests/latest", auth=_basic(ADMIN),
                          timeout=60)
            assert r.status_code == 404 and _errors(r) == ["NAME_UNKNOWN"], (name, r.text)
            message = r.json()["errors"][0]["message"]
            assert message.startswith(f"cannot build conda-store-dynamic/{name}: could not solve"), message
            assert ("nopkg-zz" if "nopkg" in name else "six") in message
        with server.store.session() as db:
            assert db.scalars(select(orm.Environment)).all() == []
            assert db.scalars(select(orm.Build)).all() == []
            # (only the default namespace, there from the start)
            assert [ns.name for ns in db.scalars(select(orm.Namespace)).all()] == ["default"]
        # A name that solves is submitted as before (no worker here: the wait times out).
        r = httpx.get(f"http://{host}/v2/conda-store-dynamic/six/manifests/latest", auth=_basic(ADMIN), timeout=60)
        assert r.status_code == 404 and "not ready after 1 s" in r.text
        with server.store.session() as db:
            assert [e.name for e in db.scalars(select(orm.Environment))] == ["six"]


def test_on_demand_wait_is_bounded(redis_url, local_channel, package_cache_dir, tmp_path) -> None:
    """No worker takes the build: the pull gives up after Registry.dynamic_wait_timeout, cleanly."""
    import time

    from traitlets.config import Config

    from conda_store_jupyter.server.testing import running_server

    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.redis_url = redis_url
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.CondaStore.package_cache_directory = str(package_cache_dir)
    c.AuthenticationBackend.predefined_tokens = {ADMIN: {"primary_namespace": "team",
                                                         "role_bindings": {"*/*": ["admin"]}}}
    c.Registry.dynamic_wait_timeout = 1.0
    c.Registry.dynamic_poll_interval = 0.1
    with running_server(c) as server:
        host = server.url.split("/")[2]
        start = time.monotonic()
        r = httpx.get(f"http://{host}/v2/conda-store-dynamic/six/manifests/latest", auth=_basic(ADMIN), timeout=30)
        elapsed = time.monotonic() - start
    assert r.status_code == 404 and _errors(r) == ["MANIFEST_UNKNOWN"]
    assert "not ready after 1 s" in r.json()["errors"][0]["message"]
    assert 1.0 <= elapsed < 10.0


def test_tls_probe_on_the_plain_http_port_is_refused_at_once(service) -> None:
    """Insecure-registry clients try HTTPS first; hanging up at once saves them a 10 s handshake timeout."""
    import socket

    host, port = service.host.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(bytes.fromhex("160301002a010000260303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00")
        sock.settimeout(2)
        try:  # closed (FIN, or RST since the hello was left unread), not waiting for HTTP headers
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    assert httpx.get(service.v2(""), auth=_basic(ADMIN)).status_code == 200


@needs_clients
def test_s3_storage_blobs_are_redirected_to_presigned_urls(s3_endpoint, redis_url, local_channel,
                                                           package_cache_dir, tmp_path) -> None:
    """With S3 storage the server answers blob GETs with a short presigned URL; skopeo follows it."""
    import uuid

    s3 = {"CondaStore": {"storage_class": "conda_store_jupyter.storage.s3.S3Storage"},
          "S3Storage": {"bucket_name": f"cs-{uuid.uuid4().hex[:12]}", "endpoint_url": s3_endpoint,
                        "access_key": "test", "secret_key": "test", "create_bucket": True}}
    (tmp_path / "svc").mkdir()
    with running_service(tmp_path / "svc", redis_url, local_channel, package_cache_dir, s3) as service:
        digest = service.wait_for_image(service.submit("team", "s3env", ["python", "six"]))
        layer = json.loads(service.store.storage.get_bytes(blob_key(digest)))["layers"][0]["digest"]
        r = httpx.get(service.v2(f"team/s3env/blobs/{layer}"), auth=_basic(ADMIN))
        assert r.status_code == 307 and r.headers["location"].startswith(s3_endpoint)
        head = httpx.head(service.v2(f"team/s3env/blobs/{layer}"), auth=_basic(ADMIN))
        assert head.status_code == 200 and int(head.headers["content-length"]) > 0
        copied = skopeo_copy(f"docker://{service.host}/team/s3env:latest", f"oci:{tmp_path / 'oci'}:latest")
        assert copied.returncode == 0, copied.stderr
        conda = umoci_unpack(tmp_path / "oci", "latest", tmp_path / "bundle")
        subprocess.run([conda / "bin" / "python", "-c", "import six"], check=True)
        assert not (service.store.store_path / ".artifacts").exists()  # nothing went to local storage
