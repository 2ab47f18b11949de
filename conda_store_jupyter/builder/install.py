"""Install step: link the solved conda packages into a new prefix with py-rattler.

Conda packages come from ONE package cache shared by every build on the host, so a package is
downloaded and extracted once and then hard-linked into each prefix (the cache and the store
must share a filesystem for that). The ``pip:`` section is the next step (:mod:`.pip`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from ..exceptions import InstallError
from .records import BuildSettings, InstalledPackage, PlatformSolution
from .solve import read_summary


async def install_conda(
    solution: PlatformSolution, prefix: Path, settings: BuildSettings, specs: Sequence[str]
) -> None:
    """Link the solved host records into a new prefix (hardlinks from the shared cache)."""
    from rattler import MatchSpec, install

    try:
        await install(
            list(solution.records),
            target_prefix=prefix,
            cache_dir=settings.package_cache_directory,
            show_progress=False,
            # py-rattler 0.28 forgets to unwrap MatchSpec here; pass the inner objects.
            requested_specs=[MatchSpec(s)._match_spec for s in specs],
        )
    except Exception as exc:  # rattler raises its own (unexported) exception classes
        raise InstallError(f"installing the conda packages failed: {exc}") from exc


def cached_summaries(packages: Iterable[InstalledPackage], settings: BuildSettings) -> tuple[InstalledPackage, ...]:
    """Fill in ``summary`` from the packages' ``info/about.json`` in the package cache.

    rattler extracts each package to ``<cache>/<name>-<version>-<build>`` (repodata has no
    summary); packages not found there keep an empty summary.
    """
    cache = settings.package_cache_directory
    return tuple(p.with_summary(read_summary(cache / f"{p.name}-{p.version}-{p.build}")) for p in packages)
