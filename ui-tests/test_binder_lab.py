"""``binder/start`` as a Binder visitor sees it, in Chromium: JupyterLab opens with the conda-store
panel already showing (the workspace ``binder/start`` imports), listing ``demo/python-demo``
COMPLETED, with no login anywhere."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from conda_store_jupyter.builder.records import current_platform
from tests.test_binder import PANEL_ID, binder_lab, wait_demo_completed

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")


def test_binder_lab_opens_with_the_panel(tmp_path, local_channel, package_cache_dir, page, screenshots):  # noqa: F811
    with binder_lab(tmp_path, local_channel, package_cache_dir, "--LabApp.news_url=None",
                    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate") as lab, \
            httpx.Client(base_url=lab.url, headers={"Authorization": f"token {lab.token}"}, timeout=30) as client:
        wait_demo_completed(client, lab)
        page.goto(f"{lab.url}/lab?token={lab.token}")
        # Open at launch: nobody clicks the tab; the panel is the left area's current widget.
        expect(page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')).to_have_class(
            "lm-TabBar-tab lm-mod-current", timeout=60_000)
        panel = page.locator(f"#{PANEL_ID}")
        expect(panel).to_be_visible()
        row = panel.locator('li[data-environment="demo/python-demo"]')
        expect(row.locator("[data-status]")).to_have_text("COMPLETED", timeout=60_000)
        screenshots(page, "binder-lab")
        page.close()  # before Lab stops: its polling would log "connection refused" errors
