"""examples/jupyterhub_config.py for real: JupyterHub + CHP + our managed service + a spawned
single-user jupyter-server whose conda-store extension (enabled by the installed config file,
nothing configured) reaches the service as its user with the server's own hub token.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conda_store_jupyter.testing.config import local_channel_traits, write_config

from ..processes import free_port, stop_process, wait_for
from ..test_hub import HUB_ADMIN_TOKEN, SERVICE, Hub, chp  # noqa: F401 - chp is a fixture

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "jupyterhub_config.py"
BIN = Path(sys.executable).parent
SPEC = "name: labenv\ndependencies:\n  - hello\n"


@pytest.fixture(scope="module")
def lab_hub(tmp_path_factory, chp, local_channel, package_cache_dir):  # noqa: F811
    with running_lab_hub(tmp_path_factory.mktemp("labhub"), chp, local_channel, package_cache_dir) as hub:
        yield hub


@contextmanager
def running_lab_hub(tmp: Path, chp: Path, local_channel, package_cache_dir, *, workers: int = 0,  # noqa: F811
                    store_traits: dict | None = None, extra_config: str = "") -> Iterator[Hub]:
    """The example hub (see the module docstring); ``workers`` > 0 builds what is submitted,
    ``store_traits`` and ``extra_config`` (appended to the hub config) adjust it per test module."""
    proxy_port, hub_port, proxy_api_port, service_port = (free_port() for _ in range(4))
    store_config = write_config(
        tmp / "conda_store_config.py",
        {"store_directory": str(tmp / "store"), **local_channel_traits(local_channel, package_cache_dir),
         "conda_solve_platforms": ["linux-64"], **(store_traits or {})})
    for user in ("alice", "bob"):
        (tmp / "home" / user).mkdir(parents=True)
    public = f"http://127.0.0.1:{proxy_port}"
    # The example as it is, then only what a test run must change: ports, paths, a login that
    # takes any password, local process spawning as root, and a hub admin service for the test.
    (tmp / "jupyterhub_config.py").write_text(f"""\
c = get_config()  # noqa: F821
load_subconfig({str(EXAMPLE)!r})  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.public_url = {public!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
c.JupyterHub.db_url = "sqlite:///{tmp / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(tmp / 'jupyterhub_cookie_secret')!r}
[service] = c.JupyterHub.services
service["url"] = "http://127.0.0.1:{service_port}"
service["command"] = {[sys.executable, "-m", "conda_store_jupyter.server.app", "--standalone",
                       f"--config={store_config}", f"--workers={workers}"]!r}
service["cwd"] = {str(tmp)!r}
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {HUB_ADMIN_TOKEN!r}}})
c.JupyterHub.load_roles.append({{"name": "test-admin", "services": ["test-admin"],
                                 "scopes": ["admin:users", "admin:servers", "tokens", "read:services"]}})
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.allowed_users = {{"alice", "bob"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(tmp / 'home' / '{username}')!r}
c.Spawner.cmd = [{str(BIN / 'jupyterhub-singleuser')!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.ip = "127.0.0.1"
""" + extra_config)
    log = tmp / "jupyterhub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
                                cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for url, what in [(f"http://127.0.0.1:{hub_port}/hub/health", "the hub"),
                          (f"{public}/hub/health", "the proxy routes"),
                          (f"{public}/services/{SERVICE}/api/v1/", "the service through the proxy")]:
            wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, 90, what, proc=proc, log=log,
                     ignore=httpx.HTTPError)
        yield Hub(public_url=public, api_url=f"http://127.0.0.1:{hub_port}/hub/api", tmp=tmp, log=log)
    finally:
        stop_process(proc, group=True)


def spawn(hub: Hub, user: str) -> str:
    """Start ``user``'s server; return a hub token that may use it (what Lab's cookie stands for)."""
    resp = hub.admin("POST", f"/users/{user}/server")
    assert resp.status_code in (201, 202), resp.text

    def ready() -> bool:
        return hub.admin("GET", f"/users/{user}").json()["servers"].get("", {}).get("ready", False)

    wait_for(ready, 90, f"{user}'s server", log=hub.log)
    return hub.token_for(user, [f"access:servers!user={user}"], note=f"lab-{time.monotonic_ns()}")


def lab(hub: Hub, user: str, token: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{hub.public_url}/user/{user}/conda-store/{path}", timeout=60,
                         headers={"Authorization": f"token {token}"}, follow_redirects=False, **kwargs)


def test_users_server_reaches_the_service_as_its_user(lab_hub):
    alice = spawn(lab_hub, "alice")
    config = lab(lab_hub, "alice", alice, "GET", "config")
    assert config.status_code == 200, config.text + lab_hub.log.read_text()[-3000:]
    data = config.json()["data"]
    assert data["configured"] and data["reachable"], data
    assert (data["url_source"], data["auth"]) == ("JupyterHub", "jupyterhub")
    assert data["public_url"] == f"{lab_hub.public_url}/services/{SERVICE}"
    assert data["user"]["authenticated"] and data["user"]["username"] == "alice"

    created = lab(lab_hub, "alice", alice, "POST", "api/v1/specification/",
                  json={"namespace": "alice", "specification": SPEC})
    assert created.status_code == 200, created.text
    names = [e["name"] for e in lab(lab_hub, "alice", alice, "GET", "api/v1/environment/").json()["data"]]
    assert names == ["labenv"]

    # bob's server is bob: alice's environment is not his to see, let alone change
    bob = spawn(lab_hub, "bob")
    assert lab(lab_hub, "bob", bob, "GET", "config").json()["data"]["user"]["username"] == "bob"
    assert lab(lab_hub, "bob", bob, "GET", "api/v1/environment/").json()["data"] == []
    assert lab(lab_hub, "bob", bob, "GET", "api/v1/environment/alice/labenv/").status_code in (403, 404)
    # and alice's token does not open bob's server
    assert lab(lab_hub, "bob", alice, "GET", "config").status_code in (302, 403)
