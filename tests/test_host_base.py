"""The host runtime base: images run with no registry and no configuration.

The base is assembled from this machine's real Debian packages (dpkg-query), environments come from
the real local test channel, images are unpacked by umoci and run in a chroot the way a container
runtime runs them (see :mod:`tests.rootfs`).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conda_store_jupyter.builder.host_base import DEFAULT_PACKAGES, host_runtime_base
from conda_store_jupyter.builder.image import build_image, write_oci_layout
from conda_store_jupyter.exceptions import ArtifactError
from conda_store_jupyter.storage.base import blob_key
from conda_store_jupyter.storage.local import LocalStorage
from conda_store_jupyter.testing.channel import install_prefix

from .rootfs import image_env, needs_root, oci_config, run_in_rootfs

UMOCI = shutil.which("umoci")
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None,
                                reason="the host runtime base is made from Debian packages (no dpkg-query here)")
pytestmark = needs_dpkg


def _members(storage: LocalStorage, digest: str) -> dict[str, tarfile.TarInfo]:
    data = gzip.decompress(storage.get_bytes(blob_key(digest)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_base_is_one_reproducible_layer_stored_once(tmp_path) -> None:
    first_storage = LocalStorage(storage_directory=str(tmp_path / "a"))
    base = host_runtime_base(first_storage, work_dir=tmp_path)
    (layer,) = base.layers
    assert not layer.reused and layer.created_by.startswith("base: host runtime libc6:")
    again = host_runtime_base(first_storage, work_dir=tmp_path)
    assert again.layers[0].digest == layer.digest and again.layers[0].reused  # hashed, not recompressed
    elsewhere = host_runtime_base(LocalStorage(storage_directory=str(tmp_path / "b")), work_dir=tmp_path)
    assert elsewhere.layers[0] == layer  # same bytes in any storage: content-addressed
    assert not any(p.name.startswith("host-base-") for p in tmp_path.iterdir())  # scratch space cleaned

    members = _members(first_storage, layer.digest)
    for name in ("lib", "lib64", "bin", "sbin"):  # the host's merged-/usr symlinks, kept as symlinks
        if os.path.islink(f"/{name}") and name in members:
            assert members[name].issym() and members[name].linkname == os.readlink(f"/{name}")
    loaders = [n for n in members if os.path.basename(n).startswith("ld-linux")]
    assert any(members[n].isfile() for n in loaders)  # the dynamic loader itself, not only links to it
    libc = [n for n in members if n.endswith("/libc.so.6")]
    assert libc and all(members[n].isfile() for n in libc)
    assert any(n.endswith("/libstdc++.so.6") for n in members) and any(n.endswith("/gconv/UTF-16.so") for n in members)
    assert members["etc/passwd"].isfile() and members["tmp"].mode == 0o1777
    assert not [n for n in members if n.startswith("usr/share/doc/")]
    assert {m.uid for m in members.values()} == {0} and {m.mtime for m in members.values()} == {315532800}
    assert base.config["config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                            "LANG=C.UTF-8"]


def test_missing_package_or_loader_is_a_clear_error(tmp_path) -> None:
    storage = LocalStorage(storage_directory=str(tmp_path / "s"))
    with pytest.raises(ArtifactError, match=r"package\(s\) no-such-package-zz not installed on this worker "
                                            r"host.*docker_host_base_packages"):
        host_runtime_base(storage, ["libc6", "no-such-package-zz"], work_dir=tmp_path)
    with pytest.raises(ArtifactError, match="hold no dynamic loader and libc.so.6"):
        host_runtime_base(storage, ["dash"], work_dir=tmp_path)
    with pytest.raises(ArtifactError, match="at least one package"):
        host_runtime_base(storage, [], work_dir=tmp_path)


@pytest.fixture(scope="module")
def rootfs(local_channel, package_cache_dir, tmp_path_factory) -> tuple[Path, dict]:
    """python + six + hello on the host runtime base, written as an OCI layout and unpacked by umoci."""
    if UMOCI is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    root = tmp_path_factory.mktemp("host-base")
    prefix = install_prefix(local_channel.url, package_cache_dir, root / "env", ["python", "six", "hello"])
    storage = LocalStorage(storage_directory=str(root / "storage"))
    image = build_image(prefix, storage, base=host_runtime_base(storage, DEFAULT_PACKAGES, work_dir=root),
                        work_dir=root)
    write_oci_layout(storage, image.digest, root / "layout")
    subprocess.run([UMOCI, "unpack", "--rootless", "--image", f"{root / 'layout'}:latest", root / "bundle"],
                   check=True, capture_output=True, text=True)
    return root / "bundle" / "rootfs", oci_config(root / "layout", "latest")


@needs_root
def test_image_on_the_host_base_runs_like_docker_run(rootfs) -> None:
    """``docker run IMAGE python -c …``: the image's Env, its PATH finding python, nothing from the host."""
    root, config = rootfs
    env = image_env(config)
    assert env["PATH"].startswith("/opt/conda/bin:") and env["LANG"] == "C.UTF-8"
    assert config["config"]["Cmd"] == ["/opt/conda/bin/python"] and "Entrypoint" not in config["config"]
    run = run_in_rootfs(root, ["python", "-c", "import six, sys, getpass, locale; "
                               "print(six.__name__, sys.prefix, getpass.getuser(), locale.getpreferredencoding())"],
                        env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["six", "/opt/conda", "root", "UTF-8"]
    hello = run_in_rootfs(root, ["hello"], env)  # a native package with its own shared library
    assert hello.returncode == 0 and hello.stdout.startswith("hello 2."), hello.stderr
    shell = run_in_rootfs(root, ["/bin/sh", "-c", "echo $CONDA_PREFIX; test -d /tmp -a -w /tmp && echo ok"], env)
    assert shell.stdout.split() == ["/opt/conda", "ok"], shell.stderr
    assert json.dumps(config).count("base: host runtime") == 1


@needs_root
def test_host_base_keeps_what_glibc_loads_at_run_time(rootfs) -> None:
    """Why whole packages: NSS and gconv modules are dlopen'ed (no DT_NEEDED names them), and the GCC
    runtime must be there for what users install later, found without an ld.so.cache."""
    root, config = rootfs
    env = image_env(config)
    getent = run_in_rootfs(root, ["getent", "passwd", "root"], env)  # libnss_files, dlopen'ed
    assert getent.returncode == 0 and getent.stdout.startswith("root:x:0:0:"), getent.stderr
    iconv = run_in_rootfs(root, ["iconv", "-f", "UTF-8", "-t", "UTF-16", "-o", "/tmp/out", "/etc/group"], env)
    assert iconv.returncode == 0, iconv.stderr  # gconv's UTF-16 module, dlopen'ed
    assert (root / "tmp" / "out").read_bytes().decode("utf-16") == (root / "etc" / "group").read_text()

    def in_image(pattern: str) -> str:  # usr/lib on merged-/usr hosts, else lib
        return "/" + str(next(p for pat in (pattern, pattern.removeprefix("usr/")) for p in root.glob(pat))
                         .relative_to(root))

    listed = run_in_rootfs(root, [in_image("usr/lib/*/ld-linux*"), "--list", in_image("usr/lib/*/libstdc++.so.6")], env)
    assert listed.returncode == 0 and "libgcc_s.so.1 => " in listed.stdout, listed.stderr
    assert run_in_rootfs(root, ["locale", "-a"], env).stdout.split().count("C.utf8") == 1


@pytest.mark.parametrize("packages", [[], ["--admindir=/tmp/x"], ["libc6", "Libc6"], ["libc6 dash"]])
def test_host_base_packages_are_checked_when_configured(packages) -> None:
    from conda_store_jupyter.app import CondaStore

    with pytest.raises(ValueError, match="docker_host_base_packages must be Debian package names"):
        CondaStore(docker_host_base_packages=packages)
