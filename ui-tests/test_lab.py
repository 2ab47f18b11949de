"""The JupyterLab host end to end: plain ``jupyter lab`` (this package's server extension and
lab extension, as installed) configured with ``CONDA_STORE_URL`` / ``CONDA_STORE_TOKEN`` for a
real ``conda-store-server --standalone``, driven in Chromium.

The sidebar panel lists alice's environments → "New environment" from the panel opens the
create view in a Lab tab → the build's log streams in that tab → a notification says it
completed → the panel shows it COMPLETED → its lockfile downloads from the panel → after a
reload the tab is restored. Screenshots of the panel in Lab's light and dark themes. A service
that is down gives the extension's message in the panel, not a spinner.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from conda_store_jupyter.builder.records import current_platform
from tests.processes import free_port, stop_process, wait_for

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

BUILD_TIMEOUT_MS = 300_000  # a loaded 2-core machine; a build of the local channel takes seconds alone
SPEC = "name: labenv\ndescription: made in JupyterLab\ndependencies:\n  - python 3.11.*\n  - hello\n"
BIN = Path(sys.executable).parent
SCREENSHOTS = Path(__file__).parent / "screenshots"
PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="conda-store-panel"]'


@dataclass
class Lab:
    url: str  # with a trailing slash
    log: Path


def start_lab(tmp: Path, service_url: str, token: str):
    """``jupyter lab`` without auth on a free loopback port; its own config, settings and
    workspace directories, and no outside CONDA_STORE_* / JUPYTERHUB_* settings."""
    config_dir = tmp / "config"
    (config_dir / "labconfig").mkdir(parents=True)
    # The "official Jupyter news?" toast would sit over the panel in every screenshot.
    (config_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA_STORE", "JUPYTERHUB"))}
    env.update(CONDA_STORE_URL=service_url, CONDA_STORE_TOKEN=token, JUPYTER_CONFIG_DIR=str(config_dir),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    port = free_port()
    log = tmp / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
             "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp}",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.expose_app_in_browser=True"],  # window.jupyterapp: the theme switch below
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: httpx.get(f"{url}api/status", timeout=2).status_code == 200, 120, "jupyter lab to answer",
                 0.3, proc=proc, log=log, ignore=httpx.HTTPError)
    except BaseException:
        stop_process(proc, group=True)
        raise
    return proc, Lab(url=url, log=log)


def issue_token(standalone, username: str) -> str:
    """An API token of ``username``: password login, then a token from the session."""
    with httpx.Client(base_url=standalone.url, timeout=30) as client:
        client.post("login/", json={"username": username, "password": standalone.password}).raise_for_status()
        answer = client.post("api/v1/token/", json={"note": "jupyter lab test"})
        answer.raise_for_status()
        return answer.json()["data"]["token"]


@pytest.fixture(scope="module")
def alice_lab(standalone, tmp_path_factory):
    token = issue_token(standalone, "alice")
    # One environment before Lab starts: the panel must list what exists.
    httpx.post(f"{standalone.url}api/v1/specification/", headers={"Authorization": f"Bearer {token}"}, timeout=30,
               json={"namespace": "alice", "specification": "name: seeded\ndependencies:\n  - hello\n"}
               ).raise_for_status()
    proc, lab = start_lab(tmp_path_factory.mktemp("lab-alice"), standalone.url, token)
    try:
        yield lab
    finally:
        stop_process(proc, group=True)


def open_panel(page, lab: Lab):
    page.goto(f"{lab.url}lab", wait_until="domcontentloaded")
    tab = page.locator(PANEL_TAB)
    tab.wait_for(timeout=60_000)
    if tab.get_attribute("aria-selected") != "true":
        tab.click()
    panel = page.locator("#conda-store-panel")
    expect(panel).to_be_visible()
    return panel


def panel_screenshots(page, name: str) -> None:
    """Lab's own themes (not the browser's colour scheme): light, then dark, then back."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for theme, suffix in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
        page.evaluate("theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme)
        expect(page.locator("body")).to_have_attribute("data-jp-theme-name", theme, timeout=30_000)
        expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=30_000)  # shown while the theme loads
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{suffix}.png"))
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", "JupyterLab Light", timeout=30_000)


def test_lab_panel_create_watch_notify_download(alice_lab, page):
    panel = open_panel(page, alice_lab)
    seeded = panel.locator('li[data-environment="alice/seeded"]')
    expect(seeded).to_be_visible(timeout=30_000)
    expect(panel.get_by_role("heading", name="alice")).to_be_visible()

    # -- create from the panel: the create view opens in a main-area tab
    panel.get_by_role("button", name="New environment").click()
    main = page.locator(".cs-lab-view:visible")
    editor = main.get_by_label("environment.yaml")
    editor.fill(SPEC)
    expect(main.get_by_test_id("validation")).to_contain_text("Valid: creates or updates alice/labenv", timeout=10_000)
    main.get_by_role("button", name="Create and build").click()

    # -- the same tab becomes the build, its log streams live, and Lab notifies the end
    tab = page.locator(".jp-MainAreaWidget.cs-lab-tab:visible")
    expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")).to_contain_text(re.compile(r"Build #\d+"))
    build_id = int(re.search(r"Build #(\d+)", page.locator(
        ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").inner_text()).group(1))
    expect(tab.get_by_test_id("build-log")).not_to_be_empty(timeout=BUILD_TIMEOUT_MS)
    expect(page.get_by_text(f"Build #{build_id} of alice/labenv completed")).to_be_visible(timeout=BUILD_TIMEOUT_MS)
    expect(tab.get_by_test_id("build-status")).to_have_text("COMPLETED")
    expect(tab.get_by_role("list", name="Build steps")).to_contain_text("solve")

    # -- the panel follows: COMPLETED, and the lockfile downloads from it
    row = panel.locator('li[data-environment="alice/labenv"]')
    expect(row.locator("[data-status]")).to_have_text("COMPLETED", timeout=30_000)
    row.get_by_role("button", name="Actions for alice/labenv").click()
    with page.expect_download() as download:
        row.get_by_role("link", name="Download the Lockfile of alice/labenv").click()
    lockfile = Path(download.value.path()).read_text()
    assert "hello" in lockfile and "sha256" in lockfile, lockfile[:500]
    panel_screenshots(page, "lab-panel")
    row.get_by_role("button", name="Copy run line").click()
    expect(page.get_by_text("Copied the conda-store run line: conda-store run alice/labenv -- python")).to_be_visible()

    # -- open the environment from the panel: its view in a tab of its own
    row.get_by_role("button", name="Open alice/labenv").click()
    expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")).to_have_text("alice/labenv")
    expect(page.locator(".cs-lab-view:visible").get_by_role("table", name="Builds")).to_contain_text(f"#{build_id}")

    # -- the filter box
    panel.get_by_placeholder("Filter environments").fill("lab")
    expect(panel.locator("li[data-environment]")).to_have_count(1)
    panel.get_by_placeholder("Filter environments").fill("")

    # -- the palette: conda-store's commands are there
    page.keyboard.press("Control+Shift+C")
    palette = page.locator(".lm-CommandPalette:visible")
    palette.locator("input").fill("conda-store namespaces")
    palette.locator(".lm-CommandPalette-item", has_text="conda-store: Namespaces").click()
    expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")).to_have_text("Namespaces")
    expect(page.locator(".cs-lab-view:visible").get_by_role("heading", name="Namespaces")).to_be_visible()

    # -- reload: the build tab comes back (layout restorer)
    page.reload(wait_until="domcontentloaded")
    expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"Build #{build_id}")).to_be_visible(
        timeout=60_000)
    expect(page.locator(".cs-lab-view:visible").get_by_test_id("build-status")).to_have_text("COMPLETED")


def test_lab_panel_service_down(browser, tmp_path):
    """Nothing listens at the configured URL: the panel says so in the extension's words."""
    dead = f"http://127.0.0.1:{free_port()}/"
    proc, lab = start_lab(tmp_path, dead, "cst_unused")
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        panel = open_panel(page, lab)
        alert = panel.get_by_role("alert")
        expect(alert).to_contain_text("conda-store is not available.", timeout=30_000)
        expect(alert).to_contain_text(f"conda-store service at {dead.rstrip('/')}")
        expect(alert).to_contain_text("is not reachable: connection refused")
        expect(panel.get_by_role("status")).to_have_count(0)  # no "Loading…" left behind
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "lab-panel-service-down.png"))
    finally:
        context.close()
        stop_process(proc, group=True)
