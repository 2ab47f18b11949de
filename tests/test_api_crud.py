"""REST API CRUD over real HTTP, on SQLite and PostgreSQL (no workers: builds stay QUEUED).

Builds are queued into a real redis-server; nothing consumes them here, which keeps these tests
about the API's own rules (see test_api_builds.py for the end-to-end flow with workers).
"""

from __future__ import annotations

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.testing import bearer, running_server, user_token

ADMIN = "admin-token-for-tests-0123456789"


def spec(name: str, *deps: str) -> str:
    return f"name: {name}\ndependencies: [{', '.join(deps or ('python',))}]\n"


@pytest.fixture
def server(database_url, redis_url, tmp_path, local_channel):
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.database_url = database_url
    c.CondaStore.redis_url = redis_url
    c.CondaStore.conda_default_channels = [local_channel.url]
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "admin", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    with running_server(c) as s:
        yield s


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=30) as c:
        yield c


def test_namespace_lifecycle(client):
    # A listing reports the page size it stands for, never 0 (clients divide by it) or 1; the
    # default namespace exists from the first start.
    assert client.get("namespace/").json() == {"status": "ok", "data": [{"id": 1, "name": "default"}],
                                               "message": None, "page": 1, "size": 100, "count": 1}
    assert client.post("namespace/team/").json()["status"] == "ok"
    r = client.post("namespace/team")  # no trailing slash: served, not redirected
    assert r.status_code == 409 and r.json()["status"] == "error"
    r = client.put("namespace/team/", json={"metadata": {"owner": "ml"}, "role_mappings": {"bob/*": ["editor"]}})
    assert r.status_code == 200, r.text
    data = client.get("namespace/team/").json()["data"]
    assert data["metadata_"] == {"owner": "ml"}
    assert [(m["entity"], m["role"]) for m in data["role_mappings"]] == [("bob/*", "developer")]

    # v2-shaped role view over the same rows
    client.post("namespace/ops/")
    assert client.post("namespace/team/role", json={"other_namespace": "ops", "role": "viewer"}).status_code == 200
    assert client.get("namespace/team/role", params={"other_namespace": "ops"}).json()["data"]["role"] == "viewer"
    assert [r["other_namespace"] for r in client.get("namespace/team/roles").json()["data"]] == ["bob", "ops"]
    assert client.request("DELETE", "namespace/team/role", json={"other_namespace": "ops"}).status_code == 200
    assert client.get("namespace/team/role", params={"other_namespace": "ops"}).status_code == 404

    assert client.delete("namespace/team/").status_code == 200
    assert client.get("namespace/team/").status_code == 404
    assert [n["name"] for n in client.get("namespace/").json()["data"]] == ["default", "ops"]


def test_specification_creates_environment_and_build(client, server):
    r = client.post("specification/", json={"namespace": "team", "specification": spec("ml", "python", "six")})
    assert r.status_code == 200, r.text
    build_id = r.json()["data"]["build_id"]
    build = client.get(f"build/{build_id}/").json()["data"]
    assert build["status"] == "QUEUED"
    assert build["specification"]["spec"]["dependencies"] == ["python", "six"]
    assert build["specification"]["spec"]["channels"] == [server.store.conda_default_channels[0]]
    env = client.get("environment/team/ml/").json()["data"]
    # a new environment points at its first build from submission on (upstream's schema)
    assert env["namespace"]["name"] == "team" and env["current_build_id"] == build_id
    # resubmitting always makes a new build (upstream force=True), sharing the specification row
    again = client.post("specification/", json={"namespace": "team", "specification": spec("ml", "python", "six")})
    second = client.get(f"build/{again.json()['data']['build_id']}/").json()["data"]
    assert second["id"] != build_id and second["specification"]["id"] == build["specification"]["id"]
    # the job is really in Redis for a worker to take
    import rq

    queue = rq.Queue("conda-store-builds", connection=server.store.redis)
    assert len(queue) == 2


def test_environment_listing_filters_paging_sorting(client, server):
    for ns, name in [("a", "one"), ("a", "two"), ("b", "one"), ("b", "three"), ("c", "x_y")]:
        assert client.post("specification/", json={"namespace": ns, "specification": spec(name)}).status_code == 200
    def names(**params):
        body = client.get("environment/", params=params).json()
        return [f"{e['namespace']['name']}/{e['name']}" for e in body["data"]], body["count"]

    assert names() == (["a/one", "a/two", "b/one", "b/three", "c/x_y"], 5)
    assert names(namespace="b") == (["b/one", "b/three"], 2)
    assert names(name="one") == (["a/one", "b/one"], 2)
    assert names(search="hre") == (["b/three"], 1)
    assert names(search="_") == (["c/x_y"], 1)  # LIKE wildcards in the search are literal
    assert names(size=2, page=2) == (["b/one", "b/three"], 5)
    assert names(size=2, page=2, order="desc", sort_by="name") == (["b/three", "b/one"], 5)
    # the upstream client appends "/" to the URL, i.e. to the last query value
    assert names(**{"namespace": "a/"}) == (["a/one", "a/two"], 2)
    # status/artifact/package filters apply to the *current* build: each one's first, still queued
    assert names(status="QUEUED") == (["a/one", "a/two", "b/one", "b/three", "c/x_y"], 5)
    assert names(status="COMPLETED") == ([], 0)
    with server.store.session() as db:  # make a/one's build current and COMPLETED
        env = db.query(orm.Environment).filter_by(name="one").order_by(orm.Environment.id).first()
        build = env.builds[0]
        build.status = BuildStatus.COMPLETED
        env.current_build_id = build.id
    assert names(status="COMPLETED") == (["a/one"], 1)
    assert names(status="completed/") == (["a/one"], 1)
    assert client.get("environment/", params={"status": "BOGUS"}).status_code == 400
    assert client.get("build/", params={"status": "COMPLETED"}).json()["count"] == 1
    assert client.get("build/", params={"namespace": "b", "size": 1}).json()["size"] == 1


def test_set_current_build_rules(client, server):
    b1 = client.post("specification/", json={"namespace": "n", "specification": spec("e")}).json()["data"]["build_id"]
    b2 = client.post("specification/", json={"namespace": "n", "specification": spec("e", "six")}).json()["data"]["build_id"]
    other = client.post("specification/", json={"namespace": "n", "specification": spec("f")}).json()["data"]["build_id"]
    r = client.put("environment/n/e/", json={"build_id": b2})
    assert r.status_code == 400 and "only a completed build" in r.json()["message"]
    with server.store.session() as db:
        for b in (b1, b2, other):
            db.get(orm.Build, b).status = BuildStatus.COMPLETED
    assert client.put("environment/n/e/", json={"build_id": other}).status_code == 400  # another env's build
    assert client.put("environment/n/e/", json={"build_id": b1}).status_code == 200
    assert client.get("environment/n/e/").json()["data"]["current_build_id"] == b1
    assert client.put("environment/n/e/", json={"description": "hello"}).status_code == 200
    assert client.get("environment/n/e/").json()["data"]["description"] == "hello"
    # the current build cannot be deleted; another finished one can
    assert client.delete(f"build/{b1}/").status_code == 409
    assert client.delete(f"build/{b2}/").status_code == 200
    assert client.get(f"build/{b2}/").json()["data"]["deleted_on"] is not None
    # cancel a finished build: 409
    assert client.put(f"build/{b1}/cancel/").status_code == 409
    assert client.delete("environment/n/e/").status_code == 200
    assert client.get("environment/n/e/").status_code == 404
    assert client.get(f"build/{b1}/").json()["data"]["deleted_on"] is not None


def test_tokens_permissions_usage_metrics(client, server):
    perms = client.get("permission/").json()["data"]
    assert perms["authenticated"] is True and "environment::delete" in perms["entity_permissions"]["*/*"]
    # the upstream client sends "exp" (a str(datetime)); role bindings must be a subset
    r = client.post("token/", json={"primary_namespace": "ci", "role_bindings": {"ci/*": ["viewer"]},
                                    "exp": "2099-01-01 00:00:00"})
    assert r.status_code == 400  # beyond token_max_lifetime
    r = client.post("token/", json={"primary_namespace": "ci", "role_bindings": {"ci/*": ["viewer"]}})
    assert r.status_code == 200, r.text
    token = r.json()["data"]["token"]
    scoped = httpx.get(server.api("permission/"), headers=bearer(token)).json()["data"]
    assert scoped["primary_namespace"] == "ci" and scoped["entity_roles"] == {"ci/*": ["viewer"]}

    alice = user_token(server, "alice")
    r = httpx.post(server.api("token/"), headers=bearer(alice), json={"role_bindings": {"*/*": ["admin"]}})
    assert r.status_code == 400 and "not a subset" in r.json()["message"]

    client.post("specification/", json={"namespace": "u", "specification": spec("e")})
    usage = client.get("usage/").json()["data"]
    assert usage["u"] == {"num_environments": 1, "num_builds": 1, "storage": 0}
    text = httpx.get(server.url + "metrics").text
    assert "conda_store_build_queued 1" in text and "conda_store_environments 1" in text
    assert client.get("").json()["data"]["version"]


def test_remote_solve(client, local_channel):
    r = client.get("specification/", params={"conda": ["hello >=2", "six"], "channel": [local_channel.url]})
    assert r.status_code == 200, r.text
    names = {p["name"]: p["version"] for p in r.json()["solve"]}
    assert names["hello"] == "2.0" and names["libgreet"] == "1.1" and "six" in names
    # unsatisfiable: the solver's explanation, as a client error (never a 500)
    r = client.get("specification/", params={"conda": ["hello >=3"], "channel": [local_channel.url]})
    assert r.status_code == 422 and "hello" in r.json()["message"]
    r = client.get("specification/", params={"conda": ["hello >>3"]})
    assert r.status_code == 400 and "not a valid conda match spec" in r.json()["message"]
