"""Bad input never produces a 500: every answer is a 4xx in the error envelope.

Fuzzes path ids and names, query values and bodies across the whole route table, plus the
specific cases users hit: invalid YAML, bad names (``..``, ``a/b``, 300 characters), unknown
and non-integer ids, unknown routes, wrong methods and oversized bodies.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter.server.testing import bearer, running_server

ADMIN = "admin-token-for-error-tests-0123"

BAD_SEGMENTS = ["..", ".", "a%2Fb", "A" * 300, "%00", "-1", "0", "1e3", "9" * 30, "x y", "%E2%80%AE",
                "*", "%25", "a..b", "_x", "ns-"]
BAD_BODIES = [b"", b"null", b"[]", b"\"str\"", b"{", b"\xff\xfe", b'{"specification": 5}',
              b'{"specification": "name: [x"}', b'{"specification": {"name": ".."}}',
              b'{"build_id": "1"}', b'{"build_id": true}', b'{"metadata": [1]}',
              b'{"role_mappings": {"x": "admin"}}', b'{"role_mappings": {"a/b": ["god"]}}',
              b'{"expiration": "tomorrow"}', b'{"expiration": 1e300}', b'{"role_bindings": 3}',
              b'{"other_namespace": "..", "role": "viewer"}', b'{"primary_namespace": "../x"}',
              json.dumps({"specification": "name: ok\ndependencies: ['python >>> 3']"}).encode(),
              json.dumps({"specification": "name: ok\nchannels: [http://evil.example]\ndependencies: [python]"}).encode(),
              json.dumps({"specification": "name: ok\ndependencies: [{pip: ['--index-url=http://x']}]"}).encode()]
PATHS = [
    "namespace/{x}/", "namespace/{x}/metadata", "namespace/{x}/role", "namespace/{x}/roles",
    "environment/{x}/{x}/", "environment/{x}/env/lockfile/", "environment/ns/{x}/",
    "build/{x}/", "build/{x}/cancel/", "build/{x}/packages/", "build/{x}/logs/", "build/{x}/logs/stream/",
    "build/{x}/lockfile/", "build/{x}/yaml/", "build/{x}/archive/", "build/{x}/conda-lock.yaml", "token/{x}/",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server_url, local_channel):
    c = Config()
    c.CondaStore.store_directory = str(tmp_path_factory.mktemp("store"))
    c.CondaStore.redis_url = redis_server_url + "/63"
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.CondaStoreServer.max_body_size = 64 * 1024
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    with running_server(c) as s:
        with httpx.Client(headers=bearer(ADMIN), timeout=30) as client:
            # one real environment and build so ids/names that exist are covered too
            r = client.post(s.api("specification/"), json={"specification": "name: env\ndependencies: [python]"})
            assert r.status_code == 200, r.text
        yield s


def assert_enveloped_4xx(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    body = r.json()
    assert body["status"] == "error" and isinstance(body["message"], str) and body["message"], (what, body)


def test_fuzz_paths_and_methods(server):
    with httpx.Client(headers=bearer(ADMIN), timeout=30) as client:
        for template, segment, method in itertools.product(PATHS, BAD_SEGMENTS, ["GET", "PUT", "POST", "DELETE"]):
            url = server.api(template.format(x=segment))
            r = client.request(method, url, content=b"{}")
            if r.status_code < 400:
                continue  # e.g. ``GET namespace/ns-`` style names that are fine for some routes
            assert_enveloped_4xx(r, f"{method} {url}")


def test_fuzz_bodies(server):
    targets = [("POST", "specification/"), ("PUT", "namespace/team/"), ("POST", "namespace/team/role"),
               ("PUT", "environment/team/env/"), ("POST", "token/"), ("PUT", "namespace/team/metadata"),
               ("POST", "../../login/")]
    with httpx.Client(headers=bearer(ADMIN), timeout=30) as client:
        for (method, path), body in itertools.product(targets, BAD_BODIES):
            r = client.request(method, server.api(path), content=body, headers={"Content-Type": "application/json"})
            # a few bodies are valid somewhere (an empty token request); none may crash
            if not 200 <= r.status_code < 300:
                assert_enveloped_4xx(r, f"{method} {path} {body[:60]!r}")


def test_fuzz_query_values(server):
    with httpx.Client(headers=bearer(ADMIN), timeout=30) as client:
        for path, key, value in itertools.product(
            ["environment/", "build/", "namespace/", "package/", "channel/", "build/1/packages/"],
            ["page", "size", "status", "artifact", "environment_id", "order", "sort_by", "search", "distinct_on"],
            ["-1", "0", "x", "9" * 40, "%", "'", "COMPLETED/", "/", ""],
        ):
            r = client.get(server.api(path), params={key: value})
            if r.status_code >= 400:
                assert_enveloped_4xx(r, f"{path}?{key}={value}")


@pytest.mark.parametrize("name", ["..", "a/b", "A" * 300, "Upper", "-x", "x-", "a b", "a..b"])
def test_bad_environment_names(server, name):
    r = httpx.post(server.api("specification/"), headers=bearer(ADMIN),
                   json={"specification": f"name: '{name}'\ndependencies: [python]"})
    assert r.status_code == 400 and "name" in r.json()["message"], r.text
    r = httpx.post(server.api("specification/"), headers=bearer(ADMIN),
                   json={"namespace": name, "specification": "name: ok\ndependencies: [python]"})
    assert_enveloped_4xx(r, name)


def test_specific_errors(server):
    h = bearer(ADMIN)
    r = httpx.post(server.api("specification/"), headers=h, json={"specification": "name: x\ndependencies: [python"})
    assert r.status_code == 400 and r.json()["message"].startswith("invalid YAML at line")
    assert httpx.get(server.api("build/abc/"), headers=h).status_code == 400
    r = httpx.get(server.api("build/123456/"), headers=h)
    assert r.status_code == 404 and r.json() == {"status": "error", "data": None, "message": "build 123456 does not exist"}
    r = httpx.get(server.url + "no/such/route")
    assert r.status_code == 404 and r.json()["status"] == "error"
    r = httpx.patch(server.api("environment/"), headers=h)
    assert r.status_code == 405 and r.json()["status"] == "error"
    r = httpx.post(server.api("specification/"), headers=h, content=b"x" * (64 * 1024 + 1))
    assert r.status_code == 413 and r.json()["status"] == "error"
    r = httpx.get(server.api("build/1/archive/"), headers=h)  # queued: no archive yet
    assert r.status_code == 404 and "no conda_pack artifact" in r.json()["message"]


def test_numeric_and_nesting_limits_are_client_errors(server):
    """Values that overflow 64-bit integers or Python's recursion limit are 400s, never 500s."""
    with httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=30) as client:
        r = client.get("environment/", params={"page": "999999999999999999", "size": "100"})
        assert r.status_code == 400 and "page" in r.json()["message"]
        r = client.put("environment/team/env/", json={"build_id": 10**30})
        assert r.status_code == 400 and "build_id" in r.json()["message"]
        r = client.post("specification/", content=b"[" * 30_000 + b"]" * 30_000,
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["message"]
        r = client.post("token/", json={"expiration": "0001-01-01T00:00:00+05:00"})
        assert r.status_code == 400 and "out of range" in r.json()["message"]
