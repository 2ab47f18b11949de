"""The build flow end to end over HTTP: real server, real redis-server, real worker processes.

Create → COMPLETED → artifacts downloadable → rebuild (followed live over SSE) → roll back to
the older build (the env symlink follows) → delete (logs, lockfile and YAML are kept).
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
import yaml
from traitlets.config import Config

from conda_store_jupyter.server.testing import bearer, running_server

from .fixtures_service import wait_for

ADMIN = "admin-token-for-build-tests-0123"
SPEC = """\
name: web
dependencies:
  - python
  - six
  - pip:
    - toolz
"""
BUILD_TIMEOUT = 300


@pytest.fixture
def service(service_factory):
    env = service_factory()
    env.start_worker()
    env.start_worker()
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    with running_server(c, ["--config", str(env.config)]) as server:
        yield server, env


def wait_build(client: httpx.Client, build_id: int, env) -> dict:
    def done():
        data = client.get(f"build/{build_id}/").json()["data"]
        return data if data["status"] in ("COMPLETED", "FAILED", "CANCELED") else None

    data = wait_for(done, BUILD_TIMEOUT, f"build {build_id}", interval=0.5)
    assert data["status"] == "COMPLETED", (data["status_info"], client.get(f"build/{build_id}/logs/").text,
                                           env.worker_logs()[-3000:])
    return data


def prefix_of(build: dict) -> str:
    return next(a["key"] for a in build["build_artifacts"] if a["artifact_type"] == "DIRECTORY")


def test_build_flow(service):
    server, env = service
    client = httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=60)
    build_id = client.post("specification/", json={"specification": SPEC}).json()["data"]["build_id"]
    first = wait_build(client, build_id, env)
    assert first["image_status"] is None  # this store builds no images
    # The archive is made after COMPLETED, with its own state: wait for it to be READY.
    first = wait_for(lambda: (b := client.get(f"build/{build_id}/").json()["data"])
                     and {"type": "CONDA_PACK", "status": "READY", "reason": None} in b["artifacts"] and b,
                     BUILD_TIMEOUT, "the conda-pack archive", interval=0.2)
    kinds = {a["artifact_type"] for a in first["build_artifacts"]}
    assert {"LOCKFILE", "YAML", "CONDA_PACK", "LOGS", "DIRECTORY"} <= kinds
    assert client.get("environment/team/web/").json()["data"]["current_build_id"] == build_id

    # artifacts, streamed by the server with proper headers
    # (the lockfile as upstream serves it, JSON; its YAML form when asked: tests/test_api_upstream_parity.py)
    for path, content_type in [("lockfile/", "application/json"), ("conda-lock.yml", "application/json"),
                               ("lockfile/?format=yaml", "text/yaml"), ("yaml/", "text/yaml"),
                               ("archive/", "application/gzip"), ("logs/", "text/plain")]:
        r = client.get(f"build/{build_id}/{path}")
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith(content_type)
        if path != "logs/":
            assert int(r.headers["content-length"]) == len(r.content) > 0
            assert r.headers["content-disposition"].startswith("attachment; filename=")
    pinned = yaml.safe_load(client.get(f"build/{build_id}/yaml/").text)
    assert any(str(d).startswith("six") for d in pinned["dependencies"] if isinstance(d, str))
    assert client.get("environment/team/web/lockfile/").content == client.get(f"build/{build_id}/lockfile/").content
    assert client.get(f"build/{build_id}/archive/").content[:2] == b"\x1f\x8b"
    packages = client.get(f"build/{build_id}/packages/", params={"search": "six"}).json()
    assert [p["name"] for p in packages["data"]] == ["six"]
    assert client.get("environment/", params={"packages": "six", "status": "COMPLETED"}).json()["count"] == 1

    # rebuild, following the live log over server-sent events until the build ends
    rebuilt = client.put(f"build/{build_id}/").json()
    assert rebuilt["message"] == "rebuild triggered"
    new_id = rebuilt["data"]["build_id"]
    events = []
    with client.stream("GET", f"build/{new_id}/logs/stream/", timeout=BUILD_TIMEOUT) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            events.append(line)
            if line.startswith("event: end"):
                break
    data_lines = [e for e in events if e.startswith("data: ")]
    assert len(data_lines) > 3 and events[-1] == "event: end", events[-5:]
    second = wait_build(client, new_id, env)
    assert client.get("environment/team/web/").json()["data"]["current_build_id"] == new_id
    link = server.store.store_path / "team" / "envs" / "web"
    wait_for(lambda: os.path.realpath(link) == os.path.realpath(prefix_of(second)), 30, "link to the new build")

    # roll back: the older build becomes current and the symlink follows
    assert client.put("environment/team/web/", json={"build_id": build_id}).status_code == 200
    assert client.get("environment/team/web/").json()["data"]["current_build_id"] == build_id
    wait_for(lambda: os.path.realpath(link) == os.path.realpath(prefix_of(first)), 30, "link back to build 1")
    assert client.put("environment/team/web/", json={"build_id": 10**6}).status_code == 400

    # delete: logs, lockfile and YAML stay downloadable; the archive and prefix go
    assert client.delete("environment/team/web/").status_code == 200
    assert client.get("environment/team/web/").status_code == 404
    wait_for(lambda: not os.path.exists(prefix_of(first)), 60, "the prefix to be removed")
    for path in ("logs/", "lockfile/", "yaml/"):
        assert client.get(f"build/{build_id}/{path}").status_code == 200, path
    wait_for(lambda: client.get(f"build/{build_id}/archive/").status_code == 404, 30, "archive removal")


def test_cancel_queued_build(service_factory, tmp_path):
    """Without workers a build stays QUEUED; cancel makes it CANCELED with the reason logged."""
    env = service_factory()
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    with running_server(c, ["--config", str(env.config)]) as server:
        client = httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=30)
        build_id = client.post("specification/", json={"specification": SPEC}).json()["data"]["build_id"]
        assert client.get(f"build/{build_id}/logs/").text == ""  # nothing yet, but not an error
        r = client.put(f"build/{build_id}/cancel/")
        assert r.json() == {"status": "ok", "data": None, "message": f"build {build_id} canceled"}
        assert client.get(f"build/{build_id}/").json()["data"]["status"] == "CANCELED"
        assert "CANCELED" in client.get(f"build/{build_id}/logs/").text
        assert client.put(f"build/{build_id}/cancel/").status_code == 409
        start = time.monotonic()
        with client.stream("GET", f"build/{build_id}/logs/stream/") as stream:
            lines = list(stream.iter_lines())
        assert "event: end" in lines and time.monotonic() - start < 10
