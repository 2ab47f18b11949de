"""The build page's downloads follow each artifact's state live: the archive and the image are
"being made" right after COMPLETED, then a link (or the failure's reason) without a reload.

An in-process server (real tornado, real Redis) and real RQ workers as processes: one run works
only the build queue, so the page can be looked at while the artifact jobs wait; a second run
makes them.
"""

from __future__ import annotations

import httpx
from playwright.sync_api import expect
from traitlets.config import Config

from conda_store_jupyter.server.testing import bearer, running_server
from tests.fixtures_service import (QUICK, redis_server_url, redis_url,  # noqa: F401 - fixtures
                                    service_factory, work_queues)

ADMIN = "ui-artifact-states-admin-0123456789"


def test_downloads_show_pending_then_ready_live(service_factory, page, screenshots):  # noqa: F811
    from conda_store_jupyter.worker.queue import ARTIFACT_QUEUE, BUILD_QUEUE

    env = service_factory(build_artifacts=["LOCKFILE", "YAML", "CONDA_PACK", "DOCKER_MANIFEST"],
                          default_docker_base_image="scratch")
    c = Config()
    c.AuthenticationBackend.predefined_tokens = {
        ADMIN: {"primary_namespace": "team", "role_bindings": {"*/*": ["admin"]}, "username": "root"}}
    with running_server(c, ["--config", str(env.config)]) as server:
        client = httpx.Client(base_url=server.api(""), headers=bearer(ADMIN), timeout=60)
        build_id = client.post("specification/", json={"specification": QUICK}).json()["data"]["build_id"]
        work_queues(env, BUILD_QUEUE)

        page.goto(f"{server.url}build/{build_id}/")
        page.get_by_label("API token").fill(ADMIN)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_test_id("build-status")).to_have_text("COMPLETED")
        archive = page.locator('[data-artifact-type="CONDA_PACK"]')
        image = page.locator('[data-artifact-type="DOCKER_MANIFEST"]')
        expect(archive).to_have_attribute("data-artifact-state", "pending")
        expect(archive).to_contain_text("being made")
        expect(archive.get_by_role("link")).to_have_count(0)  # nothing to download yet
        expect(image).to_have_attribute("data-artifact-state", "pending")
        expect(page.get_by_role("link", name="Lockfile (conda-lock.yml)")).to_be_visible()  # usable now
        screenshots(page, "build-artifacts-pending")

        work_queues(env, ARTIFACT_QUEUE)
        # No reload: the page follows the states while one is pending.
        expect(archive).to_have_attribute("data-artifact-state", "ready", timeout=15_000)
        expect(image).to_have_attribute("data-artifact-state", "ready", timeout=15_000)
        with page.expect_download() as download:
            page.get_by_role("link", name="Archive (conda-pack)").click()
        assert download.value.suggested_filename.endswith(".tar.gz")
        screenshots(page, "build-artifacts-ready")
