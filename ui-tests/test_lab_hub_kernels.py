"""Environments as kernels in JupyterLab, through a REAL JupyterHub (examples/jupyterhub_config.py
with one build worker): alice creates ``python + ipykernel + numpy`` from the panel; the
Launcher tile ``alice/kernelenv`` appears within 5 s of the build's COMPLETED; she opens a
notebook on it and runs ``import sys, numpy; print(sys.prefix)``, which prints the build's own
prefix; the panel shows the notebook's environment and build, the notebook's metadata records
it. Then a rebuild: the panel offers "Restart to use build N", the restart runs the new build and
the metadata follows. An environment without a kernel package is listed as such, with "Add
ipykernel and rebuild". Screenshots of the panel in Lab's light and dark themes.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from conda_store_jupyter.builder.records import current_platform
from tests.jupyter.hub_browser import hub_login
from tests.jupyter.test_hub_lab import lab, running_lab_hub, spawn
from tests.processes import wait_for
from tests.test_hub import chp  # noqa: F401 - a fixture of kernel_hub

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

SCREENSHOTS = Path(__file__).parent / "screenshots"
BUILD_TIMEOUT_MS = 300_000  # a loaded 2-core machine
SPEC = "name: kernelenv\ndependencies:\n  - python\n  - ipykernel\n  - numpy\n"
CELL = "import sys, numpy; print(sys.prefix)"
CURRENT_TAB = ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current"


@pytest.fixture(scope="module")
def kernel_hub(tmp_path_factory, chp, local_channel, package_cache_dir):  # noqa: F811
    tmp = tmp_path_factory.mktemp("kernelhub")
    config_dir = tmp / "jupyter-config"
    (config_dir / "labconfig").mkdir(parents=True)
    # The "official Jupyter news?" toast would sit over the panel in every screenshot.
    (config_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    extra = f"""
c.Spawner.args = ["--allow-root", "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: theme, launcher
                  "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
c.Spawner.environment = {{"JUPYTER_CONFIG_DIR": {str(config_dir)!r}}}
"""
    # LOCKFILE: the kernel records its sha256; no archive or image, which a same-host kernel does not use.
    with running_lab_hub(tmp, chp, local_channel, package_cache_dir, workers=1, extra_config=extra,
                         store_traits={"build_artifacts": ["LOCKFILE", "YAML"]}) as hub:
        yield hub


def run_cell(page, text: str) -> str:
    """Run ``text`` in the active notebook's last cell; the stream output once it is there."""
    # Lab runs nothing (and says nothing) before the kernel is connected: wait for the status bar's
    # "<kernel> | Idle" (the toolbar's indicator says idle before there is a kernel at all).
    expect(page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"\| Idle$"))).to_be_visible(timeout=120_000)
    cells = page.locator(".jp-NotebookPanel:visible .jp-Cell")
    expect(cells.first).to_be_visible()
    cell = cells.nth(cells.count() - 1)  # by index: running it adds a new last cell
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output")
    expect(output).to_have_count(1, timeout=120_000)
    return output.inner_text().strip()


def save(page) -> None:
    """File > Save of the notebook tab (the shortcut would need the focus in the notebook)."""
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=".ipynb").click()
    # Not awaited: the first save of an untitled notebook asks for a name (Lab's default), kept here.
    page.evaluate("() => { void window.jupyterapp.commands.execute('docmanager:save'); }")
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(timeout=3_000)
    except PlaywrightTimeout:
        return
    dialog.locator(".jp-mod-accept").click()
    expect(dialog).to_have_count(0)


def ended(build: dict) -> float:
    """The build's ``ended_on`` (UTC; a naive timestamp is UTC) as epoch seconds."""
    when = datetime.fromisoformat(build["ended_on"])
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def panel_screenshots(page, name: str) -> None:
    """Lab's own themes: light, then dark, then back."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for theme, suffix in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
        page.evaluate("theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme)
        expect(page.locator("body")).to_have_attribute("data-jp-theme-name", theme, timeout=30_000)
        expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=30_000)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{suffix}.png"))
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", "JupyterLab Light", timeout=30_000)


def test_alice_creates_a_kernel_environment_and_runs_a_notebook_on_it(kernel_hub, browser):
    hub = kernel_hub
    token = spawn(hub, "alice")
    # An environment without a kernel package, made before Lab opens: listed as such.
    plain = lab(hub, "alice", token, "POST", "api/v1/specification/",
                json={"namespace": "alice", "specification": "name: plain\ndependencies:\n  - hello\n"})
    assert plain.status_code == 200, plain.text

    context, page, errors = hub_login(browser, hub, "alice", viewport=(1280, 860))
    try:
        panel = page.locator("#conda-store-panel")
        plain_row = panel.locator('li[data-environment="alice/plain"]')
        expect(plain_row.locator("[data-kernel-status]")).to_have_attribute(
            "data-kernel-status", "no-kernel-package", timeout=BUILD_TIMEOUT_MS)
        expect(plain_row.get_by_role("button", name="Add ipykernel to alice/plain and rebuild")).to_be_enabled()

        # -- alice creates python + ipykernel + numpy in the panel (a Launcher open behind it)
        page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
        expect(page.locator(".jp-Launcher:visible .jp-LauncherCard").first).to_be_visible(timeout=30_000)
        panel.get_by_role("button", name="New environment").click()
        main = page.locator(".cs-lab-view:visible")
        main.get_by_label("environment.yaml").fill(SPEC)
        expect(main.get_by_test_id("validation")).to_contain_text("Valid: creates or updates alice/kernelenv",
                                                                  timeout=10_000)
        # When the tile first exists in any Launcher (hidden ones too), stamped in the page itself.
        page.evaluate("""() => {
            window.__tileAt = null;
            const timer = setInterval(() => {
                const cards = document.querySelectorAll('.jp-LauncherCard[data-category="Notebook"]');
                if ([...cards].some((c) => c.textContent.includes('alice/kernelenv'))) {
                    window.__tileAt = Date.now();
                    clearInterval(timer);
                }
            }, 50);
        }""")
        main.get_by_role("button", name="Create and build").click()
        expect(page.locator(CURRENT_TAB)).to_contain_text(re.compile(r"Build #\d+"))
        build_id = int(re.search(r"Build #(\d+)", page.locator(CURRENT_TAB).inner_text()).group(1))

        # -- the Build tab streams the live log through her server: under the hub an EventSource's
        # cookie counts only with the `_xsrf` argument (a 403 showed "closed by the server" before)
        build_view = page.locator(".cs-lab-view:visible")
        expect(build_view.get_by_test_id("build-log")).to_contain_text("-- ", timeout=BUILD_TIMEOUT_MS)
        expect(build_view.get_by_test_id("log-state")).to_have_text(re.compile(r"^[1-9]\d* lines$"),
                                                                     timeout=BUILD_TIMEOUT_MS)
        expect(build_view.get_by_text("live log stream was closed")).to_have_count(0)
        panel_screenshots(page, "lab-hub-build-live-log")

        # -- the tile appears within 5 s of COMPLETED
        page.wait_for_function("() => window.__tileAt !== null", polling=100, timeout=BUILD_TIMEOUT_MS)
        shown = page.evaluate("() => window.__tileAt") / 1000
        build = lab(hub, "alice", token, "GET", f"api/v1/build/{build_id}/").json()["data"]
        assert build["status"] == "COMPLETED", build
        lag = shown - ended(build)
        print(f"\nlauncher tile {lag:.2f} s after COMPLETED (target <= 5 s)")
        assert lag <= 5.0, f"the launcher tile came {lag:.1f} s after the build completed"

        # -- she opens a notebook on it and runs a cell: the build's own prefix
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Launcher").first.click()
        page.locator('.jp-Launcher:visible .jp-LauncherCard[data-category="Notebook"]', has_text="alice/kernelenv").click()
        expect(page.locator(CURRENT_TAB)).to_contain_text(".ipynb", timeout=30_000)
        printed = run_cell(page, CELL)
        sessions = sessions_of(hub, "alice", token)
        [session] = [s for s in sessions if s["kernel"] and s["kernel"]["name"] != "python3"]
        kernel_id = session["kernel"]["id"]
        running = lab(hub, "alice", token, "GET", f"kernels/running/{kernel_id}").json()
        assert running["build_id"] == build_id and running["source"] == "store", running
        assert printed == running["prefix"], (printed, running)

        # -- the panel shows which environment and build the notebook runs
        active = panel.get_by_role("region", name="Active notebook kernel")
        expect(active.locator('[data-field="environment"]')).to_have_text("alice/kernelenv", timeout=15_000)
        expect(active.locator('[data-field="build"]')).to_have_text(f"#{build_id}")
        expect(active.locator('[data-field="newer"]')).to_have_count(0)
        row = panel.locator('li[data-environment="alice/kernelenv"]')
        expect(row.locator("[data-kernel-status]")).to_have_attribute("data-kernel-status", "ready")
        panel_screenshots(page, "lab-kernels-panel")

        # -- the notebook's metadata records the build (saved: read from alice's home)
        path = session["path"]
        save(page)
        notebook_file = hub.tmp / "home" / "alice" / path

        def saved_record() -> dict:
            try:
                return json.loads(notebook_file.read_text())["metadata"].get("conda_store", {})
            except (OSError, ValueError):
                return {}

        wait_for(lambda: saved_record().get("build_id") == build_id, 30, "the saved notebook's record", log=hub.log)
        record = saved_record()
        assert record == {"namespace": "alice", "environment": "kernelenv", "build_id": build_id,
                          "lockfile_sha256": running["lockfile_sha256"], "started": running["started"]}, record

        # -- a rebuild: the running kernel is untouched; the panel offers the restart to it
        row.get_by_role("button", name="Actions for alice/kernelenv").click()
        row.get_by_role("button", name="Rebuild").click()
        expect(page.locator(CURRENT_TAB)).to_contain_text(re.compile(r"Build #\d+"))
        second = int(re.search(r"Build #(\d+)", page.locator(CURRENT_TAB).inner_text()).group(1))
        assert second != build_id
        restart = active.get_by_role("button", name=f"Restart to use build {second}")
        expect(restart).to_be_visible(timeout=BUILD_TIMEOUT_MS)
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=".ipynb").click()
        panel_screenshots(page, "lab-kernels-restart")

        # -- the pin: "always use build N" is saved in the notebook; a restart then keeps that build
        pin = active.get_by_role("button", name=f"Always use build {build_id}")
        pin.focus()  # keyboard: a real button, Enter works
        page.keyboard.press("Enter")
        expect(active.locator('[data-field="pin"]')).to_contain_text(f"Always uses build {build_id}.")
        expect(restart).to_have_count(0)  # pinned: the current build is not offered
        wait_for(lambda: saved_record().get("pin_build") == build_id, 30, "the saved pin", log=hub.log)
        restarted = lab_api(hub, "alice", token, "POST", f"api/kernels/{kernel_id}/restart")
        assert restarted.status_code == 200, restarted.text
        pinned = lab(hub, "alice", token, "GET", f"kernels/running/{kernel_id}").json()
        assert pinned["build_id"] == build_id and pinned["pinned"] == build_id, pinned
        assert run_cell(page, CELL) == running["prefix"]
        save(page)  # the restart's record, pin kept
        wait_for(lambda: saved_record().get("started") == pinned["started"], 30, "the pinned restart's record",
                 log=hub.log)
        assert saved_record()["pin_build"] == build_id and saved_record()["build_id"] == build_id

        # -- unpinned: the current build is offered again, and the restart runs it
        active.get_by_role("button", name=re.compile(f"^Unpin build {build_id}")).click()
        wait_for(lambda: "pin_build" not in saved_record(), 30, "the pin removed from the saved notebook",
                 log=hub.log)
        expect(restart).to_be_visible()
        restart.click()
        expect(active.locator('[data-field="build"]')).to_have_text(f"#{second}", timeout=60_000)
        after = lab(hub, "alice", token, "GET", f"kernels/running/{kernel_id}").json()
        assert after["build_id"] == second and after["prefix"] != running["prefix"], after
        assert run_cell(page, CELL) == after["prefix"]
        save(page)
        wait_for(lambda: saved_record().get("build_id") == second, 30, "the record of the restart", log=hub.log)
        assert "pin_build" not in saved_record()

        # -- "Add ipykernel and rebuild": the environment without a kernel package becomes one
        plain_row.get_by_role("button", name="Add ipykernel to alice/plain and rebuild").focus()
        page.keyboard.press("Space")
        expect(page.locator(CURRENT_TAB)).to_contain_text(re.compile(r"Build #\d+"))
        expect(plain_row.locator("[data-kernel-status]")).to_have_attribute("data-kernel-status", "ready",
                                                                            timeout=BUILD_TIMEOUT_MS)
        env = lab(hub, "alice", token, "GET", "api/v1/environment/alice/plain/").json()["data"]
        current = lab(hub, "alice", token, "GET", f"api/v1/build/{env['current_build_id']}/").json()["data"]
        assert current["specification"]["spec"]["dependencies"] == ["hello", "ipykernel"], current
        assert not [e for e in errors if "status of 4" not in e], errors
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "lab-kernels-failure.png"))
        raise
    finally:
        context.close()


def lab_api(hub, user: str, token: str, method: str, path: str) -> httpx.Response:
    """Jupyter server's own REST API of ``user`` (not the extension's)."""
    return httpx.request(method, f"{hub.public_url}/user/{user}/{path}", headers={"Authorization": f"token {token}"},
                         timeout=120)


def sessions_of(hub, user: str, token: str) -> list[dict]:
    answer = httpx.get(f"{hub.public_url}/user/{user}/api/sessions", headers={"Authorization": f"token {token}"},
                       timeout=30)
    answer.raise_for_status()
    return answer.json()
