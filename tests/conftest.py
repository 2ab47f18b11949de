"""Shared fixtures. Real parts only: the local channel is a real indexed conda channel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _cache_root() -> Path:
    # One cache per checkout (and per CI run): the channel is rebuilt only when its inputs change.
    return Path(os.environ.get("CONDA_STORE_TEST_CACHE", REPO / ".cache")).resolve()


@pytest.fixture(scope="session")
def local_channel():
    """The real local test channel (python, whl2conda packages, native packages) + a pip index."""
    from conda_store_jupyter.testing.channel import build_channel

    return build_channel(_cache_root() / "channel")


@pytest.fixture(scope="session")
def package_cache_dir() -> Path:
    """One package cache shared by every build in the test run (as on a real host)."""
    path = _cache_root() / "pkgs"
    path.mkdir(parents=True, exist_ok=True)
    return path
