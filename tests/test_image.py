"""The image builder makes real images: umoci unpacks them (checking every diff_id), skopeo copies
them, the unpacked python runs, and equal packages give equal layers across environments.

Prefixes are installed by rattler from the real local test channel; nothing is mocked.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conda_store_jupyter.builder import _oci
from conda_store_jupyter.builder.image import (
    ImageManifest,
    Layer,
    build_image,
    diffid_key,
    oci_manifest,
    write_oci_layout,
)
from conda_store_jupyter.exceptions import ArtifactError
from conda_store_jupyter.storage.base import blob_key
from conda_store_jupyter.storage.local import LocalStorage
from conda_store_jupyter.testing.channel import install_prefix

UMOCI = shutil.which("umoci")
SKOPEO = shutil.which("skopeo")
UNSHARE = shutil.which("unshare")
ENV_A = ["python", "six", "hello"]  # hello 2 pulls libgreet
ENV_B = ["python", "six", "packaging"]


@pytest.fixture(scope="module")
def prefixes(local_channel, package_cache_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("envs")
    envs = {
        "a": install_prefix(local_channel.url, package_cache_dir, root / "a", ENV_A),
        "a_again": install_prefix(local_channel.url, package_cache_dir, root / "elsewhere" / "a", ENV_A),
        "b": install_prefix(local_channel.url, package_cache_dir, root / "b", ENV_B),
    }
    # A pip-style file no conda package owns: it must land in the environment layer.
    for name in ("a", "a_again"):
        site = next(envs[name].glob("lib/python3*/site-packages"))
        (site / "unowned_module.py").write_text("VALUE = 42\n")
    return envs


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(storage_directory=str(tmp_path / "artifacts"))


@pytest.fixture(scope="module")
def image_a(prefixes, tmp_path_factory) -> tuple[LocalStorage, ImageManifest]:
    storage = LocalStorage(storage_directory=str(tmp_path_factory.mktemp("store-a")))
    return storage, build_image(prefixes["a"], storage)


def _layer_tar(storage: LocalStorage, layer: Layer) -> bytes:
    return gzip.decompress(storage.get_bytes(blob_key(layer.digest)))


def _by_package(image: ImageManifest) -> dict[str, Layer]:
    return {pkg.split("-")[0]: layer for layer in image.layers for pkg in layer.packages}


def test_manifest_config_and_blobs_are_consistent(image_a) -> None:
    storage, image = image_a
    assert image.digest == "sha256:" + hashlib.sha256(image.manifest).hexdigest()
    assert storage.get_bytes(blob_key(image.digest)) == image.manifest  # served byte-for-byte
    manifest = json.loads(image.manifest)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"] == {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "size": len(image.config), "digest": image.config_digest}
    config = json.loads(storage.get_bytes(blob_key(image.config_digest)))
    assert config["os"] == "linux" and config["architecture"] in {"amd64", "arm64"}
    assert config["config"]["Cmd"] == ["/opt/conda/bin/python"]
    assert "CONDA_PREFIX=/opt/conda" in config["config"]["Env"]
    assert config["config"]["Env"][0].startswith("PATH=/opt/conda/bin:")
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]
    assert len(config["history"]) == len(image.layers)
    for descriptor, layer in zip(manifest["layers"], image.layers, strict=True):
        assert descriptor == {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                              "size": layer.size, "digest": layer.digest}
        blob = storage.get_bytes(blob_key(layer.digest))
        assert len(blob) == layer.size
        assert _oci.sha256_digest(gzip.decompress(blob)) == layer.diff_id
    # One layer per package, named in the history, then the environment layer.
    assert sorted(_by_package(image)) == ["hello", "libgreet", "python", "six"]
    for layer, entry in zip(image.layers, config["history"], strict=True):
        assert all(pkg in entry["created_by"] for pkg in layer.packages)
    assert image.layers[-1].packages == ()
    assert image.total_bytes == sum(layer.size for layer in image.layers) and image.reused_bytes == 0


def test_layer_tar_is_normalised(image_a) -> None:
    storage, image = image_a
    python = _by_package(image)["python"]
    with tarfile.open(fileobj=io.BytesIO(_layer_tar(storage, python))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["opt", "opt/conda"]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert {m.mtime for m in members} == {_oci.FIXED_MTIME}
    assert {m.mode for m in members if m.isdir()} == {0o755}
    assert {m.mode for m in members if m.isfile()} <= {0o644, 0o755}
    assert not any(m.islnk() for m in members)
    dirs = {m.name for m in members if m.isdir()}
    assert all(n.rsplit("/", 1)[0] in dirs for n in names if "/" in n)  # parents always present
    assert "opt/conda/bin/python" in names and "opt/conda/conda-meta" not in dirs
    # Only python's own files: six (noarch) and the environment files are in other layers.
    assert not any(n.endswith("site-packages/six.py") or n.startswith("opt/conda/conda-meta/") for n in names)


def test_unowned_files_go_to_the_environment_layer(image_a) -> None:
    storage, image = image_a
    with tarfile.open(fileobj=io.BytesIO(_layer_tar(storage, image.layers[-1]))) as tar:
        names = set(tar.getnames())
    assert any(n.endswith("site-packages/unowned_module.py") for n in names)
    assert any(n.startswith("opt/conda/conda-meta/python-") for n in names)
    assert "opt/conda/bin/activate" in names  # conda-pack's scripts
    assert not any(n.count("/") == 2 and n.rsplit("/", 1)[1].startswith("tmp") for n in names)


def test_same_prefix_gives_same_digest(prefixes, image_a, tmp_path) -> None:
    _, first = image_a
    fresh = LocalStorage(storage_directory=str(tmp_path / "fresh"))  # no diff_id records to lean on
    again = build_image(prefixes["a"], fresh, threads=1)  # inline gzip: same bytes as the pool
    assert again.manifest == first.manifest and again.digest == first.digest
    # Same specification installed at another path: relocation makes the image identical too.
    moved = build_image(prefixes["a_again"], fresh)
    assert moved.digest == first.digest and moved.reused_bytes == moved.total_bytes


def test_environments_share_package_layers(prefixes, storage) -> None:
    a = build_image(prefixes["a"], storage)
    b = build_image(prefixes["b"], storage)
    la, lb = _by_package(a), _by_package(b)
    for shared in ("python", "six"):
        assert la[shared].digest == lb[shared].digest and la[shared].diff_id == lb[shared].diff_id
        assert lb[shared].reused and not la[shared].reused
    assert not lb["packaging"].reused
    assert b.reused_bytes == sum(layer.size for layer in b.layers if layer.reused)
    assert b.reused_bytes >= lb["python"].size + lb["six"].size
    assert b.reused_share > 0.8, b.reused_share
    # The diff_id record lets a rebuild skip compression entirely.
    record = json.loads(storage.get_bytes(diffid_key(lb["python"].diff_id)))
    assert record == {"digest": lb["python"].digest, "size": lb["python"].size}


def test_grouping_keeps_layer_count_and_every_package(prefixes, storage) -> None:
    full = build_image(prefixes["a"], storage)
    grouped = build_image(prefixes["a"], storage, max_layers=3)
    assert len(grouped.layers) <= 3
    packages = [p for layer in grouped.layers for p in layer.packages]
    assert sorted(packages) == sorted(p for layer in full.layers for p in layer.packages)
    # The largest package keeps its own layer, identical to the ungrouped image's.
    assert _by_package(grouped)["python"].digest == _by_package(full)["python"].digest
    assert build_image(prefixes["a"], storage, max_layers=3).digest == grouped.digest


def test_base_layers_come_first(prefixes, storage) -> None:
    b = build_image(prefixes["b"], storage)
    base = Layer(b.layers[0].digest, b.layers[0].diff_id, b.layers[0].size, created_by="base image layer")
    image = build_image(prefixes["a"], storage, base_layers=[base])
    assert image.layers[0] == base
    config = json.loads(image.config)
    assert config["rootfs"]["diff_ids"][0] == base.diff_id
    assert config["history"][0]["created_by"] == "base image layer"
    with pytest.raises(ArtifactError, match="max_layers"):
        build_image(prefixes["a"], storage, base_layers=[base] * 5, max_layers=6)


def test_not_a_prefix_is_an_artifact_error(tmp_path, storage) -> None:
    with pytest.raises(ArtifactError, match="not a conda environment"):
        build_image(tmp_path, storage)


def test_oci_manifest_keeps_blobs() -> None:
    docker = _oci.canonical_json({
        "schemaVersion": 2, "mediaType": _oci.MANIFEST_V2,
        "config": {"mediaType": _oci.CONFIG_V1, "size": 2, "digest": "sha256:" + "0" * 64},
        "layers": [{"mediaType": _oci.LAYER_TAR_GZIP, "size": 3, "digest": "sha256:" + "1" * 64}]})
    oci = json.loads(oci_manifest(docker))
    assert oci["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert oci["config"]["digest"] == "sha256:" + "0" * 64
    assert oci["layers"][0] == {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "size": 3, "digest": "sha256:" + "1" * 64}


@pytest.fixture(scope="module")
def bundle(image_a, tmp_path_factory) -> Path:
    if UMOCI is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    storage, image = image_a
    root = tmp_path_factory.mktemp("oci")
    write_oci_layout(storage, image.digest, root / "layout")
    # umoci recomputes every layer's diff_id and refuses the image on any mismatch.
    subprocess.run([UMOCI, "unpack", "--rootless", "--image", f"{root / 'layout'}:latest", root / "bundle"],
                   check=True, capture_output=True, text=True)
    return root / "bundle"


def test_umoci_unpacks_and_python_runs(bundle: Path) -> None:
    conda = bundle / "rootfs" / "opt" / "conda"
    # The python package is relocatable (RPATH $ORIGIN/../lib), so it runs from the rootfs as is.
    out = subprocess.run([conda / "bin" / "python", "-c", "import six, unowned_module, sys; "
                          "print(six.__name__, unowned_module.VALUE, sys.prefix)"],
                         check=True, capture_output=True, text=True).stdout.split()
    assert out == ["six", "42", str(conda)]
    # Prefixes were rewritten to /opt/conda at build time: no conda-unpack needed in the image.
    assert "prefix=/opt/conda\n" in (conda / "etc" / "libgreet.conf").read_text()
    assert "anaconda1anaconda2anaconda3" not in (conda / "bin" / "hello").read_text()


def test_runs_at_opt_conda(bundle: Path) -> None:
    """Mount the unpacked environment at /opt/conda in a private mount namespace and run it there."""
    conda = bundle / "rootfs" / "opt" / "conda"
    script = ("mount -t tmpfs none /opt && mkdir /opt/conda && mount --bind \"$1\" /opt/conda && "
              "/opt/conda/bin/hello && /opt/conda/bin/python -c 'import six, sys; print(sys.prefix)'")
    if UNSHARE is None:
        pytest.skip("unshare (util-linux) is not installed")
    result = subprocess.run([UNSHARE, "--mount", "--map-root-user", "sh", "-c", script, "sh", conda],
                            capture_output=True, text=True)
    if result.returncode != 0 and ("Operation not permitted" in result.stderr or "unshare" in result.stderr):
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello 2.0 | greetings from libgreet 1.1", "/opt/conda"]


def test_skopeo_copies_the_layout(image_a, tmp_path) -> None:
    if SKOPEO is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    storage, image = image_a
    oci_digest = write_oci_layout(storage, image.digest, tmp_path / "layout", ref="v1")
    subprocess.run([SKOPEO, "copy", f"oci:{tmp_path / 'layout'}:v1", f"dir:{tmp_path / 'copy'}"],
                   check=True, capture_output=True, text=True)
    copied = (tmp_path / "copy" / "manifest.json").read_bytes()
    assert _oci.sha256_digest(copied) == oci_digest  # skopeo verified and kept our bytes
    for layer in image.layers:  # same blobs as the stored Docker image
        assert (tmp_path / "copy" / layer.digest.split(":")[1]).stat().st_size == layer.size
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["v1"]


def test_grouping_is_stable_when_one_small_package_is_added() -> None:
    """With more packages than layers, adding a package changes one grouped layer, not all of them."""
    from conda_store_jupyter.builder.image import _PackageFiles, _plan_layers

    def packages(n: int) -> list[_PackageFiles]:
        out = []
        for i in range(n):
            size = 1_000_000 // (i + 1)  # a few big packages, a long tail of small ones
            entry = _oci.TarEntry(f"opt/conda/share/p{i:03d}/data", b"0", 0o644, size=size, source="/dev/null")
            out.append(_PackageFiles(f"p{i:03d}", f"p{i:03d}-1.0-0", (), [entry]))
        return out

    before = _plan_layers(packages(150), [], budget=99)
    grown = packages(150) + [_PackageFiles("zz-new", "zz-new-1.0-0", (), [
        _oci.TarEntry("opt/conda/share/zz/data", b"0", 0o644, size=10, source="/dev/null")])]
    after = _plan_layers(grown, [], budget=99)
    assert len(before) <= 99 and len(after) <= 99
    as_sets = [{tuple(p.dist for p in layer.packages) for layer in plan} for plan in (before, after)]
    assert len(as_sets[0] - as_sets[1]) == 1  # only the bucket that took the new package differs
    assert sorted(p.dist for layer in after for p in layer.packages) == sorted(p.dist for p in grown)
