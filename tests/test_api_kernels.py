"""``GET /api/v1/kernels/`` over real HTTP: one query for every readable environment, kernel
packages detected from the package list (never added), pins, visibility and bad input."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import event, select
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.api.kernels import list_kernel_environments
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.testing import bearer, running_server, user_token

from .kernel_rows import add_build


@pytest.fixture
def server(database_url, redis_url, tmp_path):
    c = Config()
    c.CondaStore.store_directory = str(tmp_path / "store")
    c.CondaStore.database_url = database_url
    c.CondaStore.redis_url = redis_url
    with running_server(c) as s:
        yield s


def by_name(data: list[dict]) -> dict[str, dict]:
    return {f"{d['namespace']}/{d['environment']}": d for d in data}


def test_listing_detects_kernel_packages_in_one_query(server):
    store = server.app.store
    py = add_build(store, "alice", "py", ["python", "ipykernel", "numpy"], archive=True)
    r_env = add_build(store, "alice", "r", ["r-base", "r-irkernel", "ipykernel"])  # R wins over a pulled-in ipykernel
    add_build(store, "alice", "plain", ["python"], lockfile=None)
    add_build(store, "alice", "failed", ["python"], status=BuildStatus.FAILED, current=False)
    add_build(store, "bob", "secret", ["ipykernel"])
    alice = user_token(server, "alice")
    with httpx.Client(base_url=server.api(""), headers=bearer(alice), timeout=30) as client:
        r = client.get("kernels/")
    assert r.status_code == 200, r.text
    envs = by_name(r.json()["data"])
    assert set(envs) == {"alice/py", "alice/r", "alice/plain", "alice/failed"}  # never bob's
    py_build = envs["alice/py"]["build"]
    assert py_build["id"] == py and py_build["status"] == "COMPLETED" and py_build["has_archive"] is True
    assert py_build["kernel"] == {"name": "ipykernel", "version": "1.0", "build": f"h{py}_1", "language": "python"}
    assert py_build["lockfile_sha256"] == hashlib.sha256(b"lock\n").hexdigest()
    # the build's OWN directory (named by its build key), not the environment's symlink
    assert py_build["prefix"].endswith(f"/builds/{_ns_id(store, 'alice')}/{py_build['build_key']}")
    assert f"-{py}-py" in py_build["build_key"]
    assert envs["alice/r"]["build"]["id"] == r_env
    assert envs["alice/r"]["build"]["kernel"]["name"] == "r-irkernel"
    assert {p["name"] for p in envs["alice/r"]["build"]["kernel_packages"]} == {"r-irkernel", "ipykernel"}
    assert envs["alice/plain"]["build"]["kernel"] is None and envs["alice/plain"]["build"]["lockfile_sha256"] is None
    assert envs["alice/failed"]["build"] is None and envs["alice/failed"]["current_build_id"] is None

    # ONE statement, whatever the number of environments
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        with store.session() as db:
            entries = list_kernel_environments(db, ["*/*"], store.store_path)
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    assert len(entries) == 5
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1, statements


def _ns_id(store, name: str) -> int:
    with store.session() as db:
        return db.scalar(select(orm.Namespace.id).filter_by(name=name))


def test_one_environment_and_a_pinned_build(server):
    store = server.app.store
    old = add_build(store, "alice", "py", ["python", "ipykernel"])
    new = add_build(store, "alice", "py", ["python", "ipykernel", "numpy"])
    other = add_build(store, "alice", "other", ["python"])
    alice = user_token(server, "alice")
    with httpx.Client(base_url=server.api(""), headers=bearer(alice), timeout=30) as client:
        (current,) = client.get("kernels/", params={"namespace": "alice", "environment": "py"}).json()["data"]
        assert current["build"]["id"] == new and current["current_build_id"] == new
        (pinned,) = client.get("kernels/", params={"namespace": "alice", "environment": "py",
                                                   "build_id": old}).json()["data"]
        assert pinned["build"]["id"] == old and pinned["current_build_id"] == new
        # a build of another environment is not "this environment's build N"
        (wrong,) = client.get("kernels/", params={"namespace": "alice", "environment": "py",
                                                  "build_id": other}).json()["data"]
        assert wrong["build"] is None
        assert client.get("kernels/", params={"namespace": "alice", "environment": "nope"}).json()["data"] == []

        # bad input: clear 400s naming the problem
        r = client.get("kernels/", params={"build_id": old})
        assert r.status_code == 400 and "build_id needs namespace and environment" in r.json()["message"]
        r = client.get("kernels/", params={"namespace": "alice", "environment": "py", "build_id": "x"})
        assert r.status_code == 400 and "build_id" in r.json()["message"]
        r = client.get("kernels/", params={"namespace": "Not A Name"})
        assert r.status_code == 400 and "namespace" in r.json()["message"]
    with httpx.Client(base_url=server.api(""), timeout=30) as anonymous:
        r = anonymous.get("kernels/")
        assert r.status_code == 200 and r.json()["data"] == []  # anonymous reads nothing here
    with httpx.Client(base_url=server.api(""), headers=bearer("not-a-token"), timeout=30) as bad:
        assert bad.get("kernels/").status_code == 401


def test_unchanged_listing_is_a_304(server):
    store = server.app.store
    add_build(store, "alice", "py", ["python", "ipykernel"])
    alice = user_token(server, "alice")
    with httpx.Client(base_url=server.api(""), headers=bearer(alice), timeout=30) as client:
        first = client.get("kernels/")
        etag = first.headers["etag"]
        assert client.get("kernels/", headers={"If-None-Match": etag}).status_code == 304
        add_build(store, "alice", "py", ["python", "ipykernel", "numpy"])
        changed = client.get("kernels/", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
