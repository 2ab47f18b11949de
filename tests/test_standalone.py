"""``conda-store-server --standalone`` across real restarts: the admin token stays, ``--demo``
does not rebuild, ``--new-admin-token`` replaces the token.

Each test starts the real server process several times on one store directory (SQLite, private
redis-server); ``--workers=0`` where no build has to run, so a start costs a few seconds.
"""

from __future__ import annotations

import stat

import httpx
import pytest

from conda_store_jupyter import orm
from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.standalone import ADMIN_TOKEN_FILE
from conda_store_jupyter.server.testing import bearer

from .standalone_server import standalone_server, write_standalone_config

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

MINTED = r"admin token \(shown once; also in (\S+), readable only by you\): (cst_\S+)"


@pytest.fixture
def config(tmp_path, local_channel, package_cache_dir):
    return f"--config={write_standalone_config(tmp_path, local_channel, package_cache_dir)}"


def _whoami(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/permission/", headers=bearer(token), timeout=30)


def test_admin_token_is_stable_across_restarts_and_can_be_replaced(tmp_path, config):
    path = tmp_path / "conda-store-state" / ADMIN_TOKEN_FILE
    with standalone_server(tmp_path, config, "--workers=0", log_name="first.log") as server:
        shown_path, token = server.wait_output(MINTED).groups()
        assert shown_path == str(path)
        assert path.read_text() == token + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        perms = _whoami(server.url, token).json()["data"]
        assert perms["authenticated"] and "admin" in perms["entity_roles"]["*/*"]
    with standalone_server(tmp_path, config, "--workers=0", log_name="second.log") as server:
        server.wait_output(r"admin token: unchanged, in \S+admin-token")
        assert token not in server.output()  # shown once, at the start that minted it
        assert path.read_text() == token + "\n"
        assert _whoami(server.url, token).json()["data"]["authenticated"]
    with standalone_server(tmp_path, config, "--new-admin-token", "--workers=0", log_name="third.log") as server:
        new = server.wait_output(MINTED).group(2)
        assert new != token and path.read_text() == new + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        old = _whoami(server.url, token)
        assert old.status_code == 401 and "revoked on" in old.json()["message"]
        assert _whoami(server.url, new).json()["data"]["authenticated"]


def test_a_revoked_admin_token_is_replaced_at_the_next_start(tmp_path, config):
    with standalone_server(tmp_path, config, "--workers=0", log_name="first.log") as server:
        token = server.wait_output(MINTED).group(2)
        assert httpx.delete(f"{server.url}/api/v1/token/", headers=bearer(token), timeout=30).status_code == 200
    with standalone_server(tmp_path, config, "--workers=0", log_name="second.log") as server:
        new = server.wait_output(MINTED).group(2)
        assert new != token and _whoami(server.url, new).json()["data"]["authenticated"]


def test_demo_is_built_once_not_on_every_start(tmp_path, config):
    """No worker runs, so the demo build stays QUEUED: a restart must reuse it; only when no
    queued/building/completed build of its specification is left is a new one submitted."""
    demo = r"demo: (building|already built or queued, not rebuilt:) demo/python-demo \(build (\d+)\)"
    with standalone_server(tmp_path, config, "--demo", "--workers=0", log_name="first.log") as server:
        verb, first = server.wait_output(demo).groups()
        assert verb == "building"
    with standalone_server(tmp_path, config, "--demo", "--workers=0", log_name="second.log") as server:
        verb, again = server.wait_output(demo).groups()
        assert (verb, again) == ("already built or queued, not rebuilt:", first)
        token = (tmp_path / "conda-store-state" / ADMIN_TOKEN_FILE).read_text().strip()
        builds = httpx.get(f"{server.url}/api/v1/build/", headers=bearer(token), timeout=30).json()["data"]
        assert [b["id"] for b in builds] == [int(first)]
    _set_status(tmp_path, int(first), BuildStatus.FAILED)
    with standalone_server(tmp_path, config, "--demo", "--workers=0", log_name="third.log") as server:
        verb, third = server.wait_output(demo).groups()
        assert verb == "building" and int(third) > int(first)


def _set_status(tmp_path, build_id: int, status: BuildStatus) -> None:
    """What a worker would have recorded (the server is stopped; the database is plain SQLite)."""
    from conda_store_jupyter.app import CondaStore

    store = CondaStore(store_directory=str(tmp_path / "conda-store-state"))
    try:
        with store.session() as db:
            db.get(orm.Build, build_id).status = status
    finally:
        store.dispose()
