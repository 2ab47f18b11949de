"""Environments from files (``CondaStore.watch_paths``): add, change, touch, break and remove files in
the watched directory; the ``filesystem`` namespace follows within seconds. Two servers watch the
same directory, as replicas would: every file is built exactly once (the Redis lease)."""

from __future__ import annotations

import logging
import os
import time

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter.server.testing import bearer, running_server

from .fixtures_service import wait_for

ADMIN = "filesystem-admin-token-0123456789"
FOLLOW = 10.0
"""Seconds within which the namespace must follow a change of the directory (it takes ~1 s)."""


@pytest.fixture
def watched(service_factory, tmp_path):
    directory = tmp_path / "environments"
    (directory / "team").mkdir(parents=True)
    env = service_factory(watch_paths=[str(directory)], watch_interval=0.2)
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}}}
    with running_server(c, ["--config", str(env.config)]) as one, running_server(c, ["--config", str(env.config)]):
        yield one, env, directory


def builds_of(api: httpx.Client, name: str) -> list[dict]:
    return api.get("build/", params={"namespace": "filesystem", "name": name}).json()["data"]


def environment(api: httpx.Client, name: str) -> dict | None:
    r = api.get(f"environment/filesystem/{name}/")
    return r.json()["data"] if r.status_code == 200 else None


def test_directory_is_followed(watched, caplog):
    caplog.set_level(logging.INFO, logger="conda_store_jupyter")
    server, env, directory = watched
    api = httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=60)
    env.start_worker()

    # add: a new file builds its environment
    first = directory / "team" / "web.yaml"
    first.write_text("name: web\ndescription: from git\ndependencies:\n  - hello\n")
    started = time.monotonic()
    web = wait_for(lambda: environment(api, "web"), FOLLOW, "filesystem/web to appear", interval=0.05)
    followed = time.monotonic() - started
    assert web["description"] == "from git"
    [build] = builds_of(api, "web")

    def completed(build_id: int) -> dict | None:
        data = api.get(f"build/{build_id}/").json()["data"]
        assert data["status"] not in ("FAILED", "CANCELED"), (data, env.worker_logs()[-3000:])
        return data if data["status"] == "COMPLETED" else None

    wait_for(lambda: completed(build["id"]), 240, "the first build", interval=0.3)
    print(f"filesystem/web appeared {followed:.2f} s after its file was written")

    # touch (same content, new mtime) and an invalid file: nothing is built for either; a third file,
    # written after them, shows a scan has seen all three
    os.utime(first, (time.time() + 5, time.time() + 5))
    (directory / "broken.yml").write_text("name: broken\ndependencies: [hello\n")
    (directory / "team" / "clash.yaml").write_text("name: web\ndependencies:\n  - libgreet\n")
    (directory / "notes.txt").write_text("not an environment")
    (directory / ".hidden.yaml").write_text("name: hidden\ndependencies: [hello]\n")
    (directory / "db.yaml").write_text("name: db\ndependencies:\n  - libgreet\n")
    wait_for(lambda: environment(api, "db"), FOLLOW, "filesystem/db to appear", interval=0.05)
    assert [b["id"] for b in builds_of(api, "web")] == [build["id"]]
    assert environment(api, "broken") is None and environment(api, "hidden") is None
    messages = [r.getMessage() for r in caplog.records if r.name == "conda_store_jupyter.api.filesystem"]
    assert any("broken.yml is not a valid environment file" in m and "invalid YAML at line 3" in m for m in messages), messages
    assert any("clash.yaml skipped: environment 'web' is already defined by" in m for m in messages), messages

    # change: a new build of the changed specification; the environment moves to it when it completes
    first.write_text("name: web\ndescription: from git\ndependencies:\n  - hello\n  - libgreet\n")
    started = time.monotonic()
    wait_for(lambda: len(builds_of(api, "web")) == 2, FOLLOW, "a second build of filesystem/web", interval=0.05)
    print(f"the change was built {time.monotonic() - started:.2f} s after the file was written")
    second = max(b["id"] for b in builds_of(api, "web"))
    wait_for(lambda: completed(second), 240, "the second build", interval=0.3)
    assert wait_for(lambda: environment(api, "web")["current_build_id"] == second, 30, "web's current build")
    spec = api.get(f"build/{second}/").json()["data"]["specification"]["spec"]
    assert spec["dependencies"] == ["hello", "libgreet"]

    # remove: the environment is deleted (soft); its builds keep their logs and lockfiles
    [db_build] = builds_of(api, "db")
    wait_for(lambda: completed(db_build["id"]), 240, "filesystem/db's build", interval=0.3)
    (directory / "db.yaml").unlink()
    started = time.monotonic()
    wait_for(lambda: environment(api, "db") is None, FOLLOW, "filesystem/db to be deleted", interval=0.05)
    print(f"filesystem/db was deleted {time.monotonic() - started:.2f} s after its file was removed")
    for path in ("logs/", "lockfile/"):
        assert api.get(f"build/{db_build['id']}/{path}").status_code == 200, path
    assert any("db.yaml no longer defines filesystem/db" in r.getMessage() for r in caplog.records)

    # the file that named the same environment as web.yaml defines it once web.yaml is gone
    first.unlink()
    wait_for(lambda: len(builds_of(api, "web")) == 3, FOLLOW, "clash.yaml to rebuild filesystem/web", interval=0.05)
    latest = max(b["id"] for b in builds_of(api, "web"))
    assert api.get(f"build/{latest}/").json()["data"]["specification"]["spec"]["dependencies"] == ["libgreet"]

    # exactly once across the two servers: each change above was submitted by one of them only
    every = api.get("build/", params={"namespace": "filesystem"}).json()["data"]
    assert len(every) == 4, every


def test_a_vanished_directory_deletes_nothing(service_factory, tmp_path):
    """An unmounted share looks like a directory whose files are all gone: nothing is deleted then;
    a file made invalid keeps its environment's last build; a file renaming its environment moves
    it; a settings change rebuilds the environments whose specification it changes."""
    import shutil

    from conda_store_jupyter.api.filesystem import FilesystemSync

    directory = tmp_path / "share"
    directory.mkdir()
    env = service_factory(watch_paths=[str(directory)])
    sync = FilesystemSync(env.store)
    (directory / "a.yaml").write_text("name: a\ndependencies: [hello]\n")
    (directory / "b.yaml").write_text("name: b\ndependencies: [hello]\n")
    assert sorted(sync.sync().built) == ["a", "b"]
    assert not sync.sync()  # nothing changed: nothing done

    moved = tmp_path / "elsewhere"
    shutil.move(directory, moved)
    report = sync.sync()
    assert not report.deleted and not report.built
    shutil.move(moved, directory)
    assert not sync.sync()  # back, unchanged (same specifications): nothing rebuilt

    (directory / "a.yaml").write_text("name: a\ndependencies: [hello\n")
    report = sync.sync()
    assert list(report.invalid) == [str(directory / "a.yaml")] and not report.deleted
    (directory / "b.yaml").write_text("name: c\ndependencies: [hello]\n")
    report = sync.sync()
    assert list(report.built) == ["c"] and report.deleted == ["b"]

    # the namespace's settings decide what a file means: a change rebuilds what it changes
    from conda_store_jupyter import api

    with env.store.session() as db:
        api.update_settings(db, env.store, api.Scope("filesystem"), {"conda_included_packages": ["libgreet"]})
    assert list(sync.sync().built) == ["c"]
    assert not sync.sync()


def test_upstream_config_name_carries_over(tmp_path):
    """An upstream config file sets ``c.CondaStoreWorker.watch_paths``; ours reads it too."""
    from conda_store_jupyter.app import CondaStore

    config = tmp_path / "conda_store_config.py"
    config.write_text('c.CondaStoreWorker.watch_paths = ["/srv/envs"]\n')
    assert CondaStore.from_config_file(config).watch_paths == ["/srv/envs"]
    config.write_text('c.CondaStoreWorker.watch_paths = ["/srv/envs"]\nc.CondaStore.watch_paths = ["/x"]\n')
    assert CondaStore.from_config_file(config).watch_paths == ["/x"]
    assert CondaStore().watch_paths == []
