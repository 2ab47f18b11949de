"""The upstream ``conda-store`` client (PyPI ``conda-store==2025.2.2``) against our server.

It lives in its own virtualenv under ``.cache/upstream-client`` (created once, reused) because its
command is also called ``conda-store``, like ours. It talks to a real server with real workers,
with token auth and with basic auth (DummyAuthenticator + ``POST /login/``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter.testing.channel import cache_root
from conda_store_jupyter.server.testing import bearer, running_server


CLIENT_VERSION = "2025.2.2"
ADMIN = "admin-token-for-upstream-client-01"
SPEC = "name: flask-env\ndependencies:\n  - python\n  - six\n"


@pytest.fixture(scope="session")
def upstream_client() -> Path:
    """Path of the upstream ``conda-store`` executable (installed once into .cache)."""
    venv = cache_root() / "upstream-client"
    exe = venv / "bin" / "conda-store"
    marker = venv / f".installed-{CLIENT_VERSION}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"conda-store=={CLIENT_VERSION}"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot install conda-store=={CLIENT_VERSION}: {result.stderr[-500:]}")
        marker.touch()
    return exe


@pytest.fixture
def service(service_factory):
    env = service_factory()
    env.start_worker()
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "filesystem", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    c.AuthenticationBackend.authenticator_class = "conda_store_jupyter.auth.backend.DummyAuthenticator"
    c.DummyAuthenticator.password = "password"
    with running_server(c, ["--config", str(env.config)]) as server:
        r = httpx.post(server.api("specification/"), headers=bearer(ADMIN), json={"specification": SPEC})
        assert r.status_code == 200, r.text
        yield server, env, r.json()["data"]["build_id"]


def run(exe: Path, env: dict[str, str], *args: str, cwd: Path) -> str:
    proc = subprocess.run([str(exe), *args], env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


def test_upstream_client_token_auth(upstream_client, service, tmp_path):
    server, env, build_id = service
    cenv = {"CONDA_STORE_URL": server.url.rstrip("/"), "CONDA_STORE_AUTH": "token", "CONDA_STORE_TOKEN": ADMIN}
    # ns/env resolves to the *current* build, which exists once the first build completed
    run(upstream_client, cenv, "wait", str(build_id), "--interval", "1", cwd=tmp_path)
    run(upstream_client, cenv, "wait", "filesystem/flask-env", "--interval", "1", cwd=tmp_path)
    out = run(upstream_client, cenv, "info", cwd=tmp_path)
    assert "filesystem" in out
    assert "filesystem" in run(upstream_client, cenv, "list", "namespace", cwd=tmp_path)
    assert "flask-env" in run(upstream_client, cenv, "list", "environment", cwd=tmp_path)
    # filtered listings: the client appends "/" to the query string (upstream rejects that with 422)
    assert "flask-env" in run(upstream_client, cenv, "list", "environment", "--status", "COMPLETED", cwd=tmp_path)
    assert "COMPLETED" in run(upstream_client, cenv, "list", "build", "--status", "COMPLETED", "--output", "json",
                              cwd=tmp_path)
    run(upstream_client, cenv, "wait", str(build_id), "--artifact", "lockfile", "--interval", "1", cwd=tmp_path)
    # The archive is made after COMPLETED: upstream's wait sees it once it is in build_artifacts.
    run(upstream_client, cenv, "wait", str(build_id), "--artifact", "archive", "--interval", "1", cwd=tmp_path)
    for artifact, name in [("lockfile", f"build-{build_id}.lock"), ("yaml", f"build-{build_id}.yaml"),
                           ("archive", f"build-{build_id}.tar.gz")]:
        out = run(upstream_client, cenv, "download", f"filesystem/flask-env:{build_id}", "--artifact", artifact,
                  cwd=tmp_path)
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, (artifact, out)
    out = run(upstream_client, cenv, "download", str(build_id), "--artifact", "logs", "--output-filename",
              "build.log", cwd=tmp_path)
    assert (tmp_path / "build.log").stat().st_size > 0


def test_upstream_client_basic_auth(upstream_client, service, tmp_path):
    server, env, build_id = service
    # aiohttp's cookie jar ignores cookies from bare IP hosts, so use the name
    url = server.url.replace("127.0.0.1", "localhost").rstrip("/")
    cenv = {"CONDA_STORE_URL": url, "CONDA_STORE_AUTH": "basic", "CONDA_STORE_USERNAME": "filesystem",
            "CONDA_STORE_PASSWORD": "password"}
    # a logged-in user is admin of their own namespace: "filesystem" here
    run(upstream_client, cenv, "wait", str(build_id), "--interval", "1", cwd=tmp_path)
    run(upstream_client, cenv, "wait", "filesystem/flask-env", "--interval", "1", cwd=tmp_path)
    assert "True" in run(upstream_client, cenv, "info", cwd=tmp_path)
    assert str(build_id) in run(upstream_client, cenv, "list", "build", cwd=tmp_path)
    run(upstream_client, cenv, "download", "filesystem/flask-env", "--artifact", "lockfile", cwd=tmp_path)
    assert (tmp_path / f"build-{build_id}.lock").stat().st_size > 0
    # a write with the login cookie (JSON body): the client sends no XSRF token and needs none
    assert run(upstream_client, cenv, "token", cwd=tmp_path).strip().startswith("cst_")  # a new token of ours
    bad = subprocess.run([str(upstream_client), "info"], env={**os.environ, **cenv, "CONDA_STORE_PASSWORD": "nope"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
