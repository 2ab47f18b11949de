"""Solve step: py-rattler ``solve`` for every configured platform.

Only the host platform is installed, so only its solve may use the host's detected virtual
packages. Other platforms are solve-only (so the lockfile works there too) and get an explicit,
conservative set of virtual packages: a solve must not depend on the machine that ran it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from ..exceptions import SolveError
from ..urls import redact_url
from .records import BuildSettings, InstalledPackage, PlatformSolution, SolveResult

if TYPE_CHECKING:
    from rattler import Gateway, GenericVirtualPackage, RepoDataRecord

# Virtual packages assumed for platforms we cannot detect (solve-only platforms). The values are
# the oldest systems current conda-forge builds still target, so a lockfile solved here does not
# demand more of the machine that installs it than conda itself would. (name, version, build)
_FOREIGN_VIRTUAL_PACKAGES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "linux": (("__unix", "0", "0"), ("__linux", "4.18", "0"), ("__glibc", "2.28", "0")),
    "osx-64": (("__unix", "0", "0"), ("__osx", "10.15", "0")),
    "osx-arm64": (("__unix", "0", "0"), ("__osx", "11.0", "0")),
    "win": (("__win", "0", "0"),),
}
_ARCHSPEC: dict[str, str] = {
    "64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def foreign_virtual_packages(platform: str) -> list["GenericVirtualPackage"]:
    """Explicit virtual packages for a platform we solve for but do not run on."""
    from rattler import BuildString, GenericVirtualPackage, PackageName, Version

    os_name, _, arch = platform.partition("-")
    table = _FOREIGN_VIRTUAL_PACKAGES.get(platform) or _FOREIGN_VIRTUAL_PACKAGES.get(os_name, ())
    entries = list(table)
    if arch in _ARCHSPEC:
        entries.append(("__archspec", "1", _ARCHSPEC[arch]))
    return [GenericVirtualPackage(PackageName(n), Version(v), BuildString(b)) for n, v, b in entries]


@functools.lru_cache(maxsize=1)
def host_virtual_packages() -> tuple["GenericVirtualPackage", ...]:
    """The host's detected virtual packages (``__glibc``, ``__linux``...), detected once per process."""
    from rattler import VirtualPackage

    return tuple(v.into_generic() for v in VirtualPackage.detect())


_GATEWAYS: dict[tuple[str, tuple[str, ...]], "Gateway"] = {}


def gateway_for(settings: BuildSettings) -> "Gateway":
    """A repodata gateway shared by the builds of this process, emptied of stale repodata.

    The gateway keeps repodata in memory, which would hide a channel re-indexed since the last
    build; ``clear_repodata_cache`` drops just that (the on-disk HTTP cache under the package
    cache is revalidated as usual). ``file://`` channels are read fresh every time (no-cache):
    reading a local repodata.json is cheaper than checking a cache for it.
    """
    from rattler import Gateway, SourceConfig

    key = (str(settings.repodata_cache_directory), settings.channels)
    gw = _GATEWAYS.get(key)
    if gw is None:
        if len(_GATEWAYS) >= 16:  # a long-lived worker sees few channel sets; do not grow forever
            _GATEWAYS.clear()
        local = {c: SourceConfig(cache_action="no-cache") for c in settings.channels if c.startswith("file:")}
        gw = Gateway(cache_dir=settings.repodata_cache_directory, per_channel_config=local or None)
        _GATEWAYS[key] = gw
    else:
        for channel in settings.channels:
            gw.clear_repodata_cache(channel)
    return gw


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value else None


def _millis(value: dt.datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


def package_from_record(record: "RepoDataRecord", summary: str = "") -> InstalledPackage:
    """The typed view of a py-rattler record (``RepoDataRecord`` or ``PrefixRecord``).

    py-rattler hands out ``PackageName``/``Version``/``BuildString`` objects and raw bytes
    hashes; everything downstream wants plain strings, so convert once, here.
    """
    return InstalledPackage(
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        build_number=int(record.build_number),
        channel=redact_url((record.channel or "").rstrip("/")),  # persisted: no secrets
        subdir=str(record.subdir),
        url=redact_url(str(record.url)),
        fn=str(record.file_name),
        sha256=_hex(record.sha256),
        md5=_hex(record.md5),
        size=record.size,
        depends=tuple(record.depends),
        constrains=tuple(record.constrains),
        license=record.license,
        summary=summary,
        timestamp=_millis(record.timestamp),
    )


def solver_message(exc: BaseException) -> str:
    """The solver's own explanation, kept intact (it names the missing/conflicting package)."""
    text = str(exc).strip()
    return text or f"the solver failed ({type(exc).__name__})"


async def solve_platform(
    specs: Sequence[str],
    settings: BuildSettings,
    platform: str,
    gateway: "Gateway",
    timeout: float | None = None,
) -> PlatformSolution:
    """Solve ``specs`` for one platform (plus noarch)."""
    from rattler import solve

    virtual = list(host_virtual_packages()) if platform == settings.host_platform else foreign_virtual_packages(platform)
    try:
        records = await solve(
            sources=list(settings.channels),
            specs=list(specs),
            gateway=gateway,
            platforms=[platform, "noarch"],
            virtual_packages=virtual,
            timeout=dt.timedelta(seconds=timeout) if timeout is not None else None,
        )
    except Exception as exc:  # rattler raises SolverError / FetchRepoDataError / ... (not exported)
        where = "" if platform == settings.host_platform else f" (for platform {platform})"
        raise SolveError(f"could not solve the specification{where}: {solver_message(exc)}") from exc
    records.sort(key=lambda r: r.name.normalized)
    return PlatformSolution(
        platform=platform,
        packages=tuple(package_from_record(r) for r in records),
        records=tuple(records),
    )


async def solve_specification(
    specs: Iterable[str], settings: BuildSettings, timeout: float | None = None
) -> SolveResult:
    """Solve for every platform in ``settings.platforms`` concurrently (each solve takes ms).

    The host platform's error wins when several fail: it is the one the user is building.
    """
    specs = tuple(specs)
    gateway = gateway_for(settings)
    tasks = [solve_platform(specs, settings, p, gateway, timeout) for p in settings.platforms]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for platform, res in zip(settings.platforms, results):
        if isinstance(res, BaseException) and platform == settings.host_platform:
            raise res
    for res in results:
        if isinstance(res, BaseException):
            raise res
    return SolveResult(
        specs=specs,
        channels=settings.channels,
        host_platform=settings.host_platform,
        solutions=tuple(r for r in results if isinstance(r, PlatformSolution)),
    )


def read_summary(extracted_package_dir: str | Path | None) -> str:
    """``summary`` from a cached package's ``info/about.json`` ("" if unknown)."""
    import json

    if not extracted_package_dir:
        return ""
    try:
        about = json.loads((Path(extracted_package_dir) / "info" / "about.json").read_text())
    except (OSError, ValueError):
        return ""
    summary = about.get("summary") if isinstance(about, dict) else None
    return summary.strip() if isinstance(summary, str) else ""
