"""Config files for stores that build from the local channel (tests, benchmarks, the demo).

Server and workers read the same traitlets file, so every process-level test writes one; this is
the one place that knows which traits point a store at a :class:`~.channel.LocalChannel`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from .channel import LocalChannel


def local_channel_traits(channel: "LocalChannel", package_cache: str | Path | None = None) -> dict[str, object]:
    """``CondaStore`` traits that build from ``channel`` only (conda packages and ``pip:``)."""
    traits: dict[str, object] = {
        "conda_default_channels": [channel.url],
        "conda_allowed_channels": [channel.url],
        "pip_index_url": channel.pypi_index_url,
        "pip_find_links": [str(channel.pypi_dir)],
    }
    if package_cache is not None:
        traits["package_cache_directory"] = str(package_cache)
    return traits


def config_lines(sections: Mapping[str, Mapping[str, object]]) -> list[str]:
    """``c.<Section>.<trait> = <repr>`` lines; values must be Python literals."""
    return [f"c.{section}.{name} = {value!r}" for section, traits in sections.items()
            for name, value in traits.items()]


def write_config(path: str | Path, store: Mapping[str, object] | None = None,
                 **sections: Mapping[str, object]) -> Path:
    """Write a config file: ``store`` traits go to ``c.CondaStore``, other sections by name.

    ``write_config(p, {"store_directory": ...}, AuthenticationBackend={"predefined_tokens": {...}})``
    """
    path = Path(path)
    lines = ["c = get_config()  # noqa: F821", *config_lines({"CondaStore": dict(store or {}), **sections})]
    path.write_text("\n".join(lines) + "\n")
    return path
