"""Settings over HTTP: upstream's keys, global → namespace → environment, authorised, validated, and
honoured by submissions and by the builds the workers run (real server, redis-server, workers)."""

from __future__ import annotations

import os

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter.server.testing import bearer, running_server

from .fixtures_service import wait_for

ADMIN = "settings-admin-token-0123456789"
TEAM_ADMIN = "settings-team-admin-token-01234"
TEAM_DEV = "settings-team-developer-token-0"
TOKENS = {
    ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}},
    TEAM_ADMIN: {"primary_namespace": "team", "role_bindings": {"team/*": ["admin"]}},
    TEAM_DEV: {"primary_namespace": "team", "role_bindings": {"team/*": ["developer"]}},
}
QUICK = "name: hi\ndependencies:\n  - hello\n"


@pytest.fixture
def settings_service(service_factory, local_channel, tmp_path):
    """A server whose store also allows a second channel (the same packages under another URL)."""
    other = tmp_path / "other-channel"
    os.symlink(local_channel.path, other)
    other_url = other.as_uri()
    env = service_factory(conda_allowed_channels=[local_channel.url, other_url])
    c = Config()
    c.AuthenticationBackend.predefined_tokens = TOKENS
    with running_server(c, ["--config", str(env.config)]) as server:
        yield server, env, other_url


def client(server, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.api(""), headers=bearer(token) if token else {}, timeout=60)


def test_inheritance_validation_and_authorization(settings_service, local_channel):
    server, _env, other_url = settings_service
    admin = client(server, ADMIN)

    # The configuration is the global default, reported under upstream's keys.
    glob = admin.get("setting/").json()["data"]
    assert glob["conda_default_channels"] == [local_channel.url]
    assert glob["conda_allowed_channels"] == [local_channel.url, other_url]
    assert glob["build_artifacts"] == ["LOCKFILE", "YAML", "CONDA_PACK"]
    assert glob["default_namespace"] == "default" and glob["filesystem_namespace"] == "filesystem"

    # global -> namespace -> environment, key by key
    r = admin.put("setting/", json={"conda_included_packages": ["libgreet"]})
    assert r.status_code == 200 and r.json()["message"] == "global setting keys ['conda_included_packages'] updated"
    assert admin.put("setting/team/", json={"conda_included_packages": ["hello"]}).status_code == 200
    assert admin.put("settings/team/web/", json={"build_artifacts": ["LOCKFILE"]}).status_code == 200  # plural too
    get = {path: admin.get(f"setting/{path}").json()["data"] for path in ("", "team/", "team/web/", "other/")}
    assert get[""]["conda_included_packages"] == ["libgreet"] == get["other/"]["conda_included_packages"]
    assert get["team/"]["conda_included_packages"] == ["hello"] == get["team/web/"]["conda_included_packages"]
    assert get["team/web/"]["build_artifacts"] == ["LOCKFILE"]
    assert get["team/"]["build_artifacts"] == ["LOCKFILE", "YAML", "CONDA_PACK"]
    # null removes a level's override: the namespace inherits the global value again
    assert admin.put("setting/team/", json={"conda_included_packages": None}).status_code == 200
    assert admin.get("setting/team/web/").json()["data"]["conda_included_packages"] == ["libgreet"]
    # a client may PUT back everything it read (unchanged configuration-only keys are accepted)
    assert admin.put("setting/", json=admin.get("setting/").json()["data"]).status_code == 200

    # validation: each 400 names the problem
    bad = [
        ("setting/team/", {"conda_colour": ["x"]}, "unknown setting key(s) ['conda_colour']"),
        ("setting/team/", {"default_namespace": "x"}, "['default_namespace'] are global"),
        ("setting/team/web/", {"conda_indexed_channels": []}, "['conda_indexed_channels'] are global"),
        ("setting/team/", {"build_artifacts": "LOCKFILE"}, "'build_artifacts' must be a list of non-empty strings"),
        ("setting/team/", {"build_artifacts": ["TARBALL"]}, "unknown artifact type(s) ['TARBALL']"),
        ("setting/team/", {"conda_required_packages": ["py thon >="]}, "conda_required_packages[0]"),
        ("setting/team/", {"conda_solve_platforms": ["amiga-68k"]}, "'amiga-68k' is not a conda platform"),
        ("setting/team/", {"conda_solve_platforms": ["zos-z"]}, "must include"),
        ("setting/", {"conda_command": "conda"}, "'conda_command' cannot be changed through the API"),
        ("setting/team/", [1, 2], "must be a JSON object"),
        ("setting/Bad Name/", {}, "namespace"),
    ]
    for path, body, message in bad:
        r = admin.put(path, json=body)
        assert r.status_code == 400, (path, body, r.text)
        assert message in r.json()["message"], (path, body, r.json()["message"])
    assert admin.get("setting/team/").json()["data"]["build_artifacts"] == ["LOCKFILE", "YAML", "CONDA_PACK"]

    # authorization: 401 without credentials, 403 without the permission on that scope
    anonymous = client(server)
    assert anonymous.get("setting/").status_code == 401
    assert anonymous.put("setting/team/", json={}).status_code == 401
    dev, team_admin = client(server, TEAM_DEV), client(server, TEAM_ADMIN)
    assert dev.get("setting/team/web/").status_code == 200  # setting::read (developer/editor)
    assert dev.put("setting/team/", json={"conda_included_packages": []}).status_code == 403
    assert team_admin.put("setting/team/", json={"conda_included_packages": ["hello"]}).status_code == 200
    assert team_admin.put("setting/other/", json={}).status_code == 403
    assert team_admin.put("setting/", json={}).status_code == 403  # global needs a */* binding
    assert team_admin.get("setting/").status_code == 403

    # submissions use the environment's effective settings (included packages, allowed channels)
    assert admin.put("setting/team/", json={"pypi_included_packages": ["toolz"]}).status_code == 200
    r = admin.post("specification/", json={"namespace": "team", "specification": QUICK.replace("hi", "web")})
    build = admin.get(f"build/{r.json()['data']['build_id']}/").json()["data"]
    # the namespace's "hello" is already there; its pip package is added
    assert build["specification"]["spec"]["dependencies"] == ["hello", {"pip": ["toolz"]}]
    assert admin.put("setting/team/web/", json={"pypi_required_packages": ["six"]}).status_code == 200
    r = admin.post("specification/", json={"namespace": "team", "specification": QUICK.replace("hi", "web")})
    assert r.status_code == 400 and r.json()["message"] == "dependencies.pip: required pip package(s) missing: six"
    r = admin.post("specification/", json={"namespace": "other", "specification": QUICK})
    build = admin.get(f"build/{r.json()['data']['build_id']}/").json()["data"]
    assert build["specification"]["spec"]["dependencies"] == ["hello", "libgreet"]  # the global one
    check = admin.post("specification/validate/", json={"namespace": "team", "specification":
                                                        f"name: x\nchannels: [{other_url}]\ndependencies: [hello]\n"})
    assert check.json()["data"]["valid"] is True
    assert admin.put("setting/team/", json={"conda_allowed_channels": [local_channel.url]}).status_code == 200
    check = admin.post("specification/validate/", json={"namespace": "team", "specification":
                                                        f"name: x\nchannels: [{other_url}]\ndependencies: [hello]\n"})
    assert check.json()["data"]["valid"] is False and "is not allowed" in check.json()["data"]["message"]


def test_builds_honour_namespace_settings(settings_service, local_channel):
    """A namespace's channel restriction fails a build queued before it (checked again when the build
    runs); its build_artifacts toggle leaves out conda-pack (made by default: test_api_builds)."""
    server, env, other_url = settings_service
    admin = client(server, ADMIN)
    on_other = f"name: hi\nchannels: [{other_url}]\ndependencies:\n  - hello\n"

    def submit(namespace: str, spec: str) -> int:
        r = admin.post("specification/", json={"namespace": namespace, "specification": spec})
        assert r.status_code == 200, r.text
        return r.json()["data"]["build_id"]

    early = submit("locked", on_other)  # accepted: the other channel is allowed globally, no worker yet
    r = admin.put("setting/locked/", json={"conda_allowed_channels": [local_channel.url],
                                           "build_artifacts": ["LOCKFILE"]})
    assert r.status_code == 200, r.text
    r = admin.post("specification/", json={"namespace": "locked", "specification": on_other})
    assert r.status_code == 400 and f"channel {other_url!r} is not allowed" in r.json()["message"]
    late = submit("locked", QUICK)
    env.start_worker()
    env.start_worker()

    def finished(build_id: int):
        data = admin.get(f"build/{build_id}/").json()["data"]
        return data if data["status"] in ("COMPLETED", "FAILED", "CANCELED") else None

    results = {b: wait_for(lambda b=b: finished(b), 240, f"build {b}", interval=0.3) for b in (early, late)}
    assert results[early]["status"] == "FAILED" and "is not allowed" in results[early]["status_info"], results[early]
    assert results[late]["status"] == "COMPLETED", (results[late], env.worker_logs()[-3000:])
    kinds = {a["artifact_type"] for a in results[late]["build_artifacts"]}
    assert "LOCKFILE" in kinds and "CONDA_PACK" not in kinds, kinds
    assert admin.get(f"build/{late}/archive/").status_code in (400, 404)


def test_repair_does_not_build_images_a_namespace_switched_off(service_factory):
    """The repair pass (lost image jobs) honours the build's settings too, not only the configuration."""
    from conda_store_jupyter import api
    from conda_store_jupyter.worker.repair import RepairPolicy, repair

    from .fixtures_service import completed_build

    env = service_factory(build_artifacts=["LOCKFILE", "YAML", "DOCKER_MANIFEST"])
    store = env.store
    build_id = completed_build(store, "hi", ["hello"])  # namespace "team", no image yet
    now = RepairPolicy(tail_grace=0, image_grace=0, purge_grace=0)
    with store.session() as db:
        api.update_settings(db, store, api.Scope("team"), {"build_artifacts": ["LOCKFILE", "YAML"]})
    assert repair(store, now).images_queued == []
    with store.session() as db:
        api.update_settings(db, store, api.Scope("team"), {"build_artifacts": None})
    assert repair(store, now).images_queued == [build_id]
