"""Typed records handed from one build step to the next.

Every step of :mod:`conda_store_jupyter.builder.pipeline` takes and returns these frozen dataclasses
(never loose dicts), so the data a step depends on is visible in its signature and a later step
cannot silently mutate what an earlier one produced. Raw py-rattler objects appear only where the
next step must hand them back to py-rattler (``PlatformSolution.records`` → ``rattler.install``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..schema import BuildArtifactType

if TYPE_CHECKING:  # rattler is imported lazily by the steps; only types are needed here
    from rattler import RepoDataRecord

DEFAULT_ARTIFACTS: frozenset[BuildArtifactType] = frozenset(
    {BuildArtifactType.LOCKFILE, BuildArtifactType.YAML, BuildArtifactType.CONDA_PACK}
)


def current_platform() -> str:
    """The conda subdir of this machine (``linux-64``...): the only one a build installs."""
    from rattler import Subdir

    return str(Subdir.current())


@dataclass(frozen=True)
class BuildSettings:
    """Everything a build needs besides the specification, resolved from ``CondaStore`` once.

    ``channels`` are URLs (``file://``, ``http(s)://``), already expanded from names, in priority
    order. ``platforms`` are the conda subdirs the lockfile is solved for; the host platform is
    always among them (added first if missing) because it is the one that gets installed.
    """

    channels: tuple[str, ...]
    package_cache_directory: Path
    platforms: tuple[str, ...] = ()
    pip_index_url: str | None = None
    pip_find_links: tuple[str, ...] = ()
    artifacts: frozenset[BuildArtifactType] = DEFAULT_ARTIFACTS
    conda_pack_compress_level: int = 1
    timeout: float | None = 3600.0
    included_packages: tuple[str, ...] = ()
    """Match specs added to the specification unless it names that package (store policy)."""
    required_packages: tuple[str, ...] = ()
    """Package names the specification must list (store policy); the build fails otherwise."""
    allowed_channels: tuple[str, ...] | None = None
    """Channel URLs builds may use (store policy, ``schema.channel_allowed``); None: no policy."""
    host_platform: str = field(default_factory=current_platform)

    def __post_init__(self) -> None:
        # Normalise so callers may pass lists; frozen dataclasses need object.__setattr__.
        platforms = tuple(dict.fromkeys(p for p in self.platforms if p != "noarch"))
        if self.host_platform not in platforms:
            platforms = (self.host_platform, *platforms)
        object.__setattr__(self, "platforms", platforms)
        object.__setattr__(self, "channels", tuple(c.rstrip("/") for c in self.channels))
        object.__setattr__(self, "pip_find_links", tuple(str(x) for x in self.pip_find_links))
        object.__setattr__(self, "included_packages", tuple(self.included_packages))
        object.__setattr__(self, "required_packages", tuple(self.required_packages))
        if self.allowed_channels is not None:
            object.__setattr__(self, "allowed_channels", tuple(self.allowed_channels))
        object.__setattr__(self, "artifacts", frozenset(BuildArtifactType(a) for a in self.artifacts))
        object.__setattr__(self, "package_cache_directory", Path(self.package_cache_directory))
        if not self.channels:
            raise ValueError("BuildSettings needs at least one channel")

    @property
    def repodata_cache_directory(self) -> Path:
        """Where the gateway caches fetched repodata: next to the packages, one cache per host."""
        return self.package_cache_directory / ".repodata"

    @property
    def uv_cache_directory(self) -> Path:
        """uv's wheel cache, inside the package cache so a build writes nowhere else."""
        return self.package_cache_directory / ".uv"


@dataclass(frozen=True)
class BuildPaths:
    """Where one build writes its outputs. The prefix must not exist yet (a build never reuses one)."""

    prefix: Path
    lockfile: Path
    yaml: Path
    archive: Path
    log: Path

    @classmethod
    def in_directory(cls, directory: Path | str, prefix: Path | str | None = None) -> "BuildPaths":
        """The standalone layout used by ``python -m conda_store_jupyter.builder --output DIR``."""
        d = Path(directory).resolve()
        return cls(
            prefix=Path(prefix).resolve() if prefix else d / "env",
            lockfile=d / "conda-lock.yml",
            yaml=d / "environment.yaml",
            archive=d / "environment.tar.gz",
            log=d / "build.log",
        )


@dataclass(frozen=True)
class InstalledPackage:
    """One conda package pinned by the solve (and, for the host platform, linked into the prefix).

    Hashes are lowercase hex; ``channel`` is the channel URL; ``url`` the package file URL and
    ``fn`` its file name. ``summary`` comes from the package's ``info/about.json`` when the package
    is in the local cache (it is not part of repodata), else it is empty.
    """

    name: str
    version: str
    build: str
    build_number: int
    channel: str
    subdir: str
    url: str
    fn: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    license: str | None = None
    summary: str = ""
    timestamp: int | None = None
    """Build time in milliseconds since the epoch (repodata convention), if the package has one."""

    @property
    def pin(self) -> str:
        """``name=version=build``: the exact conda pin used in the pinned YAML."""
        return f"{self.name}={self.version}={self.build}"

    def with_summary(self, summary: str) -> "InstalledPackage":
        return dataclasses.replace(self, summary=summary)


@dataclass(frozen=True)
class PlatformSolution:
    """The solve for one platform: its records (for ``rattler.install``) and their typed view."""

    platform: str
    packages: tuple[InstalledPackage, ...]
    records: tuple["RepoDataRecord", ...] = field(repr=False, compare=False)


@dataclass(frozen=True)
class SolveResult:
    """Result of the solve step: the requested specs and one solution per configured platform."""

    specs: tuple[str, ...]
    channels: tuple[str, ...]
    host_platform: str
    solutions: tuple[PlatformSolution, ...]

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(s.platform for s in self.solutions)

    def for_platform(self, platform: str) -> PlatformSolution:
        for s in self.solutions:
            if s.platform == platform:
                return s
        raise KeyError(platform)

    @property
    def host(self) -> PlatformSolution:
        return self.for_platform(self.host_platform)


@dataclass(frozen=True)
class PipPackage:
    """A distribution installed by the ``pip:`` section (never one that conda installed).

    ``url``/``sha256`` identify the exact wheel or sdist the pip step locked and installed (the URL
    redacted, see :mod:`..urls`); ``requires`` are its ``Requires-Dist`` lines (for the lockfile's
    dependency map).
    """

    name: str
    version: str
    url: str | None = None
    sha256: str | None = None
    requires: tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class InstallResult:
    """What the install step left in the prefix: conda packages as linked, then pip packages."""

    prefix: Path
    packages: tuple[InstalledPackage, ...]
    pip_packages: tuple[PipPackage, ...] = ()


@dataclass(frozen=True)
class StageTiming:
    name: str
    seconds: float


@dataclass(frozen=True)
class BuildOutputs:
    """The result of a successful :func:`~conda_store_jupyter.builder.pipeline.run_pipeline`."""

    prefix: Path
    lockfile: Path
    yaml: Path
    archive: Path | None
    log: Path
    packages: tuple[InstalledPackage, ...]
    pip_packages: tuple[PipPackage, ...]
    timings: tuple[StageTiming, ...]
    size_bytes: int
    platforms: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        return sum(t.seconds for t in self.timings)

    def summary(self) -> dict[str, object]:
        """JSON-able summary (what the CLI prints on its last line)."""
        return {
            "prefix": str(self.prefix),
            "lockfile": str(self.lockfile),
            "yaml": str(self.yaml),
            "archive": str(self.archive) if self.archive else None,
            "log": str(self.log),
            "platforms": list(self.platforms),
            "packages": [p.pin for p in self.packages],
            "pip_packages": [p.pin for p in self.pip_packages],
            "size_bytes": self.size_bytes,
            "timings": {t.name: round(t.seconds, 4) for t in self.timings},
        }
