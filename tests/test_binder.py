"""``binder/start`` as Binder runs it: a standalone service in the background, then JupyterLab.

The real script with a real ``jupyter lab`` (free ports, private Jupyter and store directories):
Lab answers, the service answers *through the Lab extension* (so the exported URL and token
are the ones the extension uses), the demo environment on the local channel is COMPLETED, and
the default workspace opens the conda-store panel. Every process the script started, including
the service it left running in the background, is stopped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

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


def test_binder_start(tmp_path, local_channel, package_cache_dir):
    lab_port, service_port = free_port(), free_port()
    lab_token = secrets.token_hex(16)
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(
        tmp_path / "xdg",
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",  # binder/start runs `python` and `jupyter`
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        CONDA_STORE_BINDER_DIR=str(tmp_path / "binder"),
        CONDA_STORE_BINDER_PORT=str(service_port),
        CONDA_STORE_BINDER_CHANNEL=str(local_channel.path),  # already built for the suite
        CONDA_STORE_BINDER_PKGS=str(package_cache_dir),
    )
    log = tmp_path / "start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(START), "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={lab_port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={lab_token}",
             f"--ServerApp.root_dir={tmp_path}", *(["--allow-root"] if os.geteuid() == 0 else [])],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path,
            start_new_session=True,  # its own process group: the background service is in it too
        )
    lab = f"http://127.0.0.1:{lab_port}"
    client = httpx.Client(base_url=lab, headers={"Authorization": f"token {lab_token}"}, timeout=30)
    try:
        # -- Lab answers, with the workspace that opens the panel
        page = wait_for(lambda: client.get("/lab").status_code == 200, 180, "JupyterLab to answer", 0.3,
                        proc=proc, log=log, ignore=httpx.HTTPError)
        assert page
        workspace = client.get("/lab/api/workspaces/default").json()
        assert workspace["data"]["layout-restorer:data"]["left"]["current"] == PANEL_ID

        # -- the service answers through the extension (the URL and token binder/start exported)
        config = client.get("/conda-store/config").json()["data"]
        assert config["configured"] and config["reachable"], config
        assert config["user"]["primary_namespace"] == "demo", config
        r = client.get("/conda-store/api/v1/environment/")
        assert r.status_code == 200, r.text

        # -- the demo environment (submitted by --demo) is built on the local channel
        def demo_build():
            builds = client.get("/conda-store/api/v1/build/").json()["data"]
            return next((b for b in builds if b["status"] in ("COMPLETED", "FAILED")), None)

        build = wait_for(demo_build, BUILD_TIMEOUT, "the demo build to end", 0.5, proc=proc,
                         log=tmp_path / "binder" / "server.log")
        assert build["status"] == "COMPLETED", build
        env_ = client.get("/conda-store/api/v1/environment/demo/python-demo/").json()["data"]
        assert env_["current_build_id"] == build["id"]
        lockfile = client.get(f"/conda-store/api/v1/build/{build['id']}/lockfile/")
        assert lockfile.status_code == 200 and local_channel.url in lockfile.text, lockfile.text[:2000]
    finally:
        client.close()
        stop_group(proc.pid)  # Lab, and the service binder/start left running in the background
        proc.wait(10)
