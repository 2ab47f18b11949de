"""The build settings of one build, from the ``CondaStore`` configuration.

The pipeline (:mod:`conda_store_jupyter.builder`) takes only typed :class:`BuildSettings` and
knows nothing of the configuration object; this is where the worker (and the registry, checking
that an on-demand name solves before it creates anything) turns one into the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..builder.records import BuildSettings
from ..lockspec import LockSpecification
from ..schema import BuildArtifactType, Specification

if TYPE_CHECKING:
    from ..app import CondaStore


def settings_from_store(store: "CondaStore", spec: Specification | LockSpecification) -> BuildSettings:
    """The build settings for ``spec`` under a ``CondaStore`` configuration.

    Channels are the specification's (a lockfile's: its own) or the store's defaults, each expanded to a URL by
    ``store.channel_url``. ``conda_included_packages`` and ``conda_required_packages`` travel in
    the settings and are applied by the pipeline (``builder.pipeline.effective_specification``).
    """
    channels = spec.channels or list(store.conda_default_channels)
    known = {a.value for a in BuildArtifactType}
    return BuildSettings(
        channels=tuple(store.channel_url(c) for c in channels),
        platforms=tuple(store.conda_solve_platforms),
        package_cache_directory=Path(store.package_cache_directory).expanduser().resolve(),
        pip_index_url=store.pip_index_url,
        pip_find_links=tuple(store.pip_find_links),
        artifacts=frozenset(BuildArtifactType(a) for a in store.build_artifacts if a in known),
        conda_pack_compress_level=int(store.conda_pack_compress_level),
        timeout=store.build_time_limit,
        included_packages=tuple(store.conda_included_packages),
        required_packages=tuple(store.conda_required_packages),
        allowed_channels=tuple(store.channel_url(c) for c in store.allowed_channels),
    )
