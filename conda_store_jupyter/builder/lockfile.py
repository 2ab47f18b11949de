"""Lockfile step: ``conda-lock.yml`` (conda-lock v1 on disk) written with conda-lock's own models.

Using conda-lock's models and writer (rather than emitting YAML ourselves) means the file is
exactly what ``conda-lock render``/``install`` and upstream conda-store expect, now and when the
format evolves. The reader turns a lockfile back into records for "install from lockfile"
(no solve): conda entries become py-rattler records fetched by exact URL from the channels.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..exceptions import ArtifactError
from ..schema import Specification
from ..urls import redact_text, redact_url
from .records import BuildSettings, PipPackage, SolveResult

if TYPE_CHECKING:
    from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile
    from rattler import RepoDataRecord

LOCKFILE_SOURCE = "environment.yaml"
"""Name recorded as the lockfile's source (the specification, as stored with the build)."""


def _dependency_map(depends: Iterable[str]) -> dict[str, str]:
    """conda-lock's ``{name: version constraint}`` form of match specs.

    Several specs on one name are joined with ``,`` (an AND, as in the match-spec grammar); a
    bare name maps to ``""`` like conda-lock does itself.
    """
    from rattler import MatchSpec

    out: dict[str, str] = {}
    for text in depends:
        try:
            ms = MatchSpec(text)
        except Exception:  # noqa: BLE001 - an odd spec in repodata must not break the lockfile
            name, _, rest = text.partition(" ")
            out[name] = rest.strip()
            continue
        name = ms.name.normalized if ms.name else text.split()[0]
        version = str(ms.version) if ms.version is not None else ""
        previous = out.get(name)
        out[name] = f"{previous},{version}" if previous and version else (version or previous or "")
    return out


def _requires_map(requires: Iterable[str]) -> dict[str, str]:
    """``{name: specifier}`` from Requires-Dist lines, skipping extras-only requirements."""
    from packaging.requirements import InvalidRequirement, Requirement

    out: dict[str, str] = {}
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and "extra" in str(req.marker):
            continue  # only pulled in by an extra we did not request
        out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


def _lockfile_model(
    spec: Specification, solve: SolveResult, pip_packages: Iterable[PipPackage]
) -> "Lockfile":
    from conda_lock.lockfile.v1.models import HashModel, LockMeta, TimeMeta
    from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile
    from conda_lock.models.channel import Channel

    entries: list[LockedDependency] = []
    for solution in solve.solutions:
        for p in solution.packages:
            entries.append(
                LockedDependency(
                    name=p.name,
                    version=p.version,
                    build=p.build,
                    manager="conda",
                    platform=solution.platform,
                    url=p.url,
                    hash=HashModel(md5=p.md5, sha256=p.sha256),
                    dependencies=_dependency_map(p.depends),
                    categories={"main"},
                )
            )
    # pip packages are only known for the host platform: the ``pip:`` section is locked for the
    # prefix's own interpreter (see pip.lock_pip); a solve-only platform has no pip resolution.
    for pp in pip_packages:
        if not pp.url or not pp.sha256:  # the pip step locks every file it installs
            raise ArtifactError(f"pip package {pp.pin} has no locked file (url and sha256) to record")
        entries.append(
            LockedDependency(
                name=pp.name,
                version=pp.version,
                manager="pip",
                platform=solve.host_platform,
                url=redact_url(pp.url),
                hash=HashModel(sha256=pp.sha256),
                dependencies=_requires_map(pp.requires),
                categories={"main"},
            )
        )
    meta = LockMeta(
        content_hash={p: spec.sha256 for p in solve.platforms},
        channels=[Channel.from_string(redact_url(c)) for c in solve.channels],
        platforms=list(solve.platforms),
        sources=[LOCKFILE_SOURCE],
        time_metadata=TimeMeta(created_at=dt.datetime.now(dt.timezone.utc).isoformat()),
    )
    return Lockfile(package=entries, metadata=meta)


def write_lockfile(
    path: Path, spec: Specification, solve: SolveResult, pip_packages: Iterable[PipPackage] = ()
) -> Path:
    """Write ``conda-lock.yml`` for every solved platform (+ pip pins for the host), atomically.

    The file is written under its final name inside a private temporary directory (conda-lock
    puts the file name into its help header) and then renamed over ``path``, so a reader never
    sees a half-written lockfile, even when the pipeline rewrites it after the pip step.
    """
    from conda_lock.lockfile import write_conda_lock_file

    path = Path(path)
    try:
        model = _lockfile_model(spec, solve, pip_packages)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".lock-") as tmp:
            staged = Path(tmp) / path.name
            write_conda_lock_file(model, staged, metadata_choices=None)
            os.replace(staged, path)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"could not write the lockfile {path.name}: {exc}") from exc
    return path


# -- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockedCondaPackage:
    name: str
    version: str
    build: str
    url: str
    md5: str | None
    sha256: str | None


@dataclass(frozen=True)
class LockedPlatform:
    platform: str
    conda: tuple[LockedCondaPackage, ...]
    pip: tuple[PipPackage, ...]


@dataclass(frozen=True)
class LockedEnvironment:
    """A parsed ``conda-lock.yml``: channels and the pinned packages of each platform."""

    channels: tuple[str, ...]
    platforms: tuple[LockedPlatform, ...]

    def for_platform(self, platform: str) -> LockedPlatform:
        for p in self.platforms:
            if p.platform == platform:
                return p
        raise ArtifactError(
            f"the lockfile has no entries for platform {platform}; it was solved for "
            f"{', '.join(p.platform for p in self.platforms) or 'no platform'}"
        )


def read_lockfile(path: Path) -> LockedEnvironment:
    """Parse a conda-lock.yml (v1 or later, via conda-lock's parser) into typed records."""
    from conda_lock.lockfile import parse_conda_lock_file

    try:
        lf = parse_conda_lock_file(Path(path))
    except Exception as exc:
        raise ArtifactError(f"{Path(path).name} is not a valid conda-lock file: {exc}") from exc
    by_platform: dict[str, tuple[list[LockedCondaPackage], list[PipPackage]]] = {
        p: ([], []) for p in lf.metadata.platforms
    }
    for dep in lf.package:
        conda, pip = by_platform.setdefault(dep.platform, ([], []))
        if dep.manager == "conda":
            conda.append(
                LockedCondaPackage(dep.name, dep.version, dep.build or "", dep.url, dep.hash.md5, dep.hash.sha256)
            )
        else:
            requires = tuple(f"{n}{s}" for n, s in dep.dependencies.items())
            pip.append(PipPackage(dep.name, dep.version, dep.url or None, dep.hash.sha256, requires))
    return LockedEnvironment(
        channels=tuple(c.url for c in lf.metadata.channels),
        platforms=tuple(LockedPlatform(p, tuple(c), tuple(pp)) for p, (c, pp) in by_platform.items()),
    )


async def records_from_lockfile(
    locked: LockedEnvironment, settings: BuildSettings, platform: str | None = None
) -> tuple["RepoDataRecord", ...]:
    """py-rattler records for one platform's conda packages, ready for ``rattler.install``.

    The lockfile lacks parts of repodata that installing needs (e.g. ``noarch`` type, file
    lists come from the package), so the exact records are looked up in the channels by URL,
    without solving. A package that is gone from its channel is an error naming it.
    """
    from rattler import MatchSpec

    from .solve import gateway_for

    platform = platform or settings.host_platform
    wanted = locked.for_platform(platform).conda
    specs = [
        MatchSpec(f"{p.name} =={p.version} {p.build}" + (f"[sha256={p.sha256}]" if p.sha256 else ""))
        for p in wanted
    ]
    gateway = gateway_for(settings)
    # Lockfiles hold redacted URLs: use the configured channel whose redacted form matches.
    configured = {redact_url(c): c for c in settings.channels}
    channels = [configured.get(c, c) for c in locked.channels] or list(settings.channels)
    try:
        found = await gateway.query(channels, [platform, "noarch"], specs, recursive=False)
    except Exception as exc:
        raise ArtifactError(f"could not read the lockfile's channels: {redact_text(str(exc))}") from exc
    by_url = {redact_url(str(r.url)): r for per_channel in found for r in per_channel}
    missing = [f"{p.name}={p.version}={p.build}" for p in wanted if p.url not in by_url]
    if missing:
        raise ArtifactError(f"locked package(s) no longer available from the channels: {', '.join(missing)}")
    return tuple(by_url[p.url] for p in wanted)
