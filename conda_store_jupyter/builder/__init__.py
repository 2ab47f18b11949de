"""The offline build pipeline: one step per module, typed records between steps.

``solve`` (py-rattler) → ``lockfile`` (conda-lock models) → ``install`` (py-rattler + uv for
``pip:``) → ``export`` (pinned YAML) → ``pack`` (conda-pack); ``pipeline`` orchestrates one build,
``link`` switches an environment to a build, ``log`` is the build log. Run standalone with
``python -m conda_store_jupyter.builder SPEC.yaml --channel URL --output DIR``.
"""

from __future__ import annotations

from .log import BuildLog
from .pipeline import run_pipeline, run_pipeline_async, settings_from_store
from .records import (
    BuildOutputs,
    BuildPaths,
    BuildSettings,
    InstalledPackage,
    PipPackage,
    PlatformSolution,
    SolveResult,
)

__all__ = [
    "BuildLog",
    "BuildOutputs",
    "BuildPaths",
    "BuildSettings",
    "InstalledPackage",
    "PipPackage",
    "PlatformSolution",
    "SolveResult",
    "run_pipeline",
    "run_pipeline_async",
    "settings_from_store",
]
