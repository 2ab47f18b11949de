"""JupyterHub tokens against a real hub: JupyterHub 6.1 + configurable-http-proxy (npm) + our
server as a hub-*managed* service, everything on 127.0.0.1 free ports.

What a user inside a hub does: the ``conda-store`` CLI with only the hub's variables, its token
sent as ``Authorization: token <hub token>`` through the proxy to ``/services/conda-store/``,
and the server checking that token with the hub (``conda_store_jupyter.auth.hub``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conda_store_jupyter.exceptions import ServiceUnavailableError
from conda_store_jupyter.testing.channel import cache_root
from conda_store_jupyter.testing.config import local_channel_traits, write_config

from .processes import cli_env, free_port, stop_process, wait_for

pytest.importorskip("jupyterhub", reason="JupyterHub is not installed")

BIN = Path(sys.executable).parent
CHP_VERSION = "5.3.0"
SERVICE = "conda-store"
ACCESS = f"access:services!service={SERVICE}"
HUB_ADMIN_TOKEN = "test-hub-admin-service-token-0123456789"  # a hub *service* token, not ours
SPEC = "name: hubenv\ndependencies:\n  - python 3.11.*\n"


@pytest.fixture(scope="session")
def chp() -> Path:
    """configurable-http-proxy from npm, installed once into ``.cache/chp`` (kept between runs)."""
    root = cache_root() / "chp"
    exe = root / "node_modules" / ".bin" / "configurable-http-proxy"
    if not exe.exists():
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.skip("configurable-http-proxy needs node and npm, which are not installed")
        root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root),
                               f"configurable-http-proxy@{CHP_VERSION}"], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not exe.exists():
            pytest.fail(f"npm install configurable-http-proxy failed:\n{proc.stdout}\n{proc.stderr}")
    return exe


@dataclass
class Hub:
    public_url: str  # the proxy: http://127.0.0.1:<port>
    api_url: str  # the hub process itself: http://127.0.0.1:<hub port>/hub/api
    tmp: Path
    log: Path

    @property
    def service_url(self) -> str:
        return f"{self.public_url}/services/{SERVICE}"

    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.api_url}{path}", timeout=30,
                             headers={"Authorization": f"token {HUB_ADMIN_TOKEN}"}, **kwargs)

    def token_for(self, user: str, scopes: list[str], note: str = "test") -> str:
        """A hub API token of ``user`` (what ``$JUPYTERHUB_API_TOKEN`` is in their server)."""
        resp = self.admin("POST", f"/users/{user}/tokens", json={"note": note, "scopes": scopes})
        assert resp.status_code == 201, resp.text
        return resp.json()["token"]

    def api(self, method: str, path: str, token: str, **kwargs) -> httpx.Response:
        """Our REST API through the proxy, as the hub routes it."""
        return httpx.request(method, f"{self.service_url}/api/v1/{path}", timeout=30,
                             headers={"Authorization": f"token {token}"}, **kwargs)

    def cli(self, *args: str, token: str) -> subprocess.CompletedProcess:
        """The real CLI with *only* the hub's variables (as in a notebook terminal)."""
        env = cli_env(self.tmp / "xdg", JUPYTERHUB_API_TOKEN=token, JUPYTERHUB_API_URL=self.api_url,
                      JUPYTERHUB_PUBLIC_HUB_URL=f"{self.public_url}/hub/")
        return subprocess.run([str(BIN / "conda-store"), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def hub(request, tmp_path_factory, chp, local_channel, package_cache_dir):
    tmp = tmp_path_factory.mktemp("hub")
    workers = getattr(request.module, "HUB_SERVICE_WORKERS", 0)  # the browser tests (ui-tests/) build
    proxy_port, hub_port, proxy_api_port, service_port = (free_port() for _ in range(4))
    store_config = tmp / "conda_store_config.py"
    write_config(
        store_config,
        {"store_directory": str(tmp / "store"), **local_channel_traits(local_channel, package_cache_dir),
         "conda_solve_platforms": ["linux-64"]},
        AuthenticationBackend={"group_role_bindings": {"ml-team": {"ml/*": ["developer"]}}},
    )
    # The hub starts and stops our server (a managed service). Port and url prefix come from the
    # hub's JUPYTERHUB_SERVICE_URL/PREFIX. No workers: these tests check who may submit, not
    # builds; the private redis-server still takes the queue.
    service_command = [sys.executable, "-m", "conda_store_jupyter.server.app", "--standalone",
                       f"--config={store_config}", f"--workers={workers}"]
    hub_config = tmp / "jupyterhub_config.py"
    hub_config.write_text(f"""\
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
c.JupyterHub.db_url = "sqlite:///{tmp / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(tmp / 'jupyterhub_cookie_secret')!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.allowed_users = {{"alice", "bob"}}
c.Authenticator.admin_users = {{"boss"}}
c.JupyterHub.services = [
    {{"name": {SERVICE!r}, "url": "http://127.0.0.1:{service_port}", "command": {service_command!r},
      "cwd": {str(tmp)!r}, "oauth_no_confirm": True}},
    {{"name": "test-admin", "api_token": {HUB_ADMIN_TOKEN!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", {ACCESS!r}]}},
    {{"name": "test-admin", "services": ["test-admin"], "scopes": ["admin:users", "admin:groups", "tokens", "read:services"]}},
]
""")
    log = tmp / "jupyterhub.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(hub_config)], cwd=tmp,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    service_pid = None
    try:
        # The hub's own port first, then our server directly, then through the proxy (CHP answers
        # 404, and the hub logs each one, until the hub has added the routes).
        def answers(url: str, what: str) -> None:
            wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, 90, what,
                     proc=proc, log=log, ignore=httpx.HTTPError)

        answers(f"http://127.0.0.1:{hub_port}/hub/health", "the hub")
        answers(f"http://127.0.0.1:{service_port}/services/{SERVICE}/api/v1/", "the managed conda-store service")
        public = f"http://127.0.0.1:{proxy_port}"
        answers(f"{public}/hub/health", "the proxy routes")
        answers(f"{public}/services/{SERVICE}/api/v1/", "the conda-store service through the proxy")
        print(f"hub + managed conda-store service ready in {time.monotonic() - started:.1f}s")
        running = Hub(public_url=public, api_url=f"http://127.0.0.1:{hub_port}/hub/api", tmp=tmp, log=log)
        service_pid = running.admin("GET", f"/services/{SERVICE}").json()["pid"]
        assert service_pid and _alive(service_pid)
        yield running
    finally:
        stop_process(proc, group=True)  # the session we created for it
    # The hub stops its managed service (SIGINT, pitfall P2); check it really went away.
    if service_pid and _alive(service_pid):
        os.kill(service_pid, signal.SIGKILL)
        pytest.fail(f"managed conda-store service {service_pid} outlived the hub:\n{log.read_text()[-3000:]}")


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- tests


def test_cli_zero_setup_with_hub_token(hub):
    """A notebook terminal: only JUPYTERHUB_* set; the CLI finds the service and is alice."""
    token = hub.token_for("alice", [ACCESS])
    proc = hub.cli("info", token=token)
    assert proc.returncode == 0, proc.stderr + hub.log.read_text()[-2000:]
    assert f"{hub.service_url}" in proc.stdout and "JupyterHub" in proc.stdout
    assert "authenticated: yes" in proc.stdout
    assert "primary namespace: alice" in proc.stdout


def test_token_without_service_access_is_refused(hub):
    """A valid hub token made for something else is not a credential here: 401 saying why."""
    token = hub.token_for("alice", ["read:users:name!user=alice"])
    for resp in (hub.api("GET", "permission/", token),
                 hub.api("POST", "specification/", token, json={"namespace": "alice", "specification": SPEC})):
        assert resp.status_code == 401, resp.text
        assert resp.json()["status"] == "error"
        assert f"lacks the {ACCESS} scope" in resp.json()["message"]
    proc = hub.cli("info", token=token)
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and f"lacks the {ACCESS} scope" in proc.stderr


def test_bogus_and_revoked_tokens(hub):
    resp = hub.api("GET", "permission/", "not-a-hub-token-at-all")
    assert resp.status_code == 401 and "JupyterHub does not accept it" in resp.json()["message"], resp.text
    # revoked on the hub before its first use here (after a use it stays cached up to cache_ttl)
    token = hub.token_for("alice", [ACCESS], note="revoke-me")
    [model] = [t for t in hub.admin("GET", "/users/alice/tokens").json()["api_tokens"] if t["note"] == "revoke-me"]
    assert hub.admin("DELETE", f"/users/alice/tokens/{model['id']}").status_code == 204
    resp = hub.api("POST", "specification/", token, json={"namespace": "alice", "specification": SPEC})
    assert resp.status_code == 401 and "JupyterHub does not accept it" in resp.json()["message"], resp.text
    # a cst_-shaped token is ours: rejected locally, never sent to the hub
    resp = hub.api("GET", "permission/", "cst_AAAAAAAA" + "x" * 43)
    assert resp.status_code == 401 and "this server does not know it" in resp.json()["message"], resp.text


def test_user_writes_only_in_own_namespace(hub):
    token = hub.token_for("alice", [ACCESS])
    resp = hub.api("POST", "specification/", token, json={"namespace": "alice", "specification": SPEC})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["build_id"] >= 1
    denied = hub.api("POST", "specification/", token, json={"namespace": "bob", "specification": SPEC})
    assert denied.status_code == 403, denied.text
    # bob cannot see alice's environment either
    bob = hub.token_for("bob", [ACCESS])
    assert hub.api("GET", "environment/alice/hubenv/", bob).status_code in (403, 404)
    assert hub.api("GET", "environment/alice/hubenv/", token).status_code == 200


def test_hub_admin_is_admin(hub):
    hub.admin("POST", "/users/boss")  # 201 or 409: the admin user exists either way
    token = hub.token_for("boss", [ACCESS])
    perms = hub.api("GET", "permission/", token).json()["data"]
    assert perms["authenticated"] and perms["username"] == "boss"
    assert "admin" in perms["entity_roles"].get("*/*", [])
    resp = hub.api("POST", "specification/", token, json={"namespace": "bob", "specification": SPEC})
    assert resp.status_code == 200, resp.text
    # ...while an ordinary user is not
    alice = hub.api("GET", "permission/", hub.token_for("alice", [ACCESS])).json()["data"]
    assert "*/*" not in alice["entity_roles"]


def test_hub_groups_map_to_role_bindings(hub):
    """Hub group ml-team → c.AuthenticationBackend.group_role_bindings["ml-team"]."""
    assert hub.admin("POST", "/groups/ml-team").status_code in (201, 409)
    assert hub.admin("POST", "/groups/ml-team/users", json={"users": ["alice"]}).status_code == 200
    alice = hub.token_for("alice", [ACCESS])  # a new token: its answer is not cached yet
    perms = hub.api("GET", "permission/", alice).json()["data"]
    assert perms["entity_roles"].get("ml/*") == ["developer"]
    # developers write environments in a namespace; creating the namespace takes an admin
    assert hub.api("POST", "namespace/ml/", alice).status_code == 403
    hub.admin("POST", "/users/boss")
    assert hub.api("POST", "namespace/ml/", hub.token_for("boss", [ACCESS])).status_code == 200
    resp = hub.api("POST", "specification/", alice, json={"namespace": "ml", "specification": SPEC})
    assert resp.status_code == 200, resp.text
    bob = hub.token_for("bob", [ACCESS])
    assert hub.api("POST", "specification/", bob, json={"namespace": "ml", "specification": SPEC}).status_code == 403


def test_service_tokens_are_not_users(hub):
    """Another hub service's token (even an admin one) is not a conda-store user."""
    resp = hub.api("GET", "permission/", HUB_ADMIN_TOKEN)
    assert resp.status_code == 401 and "not of a user" in resp.json()["message"], resp.text


# --------------------------------------------------------------------------- without a hub


def test_running_as_hub_service():
    from conda_store_jupyter.auth.hub import running_as_hub_service

    service = {"JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api", "JUPYTERHUB_API_TOKEN": "x"}
    assert running_as_hub_service(service)
    assert not running_as_hub_service({**service, "JUPYTERHUB_USER": "alice"})  # a notebook terminal
    assert not running_as_hub_service({"JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api"})


def test_hub_unreachable_means_anonymous_and_is_not_cached():
    """A hub that is down costs one refused connection per request, never an error."""
    from conda_store_jupyter.auth.hub import HubAuthentication

    auth = HubAuthentication(enabled=True, api_url=f"http://127.0.0.1:{free_port()}/hub/api/", timeout=2)
    assert auth.api_url.endswith("/hub/api")
    started = time.monotonic()
    assert auth.user_model("some-hub-token") is None
    assert time.monotonic() - started < 2
    assert auth._cache == {}
    assert HubAuthentication(enabled=False, api_url="http://127.0.0.1:1/hub/api").user_model("t") is None
    auth.close()


def test_access_scope_and_admin_bindings(tmp_path):
    from conda_store_jupyter.auth.hub import HubAuthentication, HubUser, has_access_scope
    from conda_store_jupyter.exceptions import ValidationError

    assert has_access_scope({"access:services"}, SERVICE)
    assert has_access_scope({f"access:services!service={SERVICE}", "self"}, SERVICE)
    assert not has_access_scope({"access:services!service=other", "read:users:name!user=alice"}, SERVICE)
    boss = HubUser(name="boss", admin=True)
    store, backend = _backend(tmp_path, api_url="http://127.0.0.1:1/hub/api")
    assert backend.hub is not None
    assert backend._hub_identity(boss).admin
    backend.hub.admin_role_bindings = {"*/*": ["viewer"]}
    viewer = backend._hub_identity(boss)
    assert not viewer.admin and viewer.role_bindings == {"boss/*": {"admin"}, "default/*": {"viewer"}, "*/*": {"viewer"}}
    backend.hub.admin_role_bindings = {}
    assert backend._hub_identity(boss).role_bindings == backend._hub_identity(HubUser(name="boss")).role_bindings
    with pytest.raises(ValidationError):
        HubAuthentication(admin_role_bindings={"*/*": ["owner"]})
    store.dispose()


# --------------------------------------------------------------------------- stand-in hubs
# Real sockets on 127.0.0.1:0: the hub answering (a minimal ``GET /hub/api/user``) and the hub
# hung (accepts TCP, never answers), which is what stalls a server that waits synchronously.


class _FakeHub:
    """``GET /hub/api/user``: ``models[token]`` (200) or 403, counting requests."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.models: dict[str, dict] = {}
        self.requests = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hub.requests += 1
                token = self.headers.get("Authorization", "").partition(" ")[2]
                model = hub.models.get(token) if self.path == "/hub/api/user" else None
                body = json.dumps(model or {"status": 403, "message": "Forbidden"}).encode()
                self.send_response(200 if model else 403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hub/api"

    def __enter__(self) -> "_FakeHub":
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _SilentHub:
    """A hub that accepts connections and never answers (hung process, full accept queue...)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.connections: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(conn)  # held open, never read from or written to

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hub/api"

    def __enter__(self) -> "_SilentHub":
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(5)
        for conn in [*self.connections, self.sock]:
            conn.close()


def _backend(tmp_path, **hub_traits):
    """An AuthenticationBackend on a fresh SQLite store with ``c.HubAuthentication`` set."""
    from traitlets.config import Config

    from conda_store_jupyter.app import CondaStore
    from conda_store_jupyter.auth import AuthenticationBackend

    c = Config()
    c.HubAuthentication.enabled = True
    for name, value in hub_traits.items():
        setattr(c.HubAuthentication, name, value)
    c.AuthenticationBackend.group_role_bindings = {"ml-team": {"ml/*": ["developer"]}}
    c.AuthenticationBackend.default_token_lifetime = 3600
    store = CondaStore(store_directory=str(tmp_path / "store"), config=c)
    return store, AuthenticationBackend(store)


def _hub_user(name: str, **extra) -> dict:
    return {"kind": "user", "name": name, "admin": False, "groups": [], "scopes": [ACCESS], **extra}


def test_unresponsive_hub_does_not_block_the_event_loop(tmp_path):
    """Junk tokens waiting on a hung hub hold only their own requests; then the breaker opens."""
    with _SilentHub() as silent:
        store, backend = _backend(tmp_path, api_url=silent.api_url, timeout=1.0, failure_backoff=30)
        ours = backend.issue_token_for(backend.identity_for_user("alice"), primary_namespace=None,
                                       role_bindings=None, expiration=None).token

        async def scenario():
            junk = [asyncio.create_task(backend.authenticate_request_async(
                cookie=None, authorization=f"token junk-{i}")) for i in range(3)]
            await asyncio.sleep(0.1)  # all three are now waiting for the hub
            assert len(silent.connections) == 3 and not any(t.done() for t in junk)
            started = time.monotonic()
            await asyncio.sleep(0.01)  # an unrelated coroutine gets the loop at once...
            alice = await backend.authenticate_request_async(cookie=None, authorization=f"Bearer {ours}")
            unrelated = time.monotonic() - started  # ...and so does a request with our own token
            return unrelated, alice, await asyncio.gather(*junk, return_exceptions=True)

        unrelated, alice, identities = asyncio.run(scenario())
        assert unrelated < 0.3, f"the event loop was blocked for {unrelated:.2f}s"
        assert alice.username == "alice"
        # A hub that cannot answer is the service's problem (503), not the token's (401).
        assert all(isinstance(e, ServiceUnavailableError) and "could not check the token" in str(e)
                   for e in identities), identities
        # The breaker is open: the next unknown token gets 503 without a connection to the hub.
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="cannot check tokens right now"):
            asyncio.run(backend.authenticate_request_async(cookie=None, authorization="token junk-4"))
        with pytest.raises(ServiceUnavailableError, match="cannot check tokens right now"):
            backend.authenticate_request(cookie=None, authorization="token junk-5")
        assert time.monotonic() - started < 0.2
        assert len(silent.connections) == 3
        store.dispose()


def test_failure_backoff_expires_and_hub_is_asked_again():
    from conda_store_jupyter.auth.hub import HubAuthentication

    with _SilentHub() as silent:
        auth = HubAuthentication(enabled=True, api_url=silent.api_url, timeout=0.3, failure_backoff=0.5)
        started = time.monotonic()
        assert auth.user_model("a") is None
        assert 0.25 < time.monotonic() - started < 2
        started = time.monotonic()
        assert auth.user_model("b") is None and asyncio.run(auth.user_model_async("c")) is None
        assert time.monotonic() - started < 0.1  # open: not asked
        time.sleep(0.6)
        started = time.monotonic()
        assert asyncio.run(auth.user_model_async("d")) is None
        assert time.monotonic() - started >= 0.25  # closed again: asked (and timed out)
        assert auth._cache == {} and auth._rejected == {}  # hub errors are never cached per token
        auth.close()


def test_junk_tokens_never_evict_accepted_ones():
    from conda_store_jupyter.auth.hub import HubAuthentication

    with _FakeHub() as fake:
        fake.models["good"] = _hub_user("alice")
        auth = HubAuthentication(enabled=True, api_url=fake.api_url, cache_size=2, negative_cache_size=3)
        assert auth.user_model("good")["name"] == "alice"
        for i in range(20):
            assert asyncio.run(auth.user_model_async(f"junk-{i}")) is None
        assert fake.requests == 21 and len(auth._rejected) == 3  # bounded
        assert auth.user_model("good")["name"] == "alice"
        assert auth.user_model("junk-19") is None
        assert fake.requests == 21  # both answered from their caches
        auth.close()


def test_hub_identity_expires_and_its_tokens_keep_no_hub_grants(tmp_path):
    """A hub admin in a hub group: the grants hold while the hub says so, not in issued tokens."""
    from conda_store_jupyter.auth import Permission
    from conda_store_jupyter.auth.tokens import utcnow
    from conda_store_jupyter.exceptions import ValidationError

    with _FakeHub() as fake:
        fake.models["hub-token"] = _hub_user("boss", admin=True, groups=["ml-team"])
        store, backend = _backend(tmp_path, api_url=fake.api_url)
        identity = asyncio.run(backend.authenticate_request_async(cookie=None, authorization="token hub-token"))
        assert identity.username == "boss" and identity.admin
        assert identity.role_bindings["ml/*"] == {"developer"}
        assert identity.expiration is not None
        assert abs((identity.expiration - utcnow()).total_seconds() - 3600) < 60

        copy = backend.issue_token_for(identity, primary_namespace=None, role_bindings=None, expiration=None)
        assert copy.expires_at <= identity.expiration
        assert "*/*" not in copy.role_bindings and "ml/*" not in copy.role_bindings
        used = backend.authenticate_request(cookie=None, authorization=f"Bearer {copy.token}")
        assert used.username == "boss" and not used.admin
        with store.session() as db:
            assert backend.is_allowed(db, identity, Permission.ENVIRONMENT_CREATE, "ml/env")
            assert not backend.is_allowed(db, used, Permission.ENVIRONMENT_CREATE, "ml/env")
            assert not backend.is_allowed(db, used, Permission.ENVIRONMENT_READ, "other/env")
            assert backend.is_allowed(db, used, Permission.ENVIRONMENT_CREATE, "boss/env")

        # An explicitly scoped token may carry a hub grant, but only until the hub identity expires.
        scoped = backend.issue_token_for(identity, primary_namespace=None, role_bindings={"ml/*": ["viewer"]},
                                         expiration=None)
        assert scoped.expires_at <= identity.expiration
        with pytest.raises(ValidationError, match="outlive"):
            backend.issue_token_for(identity, primary_namespace=None, role_bindings=None,
                                    expiration=utcnow() + dt.timedelta(days=30))
        store.dispose()


def test_http_requests_stay_fast_while_hub_hangs(tmp_path, redis_url):
    """End to end: 3 junk-token requests in flight, ``GET /api/v1/`` still answers at once.

    Needs ``BaseHandler.prepare`` to await ``authenticate_request_async`` (server/base.py).
    """
    from traitlets.config import Config

    from conda_store_jupyter.server.base import BaseHandler
    from conda_store_jupyter.server.testing import running_server

    if not inspect.iscoroutinefunction(BaseHandler.prepare):
        pytest.skip("server/base.py: BaseHandler.prepare does not await authenticate_request_async yet")
    with _SilentHub() as silent:
        c = Config()
        c.CondaStore.store_directory = str(tmp_path / "store")
        c.CondaStore.redis_url = redis_url
        c.HubAuthentication.enabled = True
        c.HubAuthentication.api_url = silent.api_url
        c.HubAuthentication.timeout = 3.0
        with running_server(c) as server:
            with ThreadPoolExecutor(3) as pool:
                junk = [pool.submit(httpx.get, server.api("permission/"), timeout=30,
                                    headers={"Authorization": f"token junk-{i}"}) for i in range(3)]
                deadline = time.monotonic() + 5
                while len(silent.connections) < 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
                started = time.monotonic()
                assert httpx.get(server.api(""), timeout=30).status_code == 200
                assert time.monotonic() - started < 0.5
                for future in junk:
                    assert future.result().status_code == 503, future.result().text


def test_browser_login_through_the_hub_whichever_server_process_answers(hub):
    """The hub's OAuth login ends in our session cookie, again and again: the managed service runs
    the default number of server processes, and the callback may reach another process than the
    login did (the pending login travels in a signed cookie, not in one process's memory).

    The proxy would keep one connection to the service (so one process) for this one client:
    our pages are fetched from the service directly, a new connection each (cookies ignore ports).
    """
    direct = hub.admin("GET", f"/services/{SERVICE}").json()["url"].rstrip("/")
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=30, limits=no_keepalive) as browser:
        def visit(url: str) -> httpx.Response:
            for _ in range(10):
                if url.startswith("/"):
                    url = (direct if url.startswith(f"/services/{SERVICE}/") else hub.public_url) + url
                resp = browser.get(url)
                if resp.status_code not in (301, 302, 303, 307):
                    return resp
                url = resp.headers["location"]
            raise AssertionError(f"too many redirects at {url}")

        browser.get(f"{hub.public_url}/hub/login")
        resp = browser.post(f"{hub.public_url}/hub/login", data={
            "username": "alice", "password": "x", "_xsrf": browser.cookies.get("_xsrf", "")})
        assert resp.status_code == 302, resp.text[-500:]  # (not followed: alice has no server here)
        for attempt in range(6):  # 2 processes: a state kept in one process fails ~half of these
            browser.cookies.delete("conda-store-auth")
            resp = visit(f"/services/{SERVICE}/oauth_login/?next=namespaces/")
            assert resp.status_code == 200, (attempt, resp.status_code, resp.text[-500:])
            assert resp.url.path == f"/services/{SERVICE}/namespaces/", resp.url
            me = browser.get(f"{direct}/services/{SERVICE}/api/v1/permission/").json()["data"]
            assert me["authenticated"] and me["primary_namespace"] == "alice", me
        # A callback without this browser's pending-login cookie is refused, clearly.
        resp = browser.get(f"{direct}/services/{SERVICE}/oauth_callback/", params={"code": "x", "state": "forged"})
        assert resp.status_code == 401 and "start again" in resp.json()["message"]
