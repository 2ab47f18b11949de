"""The offline build pipeline: one step per module, typed records between steps.

``solve`` (py-rattler) → ``lockfile`` (conda-lock models) → ``install`` (py-rattler + uv for
``pip:``) → ``export`` (pinned YAML) → ``pack`` (conda-pack); ``pipeline`` orchestrates one build,
``log`` is the build log. It takes typed settings and returns typed results; the worker turns
its configuration into settings and records the results (``conda_store_jupyter.worker``).
Run standalone with ``python -m conda_store_jupyter.builder SPEC.yaml --channel URL --output DIR``.
"""

from __future__ import annotations

from .log import BuildLog
from .pipeline import run_pipeline, run_pipeline_async
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
]
