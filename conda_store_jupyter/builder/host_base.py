"""The host runtime base: a one-layer base image assembled from the worker host's own C runtime.

Why it exists: an environment's files alone do not run. Every ELF file of a conda environment needs
the dynamic loader and glibc, which conda packages never bring (``__glibc`` is a *virtual* package:
conda-forge ships its own libgcc, libstdc++, openssl, zlib, ... but expects the system's glibc).
A registry base such as ``debian:bookworm-slim`` provides it, but a worker that reaches no image
registry (air-gapped clusters, CI machines) could then build no runnable image at all. Every worker
host runs a glibc Python, so it has what is missing: this module copies the files of a few of its
Debian packages, as ``dpkg-query --listfiles`` names them, into one normalised layer.

Whole packages, not the closure of the libraries an environment needs today, because:

* the base must outlive the environment it was built for: ``pip install`` of a manylinux wheel in a
  running container expects libstdc++, libgcc_s, libm, libpthread, librt, ... (the manylinux policy),
  whether or not anything in the image linked them when it was built;
* glibc loads parts of itself with ``dlopen`` (NSS modules for ``getpwuid``/DNS, gconv modules for
  ``iconv``) that no ``DT_NEEDED`` entry names: a closure would miss them and fail at run time;
* one base for every environment is one layer, stored and pulled once, shared by every image;
  a per-environment closure would be a new layer per environment.

The layer is reproducible (normalised tar entries, see :mod:`._oci`), so it is content-addressed like
every package layer: the first image job on a host compresses and stores it, every later job (on any
host with the same package files) costs one hash of ~20 MB and finds the stored blob.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ArtifactError
from ..storage.base import Storage
from . import _oci
from ._oci import TarEntry
from .image import store_layer, with_parents
from .image_config import BaseImage, IMAGE_LANG, image_architecture

log = logging.getLogger(__name__)

DEFAULT_PACKAGES = ("libc6", "libc-bin", "libgcc-s1", "libstdc++6", "zlib1g", "dash")
"""glibc with its loader, NSS and gconv modules (libc6) and the C.UTF-8 locale (libc-bin), the GCC
runtime that manylinux wheels may link (libgcc-s1, libstdc++6), zlib (tiny, and linked by binaries
built on Debian, such as wheels compiled there), and ``/bin/sh`` (dash): ``os.system``,
``subprocess(shell=True)``, pip builds and conda-pack's ``activate`` need a shell."""

_SKIPPED = ("usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/lintian/",
            "usr/share/menu/", "usr/share/bug/")
"""Documentation: no program reads it, and slim images drop it too."""

_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
_NSSWITCH = b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
_FILES = {"etc/passwd": _PASSWD, "etc/group": _GROUP, "etc/nsswitch.conf": _NSSWITCH}
"""What a process needs to know who it is (``getpass.getuser``, ``~`` expansion) and how names
resolve; container runtimes provide ``/etc/hosts`` and ``/etc/resolv.conf`` themselves."""


@dataclass(frozen=True)
class HostPackage:
    """One Debian package of the host: ``name:arch`` as dpkg-query knows it, and its version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}={self.version}"


def host_runtime_base(storage: Storage, packages: tuple[str, ...] | list[str] = DEFAULT_PACKAGES, *,
                      work_dir: str | os.PathLike | None = None) -> BaseImage:
    """The host runtime base of ``packages`` with its one layer blob in ``storage`` (stored if new).

    Raises :class:`ArtifactError` naming the problem when the host has no dpkg, lacks one of the
    packages, or the packages give no dynamic loader and libc.
    """
    if not packages:
        raise ArtifactError("the host runtime base needs at least one package (CondaStore.docker_host_base_packages)")
    installed = _installed(packages)
    tmp = Path(tempfile.mkdtemp(prefix="host-base-", dir=work_dir))
    try:
        entries = _entries(installed, tmp)
        reference = "host runtime " + " ".join(str(p) for p in installed)
        layer = store_layer(entries, storage, f"base: {reference}", tmp=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("host runtime base %s: %d entries, %d bytes%s", layer.digest, len(entries), layer.size,
             " (already stored)" if layer.reused else "")
    config = {"architecture": image_architecture(), "os": "linux",
              "config": {"Env": [f"PATH={_BASE_PATH}", f"LANG={IMAGE_LANG}"]}}
    return BaseImage(reference, layer.digest, (layer,), config)


def _dpkg_query(args: list[str]) -> subprocess.CompletedProcess:
    dpkg_query = shutil.which("dpkg-query")
    if dpkg_query is None:
        raise ArtifactError("cannot assemble the host runtime base: this worker host has no dpkg-query (not "
                            "Debian or Ubuntu); set CondaStore.default_docker_base_image to a registry image "
                            "(e.g. debian:bookworm-slim) or to 'scratch'")
    try:
        return subprocess.run([dpkg_query, *args], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ArtifactError(f"cannot assemble the host runtime base: dpkg-query failed: {err}") from err


def _installed(packages: tuple[str, ...] | list[str]) -> list[HostPackage]:
    """The packages with their versions, as ``name:arch`` of the native architecture (or ``all``).

    A multiarch host may have ``libc6:i386`` next to ``libc6:amd64``: only the native one is meant
    (an explicit ``name:arch`` in ``packages`` is taken as given).
    """
    native = _dpkg_query(["--showformat=${Architecture}", "--show", "dpkg"]).stdout.strip()
    result = _dpkg_query(["--showformat=${Package}\t${Architecture}\t${Version}\t${db:Status-Abbrev}\n",
                          "--show", *(p.split(":")[0] for p in packages)])
    found: dict[str, HostPackage] = {}
    for line in result.stdout.splitlines():
        name, arch, version, status = (line.split("\t") + ["", "", ""])[:4]
        if status.startswith("ii"):
            found[f"{name}:{arch}"] = HostPackage(f"{name}:{arch}", version)
    chosen, missing = [], []
    for wanted in packages:
        candidates = [wanted] if ":" in wanted else [f"{wanted}:{native}", f"{wanted}:all"]
        hit = next((found[c] for c in candidates if c in found), None)
        if hit is None:
            missing.append(wanted)
        else:
            chosen.append(hit)
    if missing:
        raise ArtifactError(f"cannot assemble the host runtime base: Debian package(s) {', '.join(missing)} "
                            "not installed on this worker host; install them or change "
                            "CondaStore.docker_host_base_packages")
    return chosen


def _entries(packages: list[HostPackage], tmp: Path) -> list[TarEntry]:
    """Every file and symlink of ``packages`` (docs skipped) plus the few files a container needs."""
    listed = _dpkg_query(["--listfiles", *(p.name for p in packages)])
    if listed.returncode != 0:
        raise ArtifactError(f"cannot assemble the host runtime base: dpkg-query --listfiles: "
                            f"{listed.stderr.strip() or listed.returncode}")
    entries: dict[str, TarEntry] = {}
    for line in listed.stdout.splitlines():
        # Other lines are diversion notes ("diversion by dash from: /bin/sh"); the paths start with "/".
        if not line.startswith("/") or os.path.isdir(line) and not os.path.islink(line):
            continue
        name = _image_path(line, entries)
        if name is None or name.startswith(_SKIPPED):
            continue
        entry = _oci.entry_for(Path(line), name)
        if entry is not None:
            entries[name] = entry
    if not any(e.name.rsplit("/", 1)[-1].startswith("ld-linux") for e in entries.values()) or \
            not any(e.name.endswith("/libc.so.6") for e in entries.values()):
        raise ArtifactError("cannot assemble the host runtime base: the packages "
                            f"{', '.join(p.name for p in packages)} hold no dynamic loader and libc.so.6 "
                            "(glibc is in libc6 on Debian and Ubuntu)")
    for name, data in _FILES.items():
        (tmp / name.replace("/", "_")).write_bytes(data)
        entries[name] = TarEntry(name, tarfile.REGTYPE, 0o644, size=len(data), source=str(tmp / name.replace("/", "_")))
    entries["tmp"] = TarEntry("tmp", tarfile.DIRTYPE, 0o1777)
    entries["root"] = TarEntry("root", tarfile.DIRTYPE, 0o700)
    for mount_point in ("dev", "proc", "sys"):  # container runtimes mount these; the image names them
        entries[mount_point] = _oci.dir_entry(mount_point)
    return with_parents(list(entries.values()))


def _image_path(host_path: str, entries: dict[str, TarEntry]) -> str | None:
    """Where ``host_path`` goes in the image, adding the host's directory symlinks on its way.

    Merged-/usr hosts list ``/lib/x86_64-linux-gnu/libc.so.6`` but keep it in ``/usr/lib``: the
    image gets the same ``lib -> usr/lib`` symlink and the file at its real place, so both paths
    work there as they do on the host. None for a path that no longer exists.
    """
    parts = host_path.strip("/").split("/")
    resolved: list[str] = []
    for part in parts[:-1]:
        here = "/".join([*resolved, part])
        if os.path.islink("/" + here):
            entries.setdefault(here, TarEntry(here, tarfile.SYMTYPE, 0o777, linkname=os.readlink("/" + here)))
            resolved = [p for p in os.path.realpath("/" + here).split("/") if p]
        else:
            resolved.append(part)
    if not os.path.lexists("/" + "/".join([*resolved, parts[-1]])):
        return None
    return "/".join([*resolved, parts[-1]])
