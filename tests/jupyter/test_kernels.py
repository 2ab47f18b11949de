"""Real kernels from real builds (``python + ipykernel + numpy`` from the local test channel),
started through the extension the way JupyterLab does (a notebook session), end to end:

- the kernelspec appears within 5 s of COMPLETED;
- the kernel runs the current build from the build's own store prefix, a restart after a rebuild
  runs the new build, a pin saved in the notebook keeps the old one;
- the remote case: a server that does not use the store path (``use_store_path`` off, as for a
  store it cannot see) fetches the archive, unpacks it once into the ``conda-store run`` cache,
  and the next start uses the cache.

One test, because each build costs seconds: the steps share two builds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from conda_store_jupyter.cli import _run
from conda_store_jupyter.jupyter.kernels import backend as backends
from conda_store_jupyter.jupyter.kernels import cache
from conda_store_jupyter.jupyter.kernels.specs import kernel_name
from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.server.testing import user_token

from .test_extension import EXTENSION, service, service_env, wait_status  # noqa: F401 - shared fixtures
from .test_kernels_backend import run_cell, wait_for

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

SPEC = "name: py\ndependencies:\n  - python\n  - ipykernel\n  - numpy\n"
CELL = "import sys, numpy; print(sys.prefix)"


@pytest.fixture
def jp_server_config(service, monkeypatch):  # noqa: F811
    """As the README tells a user: the CLI's variables, every kernel setting at its default."""
    monkeypatch.setenv("CONDA_STORE_URL", service.url)
    monkeypatch.setenv("CONDA_STORE_TOKEN", user_token(service, "alice"))
    extensions = {EXTENSION: True, "jupyter_server_terminals": False}
    return {"ServerApp": {"jpserver_extensions": extensions, "allow_unauthenticated_access": False}}


async def api(jp_fetch, *path: str, method: str = "GET", body: dict | None = None) -> dict:
    # long enough for a first start that downloads and unpacks the environment on a busy CI box
    r = await jp_fetch(*path, method=method, body=json.dumps(body) if body is not None else None,
                       request_timeout=180)
    return json.loads(r.body) if r.body else {}


async def printed_prefix(jp_serverapp, kernel_id: str) -> str:
    reply, outputs = await run_cell(jp_serverapp, kernel_id, CELL)
    assert reply["status"] == "ok", reply
    return "".join(o.get("text", "") for o in outputs if o["type"] == "stream").strip()


def save_pin(notebook: Path, pin: int | None) -> None:
    """What the panel does: set/clear the pin in the notebook's metadata and save it."""
    nb = json.loads(notebook.read_text())
    meta = nb["metadata"].setdefault("conda_store", {"namespace": "alice", "environment": "py"})
    meta.pop("pin_build", None)
    if pin is not None:
        meta["pin_build"] = pin
    notebook.write_text(json.dumps(nb))


async def test_kernel_follows_builds_and_pins(jp_fetch, jp_serverapp, jp_root_dir, service, service_env,  # noqa: F811
                                              tmp_path, monkeypatch):
    service_env.start_worker()
    store = service.app.store
    first = (await api(jp_fetch, "conda-store", "api", "v1", "specification/", method="POST",
                       body={"namespace": "alice", "specification": SPEC}))["data"]["build_id"]
    assert await wait_status(store, first, {BuildStatus.COMPLETED, BuildStatus.FAILED}) == BuildStatus.COMPLETED, \
        service_env.worker_logs()[-3000:]
    completed = time.monotonic()
    name = kernel_name("alice", "py")

    async def listed():
        specs = (await api(jp_fetch, "api", "kernelspecs"))["kernelspecs"]
        return name in specs

    await wait_for(listed, 5.0, "the kernelspec within 5 s of COMPLETED")
    assert time.monotonic() - completed < 5.0

    # A notebook session, as JupyterLab opens one: JPY_SESSION_NAME names the notebook.
    notebook = Path(jp_root_dir) / "analysis.ipynb"
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    session = await api(jp_fetch, "api", "sessions", method="POST",
                        body={"path": "analysis.ipynb", "type": "notebook", "name": "analysis.ipynb",
                              "kernel": {"name": name}})
    kernel_id = session["kernel"]["id"]
    build1 = (await api(jp_fetch, "conda-store", "kernels", "running", kernel_id))
    assert build1["build_id"] == first and build1["source"] == "store" and build1["pinned"] is None
    assert build1["lockfile_sha256"] and len(build1["lockfile_sha256"]) == 64
    prefix1 = build1["prefix"]
    assert Path(prefix1).parent.parent.name == "builds" and f"-{first}-py" in Path(prefix1).name
    assert await printed_prefix(jp_serverapp, kernel_id) == prefix1  # the build's own prefix, not a symlink

    # A rebuild: the running kernel is not disturbed; a restart runs the new build.
    second = (await api(jp_fetch, "conda-store", "api", "v1", "build", f"{first}/", method="PUT", body={}))["data"]["build_id"]
    assert await wait_status(store, second, {BuildStatus.COMPLETED, BuildStatus.FAILED}) == BuildStatus.COMPLETED
    assert await printed_prefix(jp_serverapp, kernel_id) == prefix1
    assert (await api(jp_fetch, "conda-store", "kernels", "running", kernel_id))["current_build_id"] == second
    await api(jp_fetch, "api", "kernels", kernel_id, "restart", method="POST", body={})
    build2 = await api(jp_fetch, "conda-store", "kernels", "running", kernel_id)
    assert build2["build_id"] == second and build2["prefix"] != prefix1
    assert await printed_prefix(jp_serverapp, kernel_id) == build2["prefix"]

    # A pin saved in the notebook keeps the old build across restarts.
    save_pin(notebook, first)
    await api(jp_fetch, "api", "kernels", kernel_id, "restart", method="POST", body={})
    pinned = await api(jp_fetch, "conda-store", "kernels", "running", kernel_id)
    assert pinned["build_id"] == first and pinned["pinned"] == first and pinned["current_build_id"] == second
    assert await printed_prefix(jp_serverapp, kernel_id) == prefix1
    save_pin(notebook, None)

    # The remote case: the store path is not used; the archive is fetched and unpacked ONCE.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    backend = backends.current()
    backend.options = dataclasses.replace(backend.options, use_store_path=False)
    downloads: list[int] = []
    real_download = cache.download
    monkeypatch.setattr(cache, "download", lambda src, build_id, dest, **kw: downloads.append(build_id)
                        or real_download(src, build_id, dest, **kw))
    began = time.monotonic()
    await api(jp_fetch, "api", "kernels", kernel_id, "restart", method="POST", body={})
    print(f"first start from the archive (download + unpack): {time.monotonic() - began:.1f} s")
    remote = await api(jp_fetch, "conda-store", "kernels", "running", kernel_id)
    assert remote["build_id"] == second and remote["source"] == "cache"
    cache_root = _run.cache_root()
    assert Path(remote["prefix"]).is_relative_to(cache_root) and (Path(remote["prefix"]) / _run.MARKER).is_file()
    assert await printed_prefix(jp_serverapp, kernel_id) == remote["prefix"]
    await api(jp_fetch, "api", "kernels", kernel_id, "restart", method="POST", body={})
    again = await api(jp_fetch, "conda-store", "kernels", "running", kernel_id)
    assert again["prefix"] == remote["prefix"] and again["source"] == "cache"
    assert downloads == [second]  # the second start used the cache
    await api(jp_fetch, "api", "sessions", session["id"], method="DELETE")
