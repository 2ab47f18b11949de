"""The jupyter-server extension against a REAL conda-store service (in-process server on a free
port, real redis-server, real worker processes when a build must run) through pytest-jupyter's
real jupyter-server: forwarding, builds, the live log stream, auth failures, a service that is
down or not configured, and the shipped config file that enables the extension.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.testing import bearer, running_server, user_token

from ..fixtures_service import BUILD_DEADLINE, QUICK, SLOW, completed_build, status_of
from ..processes import free_port

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = "conda_store_jupyter.jupyter"


@pytest.fixture
def service_env(request, service_factory):
    """A configured store; ``indirect`` param "hanging pip index": builds hang in their pip step."""
    if getattr(request, "param", None) == "hanging pip index":
        return service_factory(pip_index_url=request.getfixturevalue("hanging_index").url)
    return service_factory()


@pytest.fixture
def service(request, service_env):
    """The service over real HTTP; ``indirect`` param "s3": artifacts in S3 (moto); "registry":
    ``c.CondaStoreServer.registry_url`` set (the registry host under JupyterHub)."""
    c = Config()
    if getattr(request, "param", None) == "registry":
        c.CondaStoreServer.registry_url = "https://registry.example.org:5000"
    if getattr(request, "param", None) == "s3":
        c.CondaStore.storage_class = "conda_store_jupyter.storage.s3.S3Storage"
        c.S3Storage.update(bucket_name=f"cs-{time.monotonic_ns()}", access_key="test", secret_key="test",
                           endpoint_url=request.getfixturevalue("s3_endpoint"), create_bucket=True)
    with running_server(c, ["--config", str(service_env.config)]) as server:
        yield server


@pytest.fixture
def alice(service) -> str:
    return user_token(service, "alice")


@pytest.fixture
def extension_traits(request, monkeypatch) -> dict:
    """``c.CondaStoreExtension`` (and environment) of the jupyter-server under test, by scenario
    (``indirect`` param): the service's URL and alice's token by default."""
    scenario = getattr(request, "param", "traits")
    if scenario == "unconfigured":
        return {}
    if scenario == "down":  # a port nobody listens on
        return {"url": f"http://127.0.0.1:{free_port()}", "token": "whatever"}
    service = request.getfixturevalue("service")
    if scenario == "environment":
        monkeypatch.setenv("CONDA_STORE_URL", service.url)
        monkeypatch.setenv("CONDA_STORE_TOKEN", request.getfixturevalue("alice"))
        return {}
    if scenario == "bad token":
        return {"url": service.url, "token": "not-a-valid-token"}
    if scenario == "anonymous":
        return {"url": service.url}
    if scenario == "admin":
        admin = user_token(service, "root", admin=True, role_bindings={"*/*": ["admin"]})
        return {"url": service.url, "token": admin}
    assert scenario == "traits", scenario
    return {"url": service.url, "token": request.getfixturevalue("alice")}


@pytest.fixture
def jp_server_config(extension_traits):
    # allow_unauthenticated_access=False: jupyter-server then checks every extension handler
    # method for an auth decorator (JupyterServerAuthWarning, an error here via pytestmark).
    # jupyter_server_terminals (which pytest-jupyter adds) has an undecorated websocket handler.
    extensions = {EXTENSION: True, "jupyter_server_terminals": False}
    return {"ServerApp": {"jpserver_extensions": extensions, "allow_unauthenticated_access": False},
            "CondaStoreExtension": extension_traits}


async def fetch(jp_fetch, path: str, **kwargs):
    """``jp_fetch`` under ``conda-store/`` that returns error answers instead of raising."""
    kwargs.setdefault("raise_error", False)
    return await jp_fetch("conda-store", path, **kwargs)


def body(response) -> dict:
    return json.loads(response.body)


async def wait_status(store, build_id: int, statuses: set[BuildStatus]) -> BuildStatus:
    deadline = time.monotonic() + BUILD_DEADLINE
    while (status := status_of(store, build_id)[0]) not in statuses:
        assert time.monotonic() < deadline, f"build {build_id} still {status}"
        await asyncio.sleep(0.2)  # the jupyter-server under test runs on this loop: never block it
    return status


# --------------------------------------------------------------------------- forwarding


async def test_get_is_forwarded_as_the_configured_user(jp_fetch, service):
    r = await fetch(jp_fetch, "api/v1/permission/")
    assert r.code == 200
    me = body(r)["data"]
    assert me["authenticated"] and me["username"] == "alice" and me["primary_namespace"] == "alice"
    # query strings pass through unchanged
    r = await fetch(jp_fetch, "api/v1/environment/", params={"namespace": "alice", "size": "5"})
    assert r.code == 200 and body(r)["count"] == 0 and body(r)["size"] == 5


async def test_create_environment_through_the_extension_builds(jp_fetch, service, service_env, alice):
    service_env.start_worker()
    r = await fetch(jp_fetch, "api/v1/specification/", method="POST",
                    body=json.dumps({"namespace": "alice", "specification": QUICK}),
                    headers={"Content-Type": "application/json"})
    assert r.code == 200, r.body
    build_id = body(r)["data"]["build_id"]
    assert await wait_status(service.store, build_id, {BuildStatus.COMPLETED, BuildStatus.FAILED}) \
        == BuildStatus.COMPLETED, service_env.worker_logs()[-3000:]
    build = body(await fetch(jp_fetch, f"api/v1/build/{build_id}/"))["data"]
    assert build["status"] == "COMPLETED"

    # an artifact download: bytes and the headers a browser needs, as the service sent them
    lockfile = await fetch(jp_fetch, f"api/v1/build/{build_id}/lockfile/")
    direct = httpx.get(service.api(f"build/{build_id}/lockfile/"), headers=bearer(alice), timeout=30)
    assert lockfile.code == 200 and lockfile.body == direct.content
    for name in ("Content-Type", "Content-Disposition", "Content-Length", "Cache-Control"):
        assert lockfile.headers.get(name) == direct.headers.get(name), name
    assert lockfile.headers["Content-Disposition"].startswith("attachment; filename=")
    assert "Set-Cookie" not in lockfile.headers or "conda-store" not in lockfile.headers["Set-Cookie"]


@pytest.mark.parametrize("service", ["s3"], indirect=True)
@pytest.mark.parametrize("extension_traits", ["admin"], indirect=True)
async def test_storage_redirects_go_to_the_browser_unchanged(jp_fetch, service, s3_endpoint):
    """Artifacts in S3 are a 307 to a presigned URL: the browser follows it, we do not fetch it."""
    build_id = completed_build(service.store, "s3env", ["python"])
    r = await fetch(jp_fetch, f"api/v1/build/{build_id}/logs/", follow_redirects=False)
    assert r.code == 307
    location = r.headers["Location"]
    assert location.startswith(s3_endpoint) and "Signature" in location
    assert httpx.get(location, timeout=30).content == b"BUILD COMPLETED in 1.0 s\n"


async def test_service_errors_come_back_as_worded(jp_fetch, service, alice):
    spec = {"namespace": "alice", "specification": "name: ok\ndependencies: ['python >>> 3']\n"}
    r = await fetch(jp_fetch, "api/v1/specification/", method="POST", body=json.dumps(spec))
    direct = httpx.post(service.api("specification/"), json=spec, headers=bearer(alice), timeout=30)
    assert r.code == direct.status_code == 400
    assert body(r) == direct.json() and body(r)["status"] == "error" and body(r)["message"]
    r = await fetch(jp_fetch, "api/v1/environment/alice/nope/")
    assert r.code == 404 and body(r)["message"] == httpx.get(
        service.api("environment/alice/nope/"), headers=bearer(alice), timeout=30).json()["message"]


@pytest.mark.parametrize("service_env", ["hanging pip index"], indirect=True)
async def test_log_stream_arrives_while_the_build_runs(jp_fetch, service, service_env, alice):
    """A build hangs in its pip step (an index that never answers): its first log events must
    reach the browser while it is still BUILDING, i.e. nothing between service and browser buffers."""
    service_env.start_worker()
    build_id = httpx.post(service.api("specification/"), headers=bearer(alice), timeout=30,
                          json={"namespace": "alice", "specification": SLOW}).json()["data"]["build_id"]
    chunks: list[tuple[float, bytes]] = []
    stream = asyncio.ensure_future(fetch(jp_fetch, f"api/v1/build/{build_id}/logs/stream/",
                                         request_timeout=BUILD_DEADLINE,
                                         streaming_callback=lambda c: chunks.append((time.monotonic(), c))))
    deadline = time.monotonic() + BUILD_DEADLINE
    while b"data: " not in b"".join(c for _, c in chunks):
        assert time.monotonic() < deadline and not stream.done(), (chunks, service_env.worker_logs()[-3000:])
        await asyncio.sleep(0.1)
    first_event_at = time.monotonic()
    assert status_of(service.store, build_id)[0] == BuildStatus.BUILDING

    # the stream flows until the build ends: cancel it; the stream says so and closes
    canceled = httpx.put(service.api(f"build/{build_id}/cancel/"), headers=bearer(alice), timeout=30)
    assert canceled.status_code == 200, canceled.text
    response = await asyncio.wait_for(stream, BUILD_DEADLINE)
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    text = b"".join(c for _, c in chunks).decode()
    assert text.rstrip().endswith("event: end\ndata: build finished"), text[-500:]
    assert len(chunks) > 1 and chunks[0][0] <= first_event_at < chunks[-1][0]

    # a reconnecting EventSource sends Last-Event-ID: it reaches the service, nothing is replayed
    last_id = re.findall(r"^id: (\S+)$", text, re.M)[-1]
    again = await fetch(jp_fetch, f"api/v1/build/{build_id}/logs/stream/", headers={"Last-Event-ID": last_id})
    assert again.body.decode() == "event: end\ndata: build finished\n\n"


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("extension_traits", ["bad token"], indirect=True)
async def test_bad_token_gets_the_services_401(jp_fetch, service):
    spec = {"namespace": "alice", "specification": QUICK}
    r = await fetch(jp_fetch, "api/v1/specification/", method="POST", body=json.dumps(spec))
    direct = httpx.post(service.api("specification/"), json=spec, headers=bearer("not-a-valid-token"), timeout=30)
    assert r.code == direct.status_code == 401
    assert body(r) == direct.json() and body(r)["message"]
    config = body(await fetch(jp_fetch, "config"))["data"]
    # A token that is presented and not valid is refused (401 saying why), never anonymous.
    assert config["reachable"] and config["user"] is None
    assert config["message"] == f"conda-store service answered 401: {direct.json()['message']}"


@pytest.mark.parametrize("extension_traits", ["down"], indirect=True)
async def test_service_down_is_a_503_with_the_reason(jp_fetch, jp_serverapp):
    url = jp_serverapp.config.CondaStoreExtension.url
    r = await fetch(jp_fetch, "api/v1/environment/")
    assert r.code == 503
    assert body(r) == {"status": "error", "data": None,
                       "message": f"conda-store service at {url} is not reachable: connection refused"}
    config = body(await fetch(jp_fetch, "config"))["data"]
    assert config["configured"] and not config["reachable"] and config["user"] is None
    assert config["message"] == body(r)["message"]


@pytest.mark.parametrize("extension_traits", ["unconfigured"], indirect=True)
async def test_unconfigured_says_what_to_set(jp_fetch):
    r = await fetch(jp_fetch, "api/v1/environment/")
    assert r.code == 503
    message = body(r)["message"]
    assert message.startswith("no conda-store service is configured")
    for setting in ("CONDA_STORE_URL", "CONDA_STORE_TOKEN", "c.CondaStoreExtension.url", "c.JupyterHub.public_url"):
        assert setting in message
    config = body(await fetch(jp_fetch, "config"))["data"]
    assert not config["configured"] and config["message"] == message and config["public_url"] is None


@pytest.mark.parametrize("extension_traits", ["environment"], indirect=True)
async def test_configured_by_the_clis_environment_variables(jp_fetch, jp_serverapp, alice):
    r = await fetch(jp_fetch, "api/v1/permission/")
    assert body(r)["data"]["username"] == "alice"
    config = body(await fetch(jp_fetch, "config"))["data"]
    assert config["url_source"] == "CONDA_STORE_URL" and config["auth"] == "token"


async def test_config_endpoint(jp_fetch, service, alice, jp_base_url):
    r = await fetch(jp_fetch, "config")
    assert r.code == 200
    config = body(r)["data"]
    host = service.url.split("/")[2]
    assert config == {
        "configured": True, "reachable": True, "message": None,
        "url_source": "c.CondaStoreExtension.url", "auth": "token",
        "api_url": f"{jp_base_url}conda-store/api/v1/",
        "public_url": service.url.rstrip("/"), "registry": host,
        "user": config["user"],
    }
    assert config["user"]["username"] == "alice"
    assert alice not in r.body.decode()  # the token stays in the server


@pytest.mark.parametrize("service", ["registry"], indirect=True)
async def test_config_names_the_registry_the_service_announces(jp_fetch, service):
    """Under JupyterHub the service's own URL is the hub's proxy, which serves no /v2/: the
    service's configured registry host wins over the one derived from its URL."""
    config = body(await fetch(jp_fetch, "config"))["data"]
    assert config["reachable"] and config["registry"] == "registry.example.org:5000", config
    assert config["public_url"] == service.url.rstrip("/")


@pytest.mark.parametrize("extension_traits", ["anonymous"], indirect=True)
async def test_browser_credentials_never_reach_the_service(jp_fetch, jp_serverapp, service, alice):
    """The browser's Authorization is for jupyter-server only. Here it is even a valid conda-store
    token (jupyter-server accepts it too): the service must still see an anonymous caller."""
    jp_serverapp.identity_provider.token = alice
    headers = {"Authorization": f"token {alice}", "Cookie": f"conda-store-auth={alice}"}
    r = await fetch(jp_fetch, "api/v1/permission/", headers=headers)
    assert r.code == 200 and body(r)["data"]["authenticated"] is False


async def test_every_route_needs_jupyter_authentication(jp_fetch):
    for path in ("config", "api/v1/permission/", "api/v1/environment/"):
        r = await fetch(jp_fetch, path, headers={"Authorization": ""})
        assert r.code == 403, path
    r = await fetch(jp_fetch, "api/v1/specification/", method="POST", body="{}", headers={"Authorization": ""})
    assert r.code == 403


async def test_only_the_api_is_reachable(jp_fetch, jp_base_url):
    r = await fetch(jp_fetch, "api/v1/../../../hub/api/user")
    assert r.code == 400 and "'..'" in body(r)["message"]
    r = await fetch(jp_fetch, "v2/alice/env/manifests/latest", follow_redirects=False)
    assert r.code == 404


# --------------------------------------------------------------------------- installation


def test_the_wheel_enables_the_extension():
    """pip installs jupyter-config/… into <prefix>/etc/jupyter/…, where jupyter-server reads it."""
    shipped = ROOT / "jupyter-config" / "jupyter_server_config.d" / "conda_store_jupyter.json"
    assert json.loads(shipped.read_text()) == {"ServerApp": {"jpserver_extensions": {EXTENSION: True}}}
    shared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "shared-data"]
    assert shared["jupyter-config/jupyter_server_config.d"] == "etc/jupyter/jupyter_server_config.d"
    # this venv has the project installed (editable): jupyter-server finds, enables and loads it
    listed = subprocess.run([sys.executable, "-m", "jupyter_server", "extension", "list"],
                            capture_output=True, text=True, timeout=120)
    installed = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "conda_store_jupyter.json"
    if not installed.exists():
        pytest.fail(f"{installed} is missing: reinstall the project (pip install -e .)")
    out = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)  # colours
    assert re.search(rf"^\s*{re.escape(EXTENSION)} enabled$", out, re.M), out
    assert re.search(rf"^\s*{re.escape(EXTENSION)}\s+OK$", out, re.M), out


async def test_cookie_writes_need_jupyters_xsrf(jp_serverapp, http_server, jp_http_port, jp_base_url, service):
    """A browser session (cookie) may write only with jupyter-server's XSRF token, as any Lab call."""
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as browser:
        await browser.get("login")
        xsrf = browser.cookies["_xsrf"]
        login = await browser.post("login", data={"password": jp_serverapp.identity_provider.token, "_xsrf": xsrf})
        assert login.status_code == 302, login.text
        spec = {"namespace": "alice", "specification": QUICK}
        forged = await browser.post("conda-store/api/v1/specification/", json=spec)
        assert forged.status_code == 403 and "_xsrf" in forged.json()["message"]
        assert (await browser.get("conda-store/api/v1/environment/")).status_code == 200  # reads need none
        sent = await browser.post("conda-store/api/v1/specification/", json=spec, headers={"X-XSRFToken": xsrf})
        assert sent.status_code == 200, sent.text


# --------------------------------------------------------------------------- which service, which credential


def test_resolve_target_follows_the_clis_rules():
    from conda_store_jupyter.jupyter.config import registry_host, resolve_target

    hub = {"JUPYTERHUB_API_URL": "http://10.0.0.1:8081/hub/api", "JUPYTERHUB_API_TOKEN": "hub-secret",
           "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/"}
    found = resolve_target(environ=hub)
    assert (found.url, found.url_source, found.auth) == ("https://hub.example.org/services/conda-store",
                                                         "JupyterHub", "jupyterhub")
    assert found.headers == {"Authorization": "token hub-secret"}
    # the hub token is the user's identity: never sent to a service elsewhere ...
    elsewhere = resolve_target(environ={**hub, "CONDA_STORE_URL": "https://other.example.com/cs/"})
    assert (elsewhere.url, elsewhere.auth, dict(elsewhere.headers)) == ("https://other.example.com/cs", "none", {})
    # ... but a token of the service's own is, and the Jupyter config wins over the environment
    own = resolve_target("https://other.example.com/cs", "cst_x", environ={**hub, "CONDA_STORE_TOKEN": "cst_env"})
    assert (own.url_source, own.auth, dict(own.headers)) == ("c.CondaStoreExtension.url", "token",
                                                              {"Authorization": "Bearer cst_x"})
    # a password is not the extension's to hold; a wrong setting is reported, not guessed around
    assert resolve_target(environ={"CONDA_STORE_URL": "http://cs:8080", "CONDA_STORE_USERNAME": "a",
                                   "CONDA_STORE_PASSWORD": "p"}).auth == "none"
    basic = resolve_target(environ={"CONDA_STORE_URL": "http://cs:8080", "CONDA_STORE_AUTH": "basic"})
    assert not basic.configured and "CONDA_STORE_AUTH=basic is not supported" in basic.problem
    bad = resolve_target(environ={"CONDA_STORE_URL": "cs:8080"})
    assert not bad.configured and bad.problem.startswith("conda-store is misconfigured: CONDA_STORE_URL 'cs:8080'")
    assert not resolve_target(environ={}).configured
    assert resolve_target("localhost", environ={}).problem == (
        "conda-store is misconfigured: c.CondaStoreExtension.url 'localhost' is not an http(s) URL "
        "(example: http://localhost:8080)")
    assert registry_host("https://hub.example.org/services/conda-store") == "hub.example.org"


def test_every_trait_has_help():
    from conda_store_jupyter.jupyter.app import CondaStoreExtension

    own = CondaStoreExtension.class_own_traits(config=True)
    assert set(own) == {"url", "token", "public_url", "request_timeout", "connect_timeout"}
    assert all(len(trait.help) > 40 for trait in own.values())
