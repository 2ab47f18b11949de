"""Upstream parity (issue 12): the behaviours upstream conda-store's clients rely on, over HTTP.

- a ``default`` namespace exists from the first start (``CondaStore.default_namespace``);
- ``current_build_id`` is an integer from the first submission on, and whatever needs a built
  environment (lockfile of the environment, registry ``latest``, ``conda-store run ns/env``)
  still waits for a COMPLETED one;
- the lockfile endpoints answer JSON (conda-lock reads it), YAML when asked;
- ``GET /api/v1/permission/`` names exactly upstream's permissions per role;
- ``POST /api/v1/token/`` without credentials: a short-lived token that can do no more than an
  anonymous request (the upstream client's ``conda-store token``).

Real server, real redis-server; one real build (a tiny package from the local channel) for the
lockfile forms.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from traitlets import TraitError
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.app import CondaStoreServer
from conda_store_jupyter.server.testing import bearer, running_server, user_token

from .fixtures_service import QUICK, wait_for
from .test_upstream_client import upstream_client  # noqa: F401 - the fixture (upstream client from PyPI)

ADMIN = "admin-token-for-parity-tests-012345"
CLI = str(Path(sys.executable).parent / "conda-store")

# Upstream conda-store 2025.2.2's permissions per role (notes/conda-store-upstream.md §4.2).
UPSTREAM_VIEWER = {"environment::read", "namespace::read", "namespace-role-mapping::read"}
UPSTREAM_EDITOR = UPSTREAM_VIEWER | {"environment:create", "environment::update", "environment::solve",
                                     "build::cancel", "setting::read"}
UPSTREAM_ADMIN = UPSTREAM_EDITOR | {"environment::delete", "build::delete", "namespace::create",
                                    "namespace::update", "namespace::delete", "namespace-role-mapping::create",
                                    "namespace-role-mapping::update", "namespace-role-mapping::delete",
                                    "setting::update"}


def _config(tmp_path: Path, redis_url: str, local_channel, **auth) -> Config:
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.database_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    c.CondaStore.redis_url = redis_url
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    for key, value in auth.items():
        setattr(c.AuthenticationBackend, key, value)
    return c


@pytest.fixture
def server(tmp_path, redis_url, local_channel):
    """A fresh server with the default configuration (no workers: builds stay QUEUED)."""
    with running_server(_config(tmp_path, redis_url, local_channel)) as s:
        yield s


def get(server, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    return httpx.get(server.api(path), headers=bearer(token) if token else {}, timeout=30, **kwargs)


def post(server, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    return httpx.post(server.api(path), headers=bearer(token) if token else {}, timeout=30, **kwargs)


def cli(server, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONDA_STORE_URL": server.url.rstrip("/"), "CONDA_STORE_TOKEN": token}
    return subprocess.run([CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


# -- 1. the default namespace ---------------------------------------------------------------------
def test_default_namespace_exists_from_the_first_start(server, tmp_path, redis_url, local_channel):
    alice = user_token(server, "alice")
    r = get(server, "namespace/default/", alice)  # nothing was ever submitted to it
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "default"
    assert [n["name"] for n in get(server, "namespace/", alice).json()["data"]] == ["default"]
    # the default bindings decide who sees it: logged-in users view it, anonymous requests nothing
    assert get(server, "permission/", alice).json()["data"]["entity_roles"]["default/*"] == ["viewer"]
    assert get(server, "namespace/default/").status_code == 401
    # it exists once: a second start (same database) neither fails nor duplicates it
    server.app.prepare_database()
    assert get(server, "namespace/", ADMIN).json()["count"] == 1


def test_default_namespace_is_configurable(tmp_path, redis_url, local_channel):
    c = _config(tmp_path, redis_url, local_channel,
                unauthenticated_role_bindings={"{default_namespace}/*": ["viewer"]})
    c.CondaStore.default_namespace = "shared"
    with running_server(c) as server:
        r = get(server, "namespace/shared/")  # anonymous, as the configured bindings allow
        assert r.status_code == 200 and r.json()["data"]["name"] == "shared", r.text
        assert get(server, "permission/").json()["data"]["primary_namespace"] == "shared"
        assert get(server, "namespace/default/", ADMIN).status_code == 404
    bad = Config()
    bad.CondaStore.default_namespace = "no/slash"
    with pytest.raises(TraitError, match="CondaStore.default_namespace"):
        CondaStoreServer(config=bad).initialize([])


# -- 2. current_build_id from the first submission -------------------------------------------------
def test_current_build_is_the_first_build_from_submission(server, tmp_path):
    first = post(server, "specification/", ADMIN, json={"namespace": "team", "specification": QUICK})
    first_id = first.json()["data"]["build_id"]
    env = get(server, "environment/team/hi/", ADMIN).json()["data"]
    assert env["current_build_id"] == first_id and isinstance(env["current_build_id"], int)
    assert env["current_build"]["status"] == "QUEUED"
    listed = get(server, "environment/", ADMIN).json()["data"]
    assert [(e["name"], e["current_build_id"]) for e in listed] == [("hi", first_id)]
    # a second submission does not move it (only completion or set-current does)
    second_id = post(server, "specification/", ADMIN,
                     json={"namespace": "team", "specification": QUICK + "  - libgreet\n"}).json()["data"]["build_id"]
    assert get(server, "environment/team/hi/", ADMIN).json()["data"]["current_build_id"] == first_id
    r = httpx.put(server.api("environment/team/hi/"), headers=bearer(ADMIN), json={"build_id": second_id})
    assert r.status_code == 400 and "only a completed build can be current" in r.json()["message"]

    # nothing that needs a built environment takes a queued current build for one
    for path in ("environment/team/hi/lockfile/", "environment/team/hi/conda-lock.yml"):
        r = get(server, path, ADMIN)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["message"] == f"environment team/hi has no completed build yet (build {first_id} is queued)"
    for path in ("manifests/latest", "tags/list"):
        r = httpx.get(f"{server.url}v2/team/hi/{path}", auth=("x", ADMIN), timeout=30)
        if path == "tags/list":
            assert r.status_code == 200 and r.json()["tags"] == [], r.text
        else:
            assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", r.text
            assert "no completed build yet" in r.json()["errors"][0]["message"]
    for args in (["run", "team/hi", "--", "true"], ["download", "team/hi", "--artifact", "lockfile"]):
        proc = cli(server, ADMIN, *args, cwd=tmp_path)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "environment team/hi has no completed build yet" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    # deleted and submitted again: the new environment points at its new first build
    assert httpx.delete(server.api("environment/team/hi/"), headers=bearer(ADMIN), timeout=30).status_code == 200
    third = post(server, "specification/", ADMIN, json={"namespace": "team", "specification": QUICK})
    third_id = third.json()["data"]["build_id"]
    assert get(server, "environment/team/hi/", ADMIN).json()["data"]["current_build_id"] == third_id


# -- 3. lockfiles as JSON (and YAML when asked), on a real build ----------------------------------
@pytest.fixture
def built(service_factory):
    """A server with a worker and one COMPLETED build of ``team/hi``."""
    env = service_factory()
    env.start_worker()
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    with running_server(c, ["--config", str(env.config)]) as server:
        build_id = post(server, "specification/", ADMIN, json={"specification": QUICK}).json()["data"]["build_id"]

        def done():
            data = get(server, f"build/{build_id}/", ADMIN).json()["data"]
            return data if data["status"] in ("COMPLETED", "FAILED", "CANCELED") else None

        data = wait_for(done, 120, f"build {build_id}", interval=0.3)
        assert data["status"] == "COMPLETED", (data["status_info"], env.worker_logs()[-3000:])
        yield server, build_id


def test_lockfile_endpoints_answer_json_that_conda_lock_reads(built, tmp_path):
    from conda_lock.lockfile import parse_conda_lock_file

    server, build_id = built
    paths = [f"build/{build_id}/lockfile/", f"build/{build_id}/conda-lock.yml", f"build/{build_id}/conda-lock.yaml",
             "environment/team/hi/lockfile/", "environment/team/hi/conda-lock.yml",
             "environment/team/hi/conda-lock.yaml"]
    bodies = set()
    for path in paths:
        r = get(server, path, ADMIN)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "application/json", path
        assert r.headers["content-disposition"].endswith('.conda-lock.yml"'), path
        bodies.add(r.content)
    assert len(bodies) == 1  # the same document everywhere
    doc = json.loads(bodies.pop())  # what upstream's clients do with it
    assert doc["version"] == 1 and {p["name"] for p in doc["package"]} >= {"hello"}

    # conda-lock reads the downloaded file (JSON is YAML) and finds exactly the build's packages
    saved = tmp_path / "conda-lock.yml"
    saved.write_bytes(get(server, f"build/{build_id}/lockfile/", ADMIN).content)
    lock = parse_conda_lock_file(saved)
    installed = {p["name"] for p in get(server, f"build/{build_id}/packages/", ADMIN).json()["data"]}
    assert {p.name for p in lock.package} == installed
    assert all(p.hash.sha256 for p in lock.package)

    # the human form, where a person asks: ?format=yaml (the pages' link) or Accept: text/yaml
    for kwargs in ({"params": {"format": "yaml"}}, {"headers": {"Accept": "text/yaml"}}):
        headers = {**bearer(ADMIN), **kwargs.pop("headers", {})}
        r = httpx.get(server.api(f"build/{build_id}/lockfile/"), headers=headers, timeout=30, **kwargs)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/yaml"), r.text[:200]
        assert not r.text.lstrip().startswith("{") and "package:" in r.text
        assert yaml.safe_load(r.text) == doc
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r = httpx.get(server.api(f"build/{build_id}/lockfile/"), headers={**bearer(ADMIN), "Accept": browser})
    assert r.headers["content-type"] == "application/json"
    r = get(server, f"build/{build_id}/lockfile/", ADMIN, params={"format": "xml"})
    assert r.status_code == 400 and r.json()["message"] == "format must be one of json, yaml, not 'xml'"

    # our CLI saves the YAML form; the environment resolves to its completed current build
    proc = cli(server, ADMIN, "download", "team/hi", "--artifact", "lockfile", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    saved = tmp_path / f"build-{build_id}.conda-lock.yml"
    assert "package:" in saved.read_text() and yaml.safe_load(saved.read_text()) == doc


# -- 5. permission names per role -----------------------------------------------------------------
def test_permission_names_are_upstreams_per_role(server):
    bindings = {"v/*": ["viewer"], "e/*": ["editor"], "d/*": ["developer"], "a/*": ["admin"]}
    token = post(server, "token/", ADMIN, json={"role_bindings": bindings}).json()["data"]["token"]
    data = get(server, "permission/", token).json()["data"]
    perms = {glob: set(p) for glob, p in data["entity_permissions"].items()}
    assert perms == {"v/*": UPSTREAM_VIEWER, "e/*": UPSTREAM_EDITOR, "d/*": UPSTREAM_EDITOR, "a/*": UPSTREAM_ADMIN}
    assert all(p == sorted(p) for p in data["entity_permissions"].values())  # sorted, as upstream
    # what the names stand for is what is enforced: a viewer may not solve, nor read settings
    viewer = post(server, "token/", ADMIN, json={"primary_namespace": "v", "role_bindings": {"v/*": ["viewer"]}})
    r = get(server, "specification/", viewer.json()["data"]["token"], params={"conda": "hello"})
    assert r.status_code == 403 and "environment::solve on 'v/*'" in r.json()["message"], r.text
    assert post(server, "namespace/v/", ADMIN).status_code == 200
    editor = post(server, "token/", ADMIN, json={"primary_namespace": "e", "role_bindings": {"e/*": ["editor"]}})
    r = post(server, "specification/", editor.json()["data"]["token"], json={"namespace": "v", "specification": QUICK})
    assert r.status_code == 403 and "environment:create on 'v/hi'" in r.json()["message"], r.text


# -- 6. tokens for anonymous callers ------------------------------------------------------------------
def test_anonymous_token_carries_only_the_anonymous_bindings(server):
    r = post(server, "token/")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    token = data["token"]
    assert token.startswith("cst_") and data["role_bindings"] == {} and data["primary_namespace"] == "default"
    expires = dt.datetime.fromisoformat(data["expiration"])
    assert dt.timedelta(minutes=59) < expires - orm.utcnow() <= dt.timedelta(hours=1)  # short-lived
    info = get(server, "permission/", token).json()["data"]
    assert info["authenticated"] is True and info["entity_roles"] == {} and info["entity_permissions"] == {}
    # nothing an anonymous request could not do: not the default namespace, not a build, not a
    # page session, not a stronger token, not the validator (which needs a login)
    assert get(server, "namespace/default/", token).status_code == 403
    assert get(server, "namespace/", token).json()["count"] == 0
    assert post(server, "specification/", token, json={"specification": QUICK}).status_code == 403
    r = post(server, "token/", token, json={"role_bindings": {"default/*": ["viewer"]}})
    assert r.status_code == 400 and "not a subset" in r.json()["message"]
    child = post(server, "token/", token).json()["data"]
    assert child["role_bindings"] == {} and dt.datetime.fromisoformat(child["expiration"]) <= expires
    r = post(server, "specification/validate/", child["token"], json={"specification": QUICK})
    assert r.status_code == 401 and "issued without credentials" in r.json()["message"]
    r = httpx.post(f"{server.url}login/token/", json={"token": token}, timeout=30)
    assert r.status_code == 401 and "conda-store-auth" not in r.headers.get("set-cookie", "")
    r = post(server, "token/", json={"expiration": (orm.utcnow() + dt.timedelta(days=2)).isoformat()})
    assert r.status_code == 400 and "later than" in r.json()["message"]
    # invalid credentials are still refused, not treated as anonymous
    r = post(server, "token/", "cst_notatokenofthisserver0000000000000000000")
    assert r.status_code == 401 and r.json()["status"] == "error"
    r = httpx.post(server.api("token/"), headers={"Authorization": "Basic !!!"}, timeout=30)
    assert r.status_code == 401


def test_anonymous_token_gets_configured_anonymous_bindings(tmp_path, redis_url, local_channel):
    c = _config(tmp_path, redis_url, local_channel, unauthenticated_role_bindings={"{default_namespace}/*": ["viewer"]},
                anonymous_token_lifetime=120, anonymous_token_limit=2)
    with running_server(c) as server:
        data = post(server, "token/").json()["data"]
        assert data["role_bindings"] == {"default/*": ["viewer"]}
        assert dt.datetime.fromisoformat(data["expiration"]) - orm.utcnow() <= dt.timedelta(seconds=120)
        assert get(server, "namespace/default/", data["token"]).status_code == 200
        assert get(server, "namespace/team/", data["token"]).status_code == 403
        # expired anonymous tokens do not pile up: the next anonymous issue deletes them after a day
        with server.store.session() as db:
            row = db.get(orm.Token, data["id"])
            row.expires_at = orm.utcnow() - dt.timedelta(days=2)
        r = get(server, "permission/", data["token"])
        assert r.status_code == 401 and "expired" in r.json()["message"]
        assert post(server, "token/").status_code == 200
        r = get(server, "permission/", data["token"])
        assert r.status_code == 401 and "does not know it" in r.json()["message"]  # its row is gone
        # and a flood is bounded: at most anonymous_token_limit valid at once
        assert post(server, "token/").status_code == 200
        r = post(server, "token/")
        assert r.status_code == 503 and "anonymous_token_limit" in r.json()["message"]
        assert post(server, "token/", ADMIN).status_code == 200  # a caller with credentials is not limited


def test_upstream_client_token_without_credentials(upstream_client, server, tmp_path):  # noqa: F811
    env = {**os.environ, "CONDA_STORE_URL": server.url.rstrip("/"), "CONDA_STORE_AUTH": "none"}
    proc = subprocess.run([str(upstream_client), "token"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    token = proc.stdout.strip()
    assert token.startswith("cst_")
    assert get(server, "permission/", token).json()["data"]["entity_roles"] == {}
    assert get(server, "namespace/default/", token).status_code == 403


def test_lockfile_json_reads_yaml_as_conda_locks_writer_meant_it():
    """conda-lock writes YAML 1.2 (ruamel); the JSON must hold what ruamel reads back, not what a
    YAML 1.1 reader would (``on`` a boolean, ``2024-01-01`` a date, ``0755`` octal)."""
    import io

    from ruamel.yaml import YAML

    from conda_store_jupyter.server.lockfiles import to_json, to_yaml

    doc = {"strings": ["on", "yes", "No", "2024-01-01", "0755", "1e3", "null", "1:20", "~", ".inf", "0o17", ""],
           "values": [True, False, None, 0, 755, -3, 1.5, 1e-3, float("inf"), 0o17],
           "nested": {"version": "1.10", "build": "py_0", "sha256": "0" * 64}}
    out = io.StringIO()
    YAML().dump(doc, out)
    text = out.getvalue().encode()
    assert json.loads(to_json(text)) == YAML(typ="safe", pure=True).load(text) == doc
    assert to_json(b'{"version": 1}') == b'{"version": 1}'  # stored as JSON: served as stored
    assert yaml.safe_load(to_yaml(b'{"a": ["on", "2024-01-01"]}')) == {"a": ["on", "2024-01-01"]}
    assert to_yaml(text) is None  # stored as YAML: served as stored


def test_a_lockfile_that_cannot_be_read_is_a_clear_4xx(server):
    """A stored lockfile that is neither YAML nor JSON (a damaged store): the problem, not a 500."""
    from .fixtures_service import completed_build

    build_id = completed_build(server.store, "broken", ["hello"])
    with server.store.session() as db:
        build = db.get(orm.Build, build_id)
        key = f"lockfile/{build.build_key}.yml"
        db.add(orm.BuildArtifact(build_id=build_id, artifact_type="LOCKFILE", key=key))
    for stored in (b"package: [unclosed\n", b"{not json"):
        server.store.storage.put_bytes(key, stored)
        for params in ({}, {"format": "yaml"}):
            r = get(server, f"build/{build_id}/lockfile/", ADMIN, params=params)
            if r.status_code == 200:  # stored YAML is served as stored when YAML is asked for
                assert params and r.content == stored
                continue
            assert r.status_code == 400, r.text
            assert r.json()["message"].startswith(f"build {build_id}'s lockfile cannot be read"), r.text
