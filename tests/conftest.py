"""Shared fixtures. Real parts only: the local channel is a real indexed conda channel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conda_store_jupyter.testing.channel import cache_root


@pytest.fixture(scope="session")
def local_channel():
    """The real local test channel (python, whl2conda packages, native packages) + a pip index."""
    from conda_store_jupyter.testing.channel import build_channel

    return build_channel(cache_root() / "channel")


@pytest.fixture(scope="session")
def package_cache_dir() -> Path:
    """One package cache shared by every build in the test run (as on a real host)."""
    path = cache_root() / "pkgs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL: $CONDA_STORE_TEST_POSTGRES_URL (CI starts one) or a private server."""
    url = os.environ.get("CONDA_STORE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from .postgres_server import _bindir, postgres_server

    if _bindir() is None:
        pytest.skip("no PostgreSQL server available (set CONDA_STORE_TEST_POSTGRES_URL)")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Run a test once on SQLite and once on PostgreSQL (a fresh database each time)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'conda-store.sqlite'}"
        return
    import sqlalchemy

    base = request.getfixturevalue("postgres_url")
    name = f"t_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()
pytest_plugins = ["tests.fixtures_service"]


# -- CI: a missing tool is a failure, not a skip -------------------------------------------------
# Locally a test may skip when redis-server, PostgreSQL, umoci, npm... are absent. Under CI
# (CI=true, set by the CI runner) .ci/run installs all of them, so such a skip means the
# installation is broken and must not pass silently.
_MISSING_TOOL = ("not installed", "cannot install", "no PostgreSQL", "needs node and npm")
_missing_tool_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if any(marker in reason for marker in _MISSING_TOOL):
            _missing_tool_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") and _missing_tool_skips:
        print("\nCI: tests skipped because a required tool is missing:\n  " + "\n  ".join(_missing_tool_skips))
        session.exitstatus = 1
