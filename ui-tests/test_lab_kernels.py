"""Environment kernels in a real JupyterLab (plain ``jupyter lab`` configured as the README says,
a real ``conda-store-server --standalone``), driven in Chromium:

- the Launcher has a tile ``alice/kernelenv`` for an environment built with ipykernel + numpy;
- a notebook on it runs ``import sys, numpy; print(sys.prefix)`` and prints the build's own prefix;
- a notebook pinned to a build that does not exist gets the fallback kernel, whose answer to
  the cell is what went wrong and what to do (screenshots, Lab light and dark).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.jupyter.kernels.specs import kernel_name
from tests.processes import stop_process, wait_for
from test_lab import BUILD_TIMEOUT_MS, SCREENSHOTS, issue_token, start_lab  # ui-tests/ is on sys.path

pytestmark = pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64")

SPEC = "name: kernelenv\ndependencies:\n  - python\n  - ipykernel\n  - numpy\n"
CELL = "import sys, numpy; print(sys.prefix)"
KERNEL = kernel_name("alice", "kernelenv")


def notebook(path: Path, conda_store: dict | None = None) -> None:
    metadata: dict = {"kernelspec": {"name": KERNEL, "display_name": "alice/kernelenv", "language": "python"}}
    if conda_store is not None:
        metadata["conda_store"] = conda_store
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": [
        {"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": None, "outputs": [], "source": CELL}]}))


def app_ready(page, command: str) -> None:
    page.wait_for_function(f"() => window.jupyterapp && window.jupyterapp.commands.hasCommand('{command}')",
                           timeout=60_000)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=60_000)


def run_all(page, lab_url: str, name: str):
    page.goto(f"{lab_url}lab/tree/{name}?reset", wait_until="domcontentloaded")  # ?reset: only this notebook
    app_ready(page, "notebook:run-all-cells")
    panel = page.locator(".jp-NotebookPanel:visible")
    page.wait_for_function(  # this notebook is the current widget and its kernel has started
        "name => { const w = window.jupyterapp.shell.currentWidget;"
        " return w?.context?.path === name && w.sessionContext?.session?.kernel?.status === 'idle'; }",
        arg=name, timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    return panel.locator(".jp-OutputArea-output")


def test_launcher_tile_notebook_and_fallback(standalone, browser, tmp_path):
    token = issue_token(standalone, "alice")
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{standalone.url}api/v1/specification/", headers=auth, timeout=30,
                   json={"namespace": "alice", "specification": SPEC})
    r.raise_for_status()
    build_id = r.json()["data"]["build_id"]
    wait_for(lambda: httpx.get(f"{standalone.url}api/v1/build/{build_id}/", headers=auth, timeout=30
                               ).json()["data"]["status"] in ("COMPLETED", "FAILED"), BUILD_TIMEOUT_MS / 1000,
             f"build {build_id}", 0.5)
    (entry,) = httpx.get(f"{standalone.url}api/v1/kernels/", headers=auth, timeout=30,
                         params={"namespace": "alice", "environment": "kernelenv"}).json()["data"]
    assert entry["build"]["status"] == "COMPLETED", entry
    prefix = entry["build"]["prefix"]

    notebook(tmp_path / "analysis.ipynb")
    notebook(tmp_path / "pinned.ipynb", {"namespace": "alice", "environment": "kernelenv", "pin_build": 9999})
    proc, lab = start_lab(tmp_path, standalone.url, token)
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{lab.url}lab", wait_until="domcontentloaded")
        app_ready(page, "launcher:create")
        page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
        tile = page.locator(".jp-LauncherCard[title='alice/kernelenv']").first
        expect(tile).to_be_visible(timeout=60_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "lab-kernels-launcher.png"))

        output = run_all(page, lab.url, "analysis.ipynb")
        expect(output).to_have_text(prefix, timeout=120_000)  # the build's own prefix

        output = run_all(page, lab.url, "pinned.ipynb")
        expect(output).to_contain_text("KernelUnavailable", timeout=120_000)
        expect(output).to_contain_text("This notebook is pinned to build 9999 (metadata.conda_store.pin_build), "
                                       "which is not a build of alice/kernelenv. Clear the pin")
        for theme, suffix in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
            page.evaluate("theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme)
            expect(page.locator("body")).to_have_attribute("data-jp-theme-name", theme, timeout=30_000)
            expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / f"lab-kernels-fallback-{suffix}.png"))
    finally:
        context.close()
        stop_process(proc, group=True)
