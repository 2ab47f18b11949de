"""COMPLETED means usable; the conda-pack archive and the image come after it, each with its own state.

Real parts: redis-server, RQ workers as processes (one that works only the build queue, so the
artifact jobs wait where a test can look at them), the HTTP server, conda-pack on real prefixes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from traitlets.config import Config

from conda_store_jupyter import orm
from conda_store_jupyter.schema import ArtifactStatus, BuildArtifactType, BuildStatus
from conda_store_jupyter.server.testing import bearer, running_server
from conda_store_jupyter.worker.artifacts import alive_key
from conda_store_jupyter.worker.queue import ARTIFACT_QUEUE, BUILD_QUEUE, BuildQueue, artifact_job_id
from conda_store_jupyter.worker.repair import RepairPolicy, repair

from .fixtures_service import BUILD_DEADLINE, QUICK, QUICK2, build_row, make_build, status_of, wait_for
from .processes import cli_env, kill_tree

CONDA_STORE = Path(sys.executable).parent / "conda-store"

ADMIN = "admin-token-for-artifact-tests-01"
ARTIFACTS = ["LOCKFILE", "YAML", "CONDA_PACK", "DOCKER_MANIFEST"]
# Repair's "no job record at all" grace stays long: these tests are about jobs RQ saw die.
NO_GRACE_FOR_DEAD_JOBS = RepairPolicy(tail_grace=3600, image_grace=3600, purge_grace=3600)


def _work(env, *queues: str) -> None:
    """Run an RQ worker (a real process) on ``queues`` until they are empty."""
    code = ("from rq import Queue, Worker; from conda_store_jupyter.worker.tasks import load_store;"
            f"s = load_store({str(env.config)!r}); Worker([Queue(q, connection=s.redis) for q in {list(queues)!r}],"
            " connection=s.redis).work(burst=True)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=BUILD_DEADLINE)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]


def _states(build: dict) -> dict[str, tuple[str, str | None]]:
    return {a["type"]: (a["status"], a["reason"]) for a in build["artifacts"]}


@contextlib.contextmanager
def _added(logger: logging.Logger, handler: logging.Handler):
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def test_archive_and_image_are_pending_after_completed_then_ready_or_failed(service_factory, tmp_path):
    env = service_factory(build_artifacts=ARTIFACTS, default_docker_base_image="scratch")
    store = env.store
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    access: list[str] = []  # the server's access log lines (to see what the CLI was answered)
    handler = logging.Handler()
    handler.emit = lambda record: access.append(record.getMessage())
    with running_server(c, ["--config", str(env.config)]) as server, _added(server.app.log, handler):
        client = httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=60)
        ok = client.post("specification/", json={"specification": QUICK}).json()["data"]["build_id"]
        bad = client.post("specification/", json={"specification": QUICK2.replace("hi", "bad")}
                          ).json()["data"]["build_id"]
        _work(env, BUILD_QUEUE)  # the builds, not their artifact jobs

        # COMPLETED and usable: lockfile and YAML are there; archive and image are announced, PENDING.
        build = client.get(f"build/{ok}/").json()["data"]
        assert build["status"] == "COMPLETED", build["status_info"]
        assert _states(build) == {"LOCKFILE": ("READY", None), "YAML": ("READY", None), "LOGS": ("READY", None),
                                  "CONDA_PACK": ("PENDING", None), "DOCKER_MANIFEST": ("PENDING", None)}
        assert build["image_status"] == "PENDING"
        assert "CONDA_PACK" not in {a["artifact_type"] for a in build["build_artifacts"]}  # upstream: files only
        assert client.get(f"build/{ok}/lockfile/").status_code == 200
        listed = client.get("build/", params={"environment_id": build["environment_id"]}).json()["data"]
        assert _states(listed[0])["CONDA_PACK"] == ("PENDING", None)
        env_row = client.get("environment/", params={"name": "hi"}).json()["data"][0]
        assert _states(env_row["current_build"])["CONDA_PACK"] == ("PENDING", None)
        assert env_row["current_build"]["image_status"] == build["image_status"]  # the listing's own rows

        # The archive asked for before it exists: a clear 409 with a retry hint, never a file.
        early = client.get(f"build/{ok}/archive/")
        assert early.status_code == 409 and early.headers["retry-after"] == "1"
        assert early.headers["content-type"].startswith("application/json")
        assert early.json()["data"]["artifact"] == {"type": "CONDA_PACK", "status": "PENDING", "reason": None}
        assert "still being made" in early.json()["message"]
        # The image, per the distribution spec: 404 MANIFEST_UNKNOWN saying it is on its way.
        pull = client.get(server.url.rstrip("/") + "/v2/team/hi/manifests/latest")
        assert pull.status_code == 404 and pull.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert "still being built" in pull.json()["errors"][0]["message"]

        # The CLI asked for it now waits (409 -> poll the state) instead of failing or saving JSON.
        cli = cli_env(tmp_path / "xdg", CONDA_STORE_URL=server.url.rstrip("/"), CONDA_STORE_TOKEN=ADMIN)
        waiting = subprocess.Popen([str(CONDA_STORE), "download", str(ok), "--artifact", "archive", "-o",
                                    str(tmp_path / "env.tar.gz")], env=cli, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        wait_for(lambda: any(f"409 GET /api/v1/build/{ok}/archive/" in line for line in access), 60,
                 "the CLI to be told the archive is pending")

        # A pack that fails (an unreadable package record in the prefix) fails only the archive.
        bad_prefix = build_row(store, bad).prefix_path(store.store_path)
        (bad_prefix / "conda-meta" / "broken-1.0-0.json").write_text("{not json")
        _work(env, ARTIFACT_QUEUE)
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0 and out.strip() == str(tmp_path / "env.tar.gz"), err
        assert (tmp_path / "env.tar.gz").read_bytes()[:2] == b"\x1f\x8b"

        build = client.get(f"build/{ok}/").json()["data"]
        assert _states(build)["CONDA_PACK"] == ("READY", None) and _states(build)["DOCKER_MANIFEST"] == ("READY", None)
        archive = client.get(f"build/{ok}/archive/")
        assert archive.status_code == 200 and archive.content[:2] == b"\x1f\x8b"
        assert int(archive.headers["content-length"]) == len(archive.content)
        assert client.get(server.url.rstrip("/") + "/v2/team/hi/manifests/latest").status_code == 200

        failed = client.get(f"build/{bad}/").json()["data"]
        assert failed["status"] == "COMPLETED" and failed["status_info"] is None
        status, reason = _states(failed)["CONDA_PACK"]
        assert status == "FAILED" and reason.startswith("conda-pack could not archive the environment"), reason
        assert _states(failed)["DOCKER_MANIFEST"][0] == "FAILED"  # the image relocates with conda-pack too
        gone = client.get(f"build/{bad}/archive/")
        assert gone.status_code == 410 and reason in gone.json()["message"]
        assert gone.json()["data"]["artifact"] == {"type": "CONDA_PACK", "status": "FAILED", "reason": reason}
        assert client.get(f"build/{bad}/lockfile/").status_code == 200  # the environment itself is fine
        log = client.get(f"build/{bad}/logs/").text
        assert f"ARCHIVE FAILED: {reason}" in log and "BUILD COMPLETED" in log
        assert "-- docker image" in log and "IMAGE FAILED" in log  # both jobs appended, neither lost
        assert client.get("build/", params={"artifact": "CONDA_PACK"}).json()["count"] == 1  # READY ones only
        # The CLI: one line with the reason, for download and run alike.
        for args in (["download", str(bad), "--artifact", "archive"], ["run", "team/bad", "--", "python"],
                     ["wait", str(bad), "--artifact", "archive", "--timeout", "60"]):
            proc = subprocess.run([str(CONDA_STORE), *args], env=cli, capture_output=True, text=True, timeout=120,
                                  cwd=tmp_path)
            assert reason in _one_line_error(proc), (args, proc.stderr)


def test_archive_job_of_a_killed_worker_is_queued_again_and_finishes(service_factory):
    env = service_factory()
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    _work(env, BUILD_QUEUE)
    assert status_of(store, build_id)[0] == BuildStatus.COMPLETED
    prefix = build_row(store, build_id).prefix_path(store.store_path)
    # Incompressible bytes make the pack take long enough to kill its worker in the middle.
    big = prefix / "share" / "big.bin"
    big.parent.mkdir(exist_ok=True)
    with open(big, "wb") as f:
        for _ in range(12):
            f.write(os.urandom(8 << 20))

    worker = env.start_worker("--reconcile-interval", "0")
    wait_for(lambda: store.redis.exists(alive_key(build_id, BuildArtifactType.CONDA_PACK)), 60,
             "the archive job to start")
    kill_tree(worker.pid)  # the worker and its work horse, mid-pack
    worker.wait()
    row = build_row(store, build_id).artifact_state(BuildArtifactType.CONDA_PACK)
    assert row.status is ArtifactStatus.PENDING, "the pack finished before the kill: make the prefix bigger"
    from rq.job import Job

    assert Job.fetch(artifact_job_id(BuildArtifactType.CONDA_PACK, build_id),
                     connection=store.redis).get_status().value == "started"  # RQ cannot know it died

    # Repair sees the job's alive key expire and queues the archive again (not stuck PENDING).
    wait_for(lambda: repair(store, NO_GRACE_FOR_DEAD_JOBS).archives_queued == [build_id], 60,
             "repair to queue the lost archive job again", interval=1)
    big.unlink()
    _work(env, ARTIFACT_QUEUE)
    build = build_row(store, build_id)
    assert build.artifact(BuildArtifactType.CONDA_PACK) is not None and build.status is BuildStatus.COMPLETED
    assert store.storage.get_bytes(build.artifact(BuildArtifactType.CONDA_PACK).key)[:2] == b"\x1f\x8b"
    assert not any((store.store_path / ".archive-work").iterdir())  # the killed job's scratch is gone too
    assert not repair(store, NO_GRACE_FOR_DEAD_JOBS)


def test_migration_moves_image_status_onto_the_manifest_row_and_back(database_url):
    """0007 -> 0010: ``build.image_status`` (and a failed image's reason in ``status_info``) becomes
    the DOCKER_MANIFEST row's state, existing rows are READY, nothing else changes (on SQLite the
    column is dropped in place: a table copy would cascade into build_artifact); and back."""
    import sqlalchemy as sa

    engine = orm.create_engine_for(database_url)
    orm.upgrade(engine, "0007_build_image_status")
    builds = {1: ("PENDING", None), 2: ("FAILED", "no room"), 3: ("READY", None), 4: (None, None)}
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO namespace (id, name) VALUES (1, 'team')"))
        conn.execute(sa.text("INSERT INTO specification (id, name, spec, sha256, created_on) "
                             "VALUES (1, 'e', '{}', 'ab', '2026-01-01')"))
        conn.execute(sa.text("INSERT INTO environment (id, namespace_id, name) VALUES (1, 1, 'e')"))
        for build_id, (image, info) in builds.items():
            conn.execute(sa.text("INSERT INTO build (id, specification_id, environment_id, status, status_info, "
                                 "size, scheduled_on, image_status) VALUES (:id, 1, 1, 'COMPLETED', :info, 0, "
                                 "'2026-01-01', :s)"), {"id": build_id, "info": info, "s": image})
            conn.execute(sa.text("INSERT INTO build_artifact (build_id, artifact_type, key) VALUES (:id, 'LOGS', 'l')"),
                         {"id": build_id})
        conn.execute(sa.text("INSERT INTO build_artifact (build_id, artifact_type, key) "
                             "VALUES (3, 'DOCKER_MANIFEST', 'docker/blobs/sha256/" + "0" * 64 + "')"))
        conn.execute(sa.text("UPDATE environment SET current_build_id = 4"))

    def rows():
        with engine.begin() as conn:
            return sorted(tuple(r) for r in conn.execute(sa.text(
                "SELECT build_id, artifact_type, status, reason FROM build_artifact")).all())

    orm.upgrade(engine)
    assert rows() == [(1, "DOCKER_MANIFEST", "PENDING", None), (1, "LOGS", "READY", None),
                      (2, "DOCKER_MANIFEST", "FAILED", "no room"), (2, "LOGS", "READY", None),
                      (3, "DOCKER_MANIFEST", "READY", None), (3, "LOGS", "READY", None), (4, "LOGS", "READY", None)]
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM build WHERE status_info IS NOT NULL")).scalar() == 0
        assert conn.execute(sa.text("SELECT current_build_id FROM environment")).scalar() == 4

    from alembic import command

    with engine.begin() as conn:
        cfg = orm.alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007_build_image_status")
    with engine.begin() as conn:
        back = dict((r[0], (r[1], r[2])) for r in conn.execute(sa.text(
            "SELECT id, image_status, status_info FROM build")).all())
    assert back == builds
    with engine.begin() as conn:  # the PENDING/FAILED image rows go: before 0010 a row meant "it exists"
        assert conn.execute(sa.text("SELECT count(*) FROM build_artifact")).scalar() == 5
    engine.dispose()
