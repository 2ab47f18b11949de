"""A minimal writer for conda packages (.conda v2 and .tar.bz2 v1), without conda-build.

Why this exists: no public conda channel is reachable where our tests run, and conda-build needs
conda. A conda package is only a tarball with an ``info/`` directory, so the test channel writes
its native packages (and the relocatable ``python``) itself. The metadata written here is the
minimum that rattler (solve/install), conda-pack and conda-lock all accept; see
``notes/toolchain.md`` §1b for what was verified.

Packages are written reproducibly (fixed mtimes, sorted members, root ownership) so the same
inputs give byte-identical files — package caches keyed by file name then never hold stale bytes.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import zstandard

# 2024-01-01T00:00:00Z: a fixed timestamp keeps tarballs byte-identical across rebuilds.
FIXED_MTIME = 1704067200

PackageFormat = Literal["conda", "tar.bz2"]


@dataclass(frozen=True)
class PackageFile:
    """One payload entry: either file bytes or a symlink target.

    ``prefix_placeholder`` marks a *text* file whose occurrences of that string the installer
    replaces with the target prefix (conda's ``file_mode: text``). We never emit binary-mode
    placeholders: they require the placeholder to be longer than every target prefix.
    """

    data: bytes = b""
    mode: int = 0o644
    symlink: str | None = None
    prefix_placeholder: str | None = None


@dataclass(frozen=True)
class PackageRecipe:
    """Everything needed to write one package file."""

    name: str
    version: str
    build: str
    subdir: str  # "linux-64", "osx-arm64", "noarch"
    files: dict[str, PackageFile]
    build_number: int = 0
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    noarch: Literal["generic", "python"] | None = None
    summary: str = ""
    license: str = "BSD-3-Clause"
    extra_index: dict[str, object] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


# conda's (platform, arch) vocabulary per subdir; noarch packages carry nulls.
_PLATFORM_ARCH: dict[str, tuple[str | None, str | None]] = {
    "linux-64": ("linux", "x86_64"),
    "linux-aarch64": ("linux", "aarch64"),
    "osx-64": ("osx", "x86_64"),
    "osx-arm64": ("osx", "arm64"),
    "win-64": ("win", "x86_64"),
    "noarch": (None, None),
}


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _info_files(recipe: PackageRecipe) -> dict[str, PackageFile]:
    """The ``info/`` directory: index.json, paths.json, files, about.json, has_prefix."""
    platform, arch = _PLATFORM_ARCH[recipe.subdir]
    index: dict[str, object] = {
        "name": recipe.name,
        "version": recipe.version,
        "build": recipe.build,
        "build_number": recipe.build_number,
        "depends": list(recipe.depends),
        "constrains": list(recipe.constrains),
        "license": recipe.license,
        "subdir": recipe.subdir,
        "platform": platform,
        "arch": arch,
        "timestamp": FIXED_MTIME * 1000,  # conda uses milliseconds
    }
    if recipe.noarch:
        index["noarch"] = recipe.noarch
    index.update(recipe.extra_index)

    paths = []
    has_prefix = []
    for path in sorted(recipe.files):
        f = recipe.files[path]
        entry: dict[str, object] = {"_path": path}
        if f.symlink is not None:
            target = f.symlink.encode()
            entry.update(path_type="softlink", sha256=hashlib.sha256(target).hexdigest(),
                         size_in_bytes=len(target))
        else:
            entry.update(path_type="hardlink", sha256=hashlib.sha256(f.data).hexdigest(),
                         size_in_bytes=len(f.data))
            if f.prefix_placeholder is not None:
                entry.update(prefix_placeholder=f.prefix_placeholder, file_mode="text")
                has_prefix.append(f"{f.prefix_placeholder} text {path}")
        paths.append(entry)

    info = {
        "info/index.json": PackageFile(_json(index)),
        "info/paths.json": PackageFile(_json({"paths_version": 1, "paths": paths})),
        "info/files": PackageFile(("\n".join(sorted(recipe.files)) + "\n").encode()),
        "info/about.json": PackageFile(_json({"summary": recipe.summary, "license": recipe.license})),
    }
    if has_prefix:
        # Legacy file; rattler reads paths.json, but older tools still look here.
        info["info/has_prefix"] = PackageFile(("\n".join(has_prefix) + "\n").encode())
    return info


def _tar_bytes(entries: Iterable[tuple[str, PackageFile]]) -> bytes:
    """An uncompressed, normalised PAX tar of ``entries`` (sorted, root-owned, fixed mtime)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, f in sorted(entries, key=lambda e: e[0]):
            ti = tarfile.TarInfo(path)
            ti.mtime = FIXED_MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if f.symlink is not None:
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, f.symlink, 0o777
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(f.data), f.mode
                tf.addfile(ti, io.BytesIO(f.data))
    return raw.getvalue()


def write_package(recipe: PackageRecipe, channel: Path, fmt: PackageFormat = "conda",
                  zstd_level: int = 3) -> Path:
    """Write ``recipe`` into ``channel/<subdir>/`` and return the package path.

    A low zstd level is the default on purpose: the test channel is rebuilt whenever the
    interpreter changes, and level 19 makes the 50 MB ``python`` package take ~10 s instead of <1 s.
    """
    out_dir = channel / recipe.subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    info = _info_files(recipe)

    if fmt == "tar.bz2":
        out = out_dir / f"{recipe.stem}.tar.bz2"
        tar = _tar_bytes([*info.items(), *recipe.files.items()])
        out.write_bytes(bz2.compress(tar, 9))
        return out

    out = out_dir / f"{recipe.stem}.conda"
    zc = zstandard.ZstdCompressor(level=zstd_level, threads=-1)
    pkg_tar = zc.compress(_tar_bytes(recipe.files.items()))
    info_tar = zc.compress(_tar_bytes(info.items()))
    # The v2 container is an uncompressed zip; the members carry their own zstd compression.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for name, payload in (
            ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
            (f"info-{recipe.stem}.tar.zst", info_tar),
            (f"pkg-{recipe.stem}.tar.zst", pkg_tar),
        ):
            zi = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, payload)
    return out
