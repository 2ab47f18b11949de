"""Export step: the pinned environment.yaml of a build.

Every installed conda package is pinned as ``name=version=build`` and every pip package as
``name==version``, so ``conda env create -f`` (or our own build) reproduces the same environment
from the same channels. Unlike the lockfile it is platform-specific (host only) and
human-readable; it is also what ``conda-store`` users upstream know as the "YAML" artifact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..exceptions import ArtifactError
from ..schema import Specification
from ..urls import redact_url
from .records import InstalledPackage, PipPackage


def pinned_environment(
    spec: Specification,
    channels: Iterable[str],
    packages: Iterable[InstalledPackage],
    pip_packages: Iterable[PipPackage] = (),
) -> dict[str, Any]:
    """The pinned environment.yaml content (a plain mapping, ready for ``yaml.safe_dump``)."""
    deps: list[Any] = [p.pin for p in sorted(packages, key=lambda p: p.name)]
    pip = [p.pin for p in sorted(pip_packages, key=lambda p: p.name)]
    if pip:
        deps.append({"pip": pip})
    out: dict[str, Any] = {"name": spec.name, "channels": [redact_url(c) for c in channels], "dependencies": deps}
    # variables belong to the environment (they are set on activation), so keep them pinned too.
    if spec.variables:
        out["variables"] = dict(spec.variables)
    if spec.description:
        out["description"] = spec.description
    return out


def write_pinned_yaml(
    path: Path,
    spec: Specification,
    channels: Iterable[str],
    packages: Iterable[InstalledPackage],
    pip_packages: Iterable[PipPackage] = (),
) -> Path:
    """Write the pinned YAML atomically (temp file + rename)."""
    path = Path(path)
    try:
        text = yaml.safe_dump(pinned_environment(spec, channels, packages, pip_packages), sort_keys=False)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ArtifactError(f"could not write the pinned YAML {path.name}: {exc}") from exc
    return path
