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
    from ..api.settings import EffectiveSettings
    from ..app import CondaStore


def settings_from_store(store: "CondaStore", spec: Specification | LockSpecification,
                        settings: "EffectiveSettings | None" = None) -> BuildSettings:
    """The build settings for ``spec`` under a ``CondaStore`` configuration.

    ``settings`` are the effective settings of the build's environment (``api.settings``: the
    configuration overridden globally, per namespace and per environment; see
    :func:`build_settings_for`); without them, the configuration's own values. Channels are the
    specification's own (a lockfile's: its own) or the default channels, each expanded to a URL
    under the channel alias. The included and required packages travel in the settings and are
    applied by the pipeline (``builder.pipeline.effective_specification``), the allowed channels
    checked there: the same values the submission was checked against, read again when the build runs.
    """
    from ..api.settings import configured_settings

    settings = settings or configured_settings(store)
    channels = spec.channels or list(settings.conda_default_channels)
    known = {a.value for a in BuildArtifactType}
    return BuildSettings(
        channels=tuple(settings.channel_url(c) for c in channels),
        platforms=tuple(settings.conda_solve_platforms),
        package_cache_directory=Path(store.package_cache_directory).expanduser().resolve(),
        pip_index_url=store.pip_index_url,
        pip_find_links=tuple(store.pip_find_links),
        artifacts=frozenset(BuildArtifactType(a) for a in settings.build_artifacts if a in known),
        conda_pack_compress_level=int(store.conda_pack_compress_level),
        timeout=store.build_time_limit,
        included_packages=tuple(settings.conda_included_packages),
        required_packages=tuple(settings.conda_required_packages),
        allowed_channels=tuple(settings.channel_url(c) for c in settings.allowed_channels),
    )


def build_settings_for(store: "CondaStore", build_id: int) -> "EffectiveSettings":
    """The effective settings of a build's environment, read now (a rebuild sees today's)."""
    from .. import orm
    from ..api.settings import Scope, effective_settings

    with store.session() as db:
        build = db.get(orm.Build, int(build_id))
        env = build.environment
        return effective_settings(db, store, Scope(env.namespace.name, env.name))
