"""``binder/start`` as Binder runs it: a standalone service in the background, then JupyterLab.

The real script with a real ``jupyter lab`` (free ports, private Jupyter and store directories):
Lab answers, the service answers *through the Lab extension* (so the exported URL and token
are the ones the extension uses), the demo environment on the local channel is COMPLETED, and
the default workspace opens the conda-store panel. Every process the script started, including
the service it left running in the background, is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conda_store_jupyter.builder.records import current_platform

from .processes import cli_env, free_port, stop_group, wait_for

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START = REPO / "binder" / "start"
BUILD_TIMEOUT = 240.0  # a loaded 2-core machine; alone the demo build takes ~10 s from the package cache
PANEL_ID = "conda-store-panel"  # labextension/src/lab/index.ts (PANEL_ID)

pytestmark = [
    pytest.mark.skipif(current_platform() != "linux-64", reason="the local test channel is linux-64"),
    pytest.mark.skipif(not (BIN / "jupyter-lab").exists(), reason="jupyterlab is not installed"),
]


def test_workspace_opens_the_panel():
    """binder/workspace.json: the conda-store panel is the left area's current, open widget."""
    workspace = json.loads((REPO / "binder" / "workspace.json").read_text())
    assert workspace["metadata"]["id"] == "default"
    left = workspace["data"]["layout-restorer:data"]["left"]
    assert left["current"] == PANEL_ID and PANEL_ID in left["widgets"] and not left["collapsed"]


@dataclass
class BinderLab:
    url: str  # JupyterLab, no trailing slash
    token: str  # Lab's own token (not the service's)
    proc: subprocess.Popen
    log: Path  # binder/start's and Lab's output
    service_log: Path


@contextlib.contextmanager
def binder_lab(tmp: Path, channel, package_cache: Path, *lab_args: str) -> Iterator[BinderLab]:
    """``binder/start jupyter lab …`` on free ports with private Jupyter/store directories; stops
    Lab and the service binder/start left in the background (one process group) on exit."""
    lab_port, service_port = free_port(), free_port()
    token = secrets.token_hex(16)
    home = tmp / "home"
    home.mkdir()
    env = cli_env(
        tmp / "xdg",
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",  # binder/start runs `python` and `jupyter`
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        CONDA_STORE_BINDER_DIR=str(tmp / "binder"),
        CONDA_STORE_BINDER_PORT=str(service_port),
        CONDA_STORE_BINDER_CHANNEL=str(channel.path),  # already built for the suite
        CONDA_STORE_BINDER_PKGS=str(package_cache),
    )
    log = tmp / "start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(START), "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={lab_port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}",
             *(["--allow-root"] if os.geteuid() == 0 else []), *lab_args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp,
            start_new_session=True,  # its own process group: the background service is in it too
        )
    lab = BinderLab(url=f"http://127.0.0.1:{lab_port}", token=token, proc=proc, log=log,
                    service_log=tmp / "binder" / "server.log")
    try:
        wait_for(lambda: httpx.get(f"{lab.url}/api/status", params={"token": token}, timeout=2).status_code == 200,
                 180, "JupyterLab to answer", 0.3, proc=proc, log=log, ignore=httpx.HTTPError)
        yield lab
    finally:
        stop_group(proc.pid)  # Lab, and the service binder/start left running in the background
        proc.wait(10)


def wait_demo_completed(client: httpx.Client, lab: BinderLab) -> dict:
    """The demo build (submitted by --demo), once it has ended; fails if it did not complete."""
    def ended():
        builds = client.get("/conda-store/api/v1/build/").json()["data"]
        return next((b for b in builds if b["status"] in ("COMPLETED", "FAILED")), None)

    build = wait_for(ended, BUILD_TIMEOUT, "the demo build to end", 0.5, proc=lab.proc, log=lab.service_log)
    assert build["status"] == "COMPLETED", build
    return build


def test_binder_start(tmp_path, local_channel, package_cache_dir):
    with binder_lab(tmp_path, local_channel, package_cache_dir) as lab, \
            httpx.Client(base_url=lab.url, headers={"Authorization": f"token {lab.token}"}, timeout=30) as client:
        # -- Lab answers, with the workspace that opens the panel
        assert client.get("/lab").status_code == 200
        workspace = client.get("/lab/api/workspaces/default").json()
        assert workspace["data"]["layout-restorer:data"]["left"]["current"] == PANEL_ID

        # -- the service answers through the extension (the URL and token binder/start exported)
        config = client.get("/conda-store/config").json()["data"]
        assert config["configured"] and config["reachable"], config
        assert config["user"]["primary_namespace"] == "demo", config
        r = client.get("/conda-store/api/v1/environment/")
        assert r.status_code == 200, r.text

        # -- the demo environment is built on the local channel
        build = wait_demo_completed(client, lab)
        env = client.get("/conda-store/api/v1/environment/demo/python-demo/").json()["data"]
        assert env["current_build_id"] == build["id"]
        lockfile = client.get(f"/conda-store/api/v1/build/{build['id']}/lockfile/")
        assert lockfile.status_code == 200 and local_channel.url in lockfile.text, lockfile.text[:2000]
