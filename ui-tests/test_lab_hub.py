"""JupyterLab through a REAL JupyterHub (examples/jupyterhub_config.py, the same hub as
tests/jupyter/test_hub_lab.py): alice logs in to the hub, her server spawns, and the panel in her
Lab shows her environment with no second login; bob's panel does not show it."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from conda_store_jupyter.builder.records import current_platform
from tests.jupyter.hub_browser import hub_login
from tests.jupyter.test_hub_lab import SPEC, lab, lab_hub, spawn  # noqa: F401 - lab_hub is a fixture
from tests.test_hub import chp  # noqa: F401 - a fixture of lab_hub

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

SCREENSHOTS = Path(__file__).parent / "screenshots"


def test_panel_through_the_hub_shows_only_the_users_environments(lab_hub, browser):  # noqa: F811
    # alice's environment, made through her own server's extension (her server's hub token)
    token = spawn(lab_hub, "alice")
    created = lab(lab_hub, "alice", token, "POST", "api/v1/specification/",
                  json={"namespace": "alice", "specification": SPEC})
    assert created.status_code == 200, created.text

    context, page, errors = hub_login(browser, lab_hub, "alice")
    try:
        panel = page.locator("#conda-store-panel")
        expect(panel.locator('li[data-environment="alice/labenv"]')).to_be_visible(timeout=30_000)
        expect(panel.get_by_role("alert")).to_have_count(0)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "lab-hub-panel-alice.png"))
        assert not errors, errors
    finally:
        context.close()

    context, page, errors = hub_login(browser, lab_hub, "bob")  # the hub spawns bob's server
    try:
        panel = page.locator("#conda-store-panel")
        expect(panel.get_by_text("No environments yet")).to_be_visible(timeout=30_000)
        expect(panel.locator("li[data-environment]")).to_have_count(0)
        assert not errors, errors
    finally:
        context.close()
