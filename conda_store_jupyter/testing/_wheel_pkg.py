"""Wheels of a given interpreter -> conda packages for that interpreter (``linux-64``).

Why our own converter and not whl2conda: whl2conda refuses binary wheels (pyzmq, tornado, psutil,
debugpy, numpy...) and writes ``noarch: python`` packages whose ``depends`` keep environment
markers it cannot evaluate. A kernel needs both binary wheels and exact metadata, so each wheel
here becomes a ``linux-64`` package *for the channel's python* (``python X.Y.*``): its files go
straight into ``lib/pythonX.Y/site-packages``, console scripts become ``bin/`` launchers whose
shebang the installer rewrites, and ``Requires-Dist`` markers are evaluated for that python and
platform, so ``depends`` names exactly the packages the interpreter needs (the solver then pulls
the whole closure from ``ipykernel`` alone).

Relocation: manylinux wheels bundle their shared libraries in ``<project>.libs/`` and reach them
through ``$ORIGIN``-relative RUNPATHs, so they work at any install prefix. :func:`absolute_rpaths`
checks that at build time: a wheel with an absolute RUNPATH would break after install elsewhere.
"""

from __future__ import annotations

import configparser
import email
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from ._pkgwriter import PackageFile, PackageRecipe

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"


@dataclass(frozen=True)
class TargetPython:
    """The interpreter the packages are for: ``3.11.7`` -> tag ``py311``, depends ``python 3.11.*``."""

    version: str  # "3.11.7"

    @property
    def short(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def site_packages(self) -> str:
        return f"lib/python{self.short}/site-packages"

    @property
    def build(self) -> str:
        return f"py{self.short.replace('.', '')}_0_cs"

    def marker_env(self) -> dict[str, str]:
        """PEP 508 marker values of the channel's python on linux-64 (what ``depends`` is for)."""
        env = default_environment()
        env.update(python_version=self.short, python_full_version=self.version,
                   implementation_name="cpython", platform_python_implementation="CPython",
                   sys_platform="linux", platform_system="Linux", os_name="posix",
                   platform_machine="x86_64", extra="")
        return env


def conda_name(project: str) -> str:
    """PEP 503 normalised name: what whl2conda (and conda-forge, mostly) call the package."""
    return re.sub(r"[-_.]+", "-", project).lower()


def conda_depends(requires: list[str], target: TargetPython) -> tuple[str, ...]:
    """``Requires-Dist`` lines -> conda match specs, dropping what the target does not need.

    Extras are never requested (``extra == ""``), so optional dependencies fall away.
    """
    env = target.marker_env()
    out: dict[str, str] = {}
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = conda_name(req.name)
        # PEP 440 and conda agree on >=, <, !=, ==, ~= and trailing .* for what wheels use.
        spec = ",".join(sorted(str(s) for s in req.specifier))
        out[name] = f"{name} {spec}" if spec else name
    return tuple(out[n] for n in sorted(out))


def _entry_point_script(target: str) -> bytes:
    """A console-script launcher (what pip/installer write), with the prefix as a placeholder."""
    module, _, attr = target.partition(":")
    head = attr.split(".")[0]
    return (
        f"#!{PLACEHOLDER}/bin/python\n"
        "# -*- coding: utf-8 -*-\n"
        "import re\nimport sys\n"
        f"from {module.strip()} import {head.strip()}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({attr.strip()}())\n"
    ).encode()


def _elf_rpaths(data: bytes) -> list[str]:
    """RPATH/RUNPATH strings of a 64-bit little-endian ELF file (empty for anything else)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:  # PT_LOAD: to map the string table's address to a file offset
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []
    strtab, wanted = None, []
    for off in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == 0:
            break
        if tag == 5:  # DT_STRTAB
            strtab = val
        elif tag in (15, 29):  # DT_RPATH, DT_RUNPATH
            wanted.append(val)
    if strtab is None:
        return []
    base = next((o + strtab - v for v, o, n in loads if v <= strtab < v + n), None)
    if base is None:
        return []
    return [data[base + w: data.index(b"\0", base + w)].decode() for w in wanted]


def absolute_rpaths(files: dict[str, PackageFile]) -> list[str]:
    """``path: rpath`` for every ELF search path that is not ``$ORIGIN``-relative."""
    bad = []
    for path, f in files.items():
        for rpath in _elf_rpaths(f.data):
            bad += [f"{path}: {p}" for p in rpath.split(":") if p and not p.startswith("$ORIGIN")]
    return bad


def wheel_recipe(wheel: Path, target: TargetPython) -> PackageRecipe:
    """The conda package for ``wheel`` installed into ``target``'s site-packages."""
    files: dict[str, PackageFile] = {}
    metadata = entry_points = None
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name, data = info.filename, zf.read(info)
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            top, _, rest = name.partition("/")
            if top.endswith(".data"):
                # <dist>.data/<scheme>/<path>: data -> the prefix, scripts -> bin/, libs -> site-packages.
                scheme, _, rel = rest.partition("/")
                dest = {"data": "", "scripts": "bin/", "headers": "include/",
                        "purelib": target.site_packages + "/", "platlib": target.site_packages + "/"}[scheme]
                files[dest + rel] = PackageFile(data, 0o755 if scheme == "scripts" else mode)
                continue
            if top.endswith(".dist-info"):
                if rest == "METADATA":
                    metadata = email.message_from_bytes(data)
                elif rest == "entry_points.txt":
                    entry_points = data.decode()
            files[f"{target.site_packages}/{name}"] = PackageFile(data, mode)
    if metadata is None:
        raise ValueError(f"{wheel.name}: no .dist-info/METADATA")
    if entry_points:
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # script names are case-sensitive
        parser.read_string(entry_points)
        if parser.has_section("console_scripts"):
            for script, ref in parser.items("console_scripts"):
                files[f"bin/{script}"] = PackageFile(_entry_point_script(ref), 0o755,
                                                     prefix_placeholder=PLACEHOLDER)
    bad = absolute_rpaths(files)
    if bad:
        raise ValueError(f"{wheel.name} has absolute RPATHs (not relocatable): {'; '.join(bad)}")

    depends = (f"python {target.short}.*",
               *conda_depends(metadata.get_all("Requires-Dist") or [], target))
    return PackageRecipe(
        name=conda_name(metadata["Name"]), version=metadata["Version"], build=target.build,
        subdir="linux-64", depends=depends, files=files,
        summary=f"{metadata.get('Summary', '')} (wheel {wheel.name}, repackaged for python {target.short})",
        license=metadata.get("License-Expression") or "see the wheel's metadata",
    )
