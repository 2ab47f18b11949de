"""Environment kernels through the real extension, without running a build: the kernelspec list
follows the service within seconds, the panel's routes, and the fallback kernel that answers
every execution with the reason when a kernel cannot start. (Real kernels: test_kernels.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from conda_store_jupyter.jupyter.kernels.specs import kernel_name
from conda_store_jupyter.server.testing import user_token

from ..kernel_rows import add_build
from ..processes import free_port
from .test_extension import EXTENSION, service, service_env  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")


@pytest.fixture
def kernel_traits(request, service) -> dict:  # noqa: F811
    traits = {"url": service.url, "token": user_token(service, "alice"), "kernel_refresh_interval": 0.5}
    traits.update(getattr(request, "param", {}))
    return traits


@pytest.fixture
def jp_server_config(kernel_traits):
    extensions = {EXTENSION: True, "jupyter_server_terminals": False}
    return {"ServerApp": {"jpserver_extensions": extensions, "allow_unauthenticated_access": False},
            "CondaStoreExtension": kernel_traits}


async def kernelspecs(jp_fetch) -> dict:
    return json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)  # the server under test runs on this loop


async def run_cell(jp_serverapp, kernel_id: str, code: str) -> tuple[dict, list[dict]]:
    """Execute ``code`` in a kernel of the server; (execute_reply content, iopub outputs)."""
    kc = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        outputs: list[dict] = []
        reply = await kc.execute_interactive(
            code, timeout=60, output_hook=lambda m: outputs.append({"type": m["msg_type"], **m["content"]}))
        return reply["content"], outputs
    finally:
        kc.stop_channels()


async def test_a_completed_build_is_a_kernelspec_within_seconds(jp_fetch, jp_serverapp, service):  # noqa: F811
    store = service.app.store
    add_build(store, "alice", "plain", ["python"])  # no kernel package: listed by the panel, no kernelspec
    before = await kernelspecs(jp_fetch)
    start = time.monotonic()
    build = add_build(store, "alice", "py", ["python", "ipykernel"])  # the moment it is COMPLETED
    name = kernel_name("alice", "py")
    specs = await wait_for(lambda: _has(jp_fetch, name), 5.0, f"{name} in /api/kernelspecs")
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    spec = specs[name]["spec"]
    assert spec["display_name"] == "alice/py" and spec["language"] == "python"
    assert spec["metadata"]["conda_store"] == {"namespace": "alice", "environment": "py"}
    assert set(before) <= set(specs)  # the user's other kernels are still there
    assert kernel_name("alice", "plain") not in specs

    # the panel's view: every environment, with why one has no kernel
    r = await jp_fetch("conda-store", "kernels")
    listing = json.loads(r.body)
    by_env = {k["environment"]: k for k in listing["kernels"]}
    assert by_env["py"] == {"namespace": "alice", "environment": "py", "kernel_name": name,
                            "display_name": "alice/py", "build_id": build, "language": "python",
                            "status": "ready", "message": f"build {build} (ipykernel 1.0)"}
    assert by_env["plain"]["status"] == "no-kernel-package" and by_env["plain"]["kernel_name"] is None
    assert "add ipykernel and rebuild" in by_env["plain"]["message"]
    version = listing["version"]
    r = await jp_fetch("conda-store", "kernels", "refresh", method="POST", body=b"")
    assert json.loads(r.body)["version"] == version  # nothing changed: same version

    # a rebuild keeps the same kernel (one per environment, never one per build)
    newer = add_build(store, "alice", "py", ["python", "ipykernel", "numpy"])
    r = await jp_fetch("conda-store", "kernels", "refresh", method="POST", body=b"")
    refreshed = json.loads(r.body)
    assert refreshed["version"] != version
    assert [k["build_id"] for k in refreshed["kernels"] if k["environment"] == "py"] == [newer]
    assert [n for n in await kernelspecs(jp_fetch) if n.startswith("conda-store-")] == [name]


async def _has(jp_fetch, name: str) -> dict | None:
    specs = await kernelspecs(jp_fetch)
    return specs if name in specs else None


async def test_fallback_kernel_answers_with_the_reason(jp_fetch, jp_serverapp, service):  # noqa: F811
    # COMPLETED with ipykernel, but its files are nowhere this server can see and it has no archive
    build = add_build(service.app.store, "alice", "py", ["python", "ipykernel"])
    # No archive because its environment's settings switch conda-pack off (a 404, never a pending 409).
    from conda_store_jupyter import api

    store = service.app.store
    api.in_transaction(store, lambda db: api.update_settings(db, store, api.Scope("alice", "py"),
                                                             {"build_artifacts": ["LOCKFILE", "YAML"]}))
    name = kernel_name("alice", "py")
    await wait_for(lambda: _has(jp_fetch, name), 5.0, f"{name} in /api/kernelspecs")
    kernel_id = await jp_serverapp.kernel_manager.start_kernel(kernel_name=name)
    try:
        reply, outputs = await run_cell(jp_serverapp, kernel_id, "import sys, numpy; print(sys.prefix)")
        assert reply["status"] == "error" and reply["ename"] == "KernelUnavailable"
        assert f"build {build} of alice/py is not on this server's filesystem" in reply["evalue"]
        assert "no conda-pack archive" in reply["evalue"] and "CONDA_PACK" in reply["evalue"]  # what to do
        assert [o["evalue"] for o in outputs if o["type"] == "error"] == [reply["evalue"]]
        r = await jp_fetch("conda-store", "kernels", "running", kernel_id)
        running = json.loads(r.body)
        assert running["build_id"] == build and running["current_build_id"] == build
        assert running["error"] == reply["evalue"] and running["prefix"] is None
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)
    r = await jp_fetch("conda-store", "kernels", "running", kernel_id, raise_error=False)
    assert r.code == 404  # gone with the kernel


async def test_fallback_when_the_service_is_down(jp_fetch, jp_serverapp, service):  # noqa: F811
    add_build(service.app.store, "alice", "py", ["python", "ipykernel"])
    name = kernel_name("alice", "py")
    await wait_for(lambda: _has(jp_fetch, name), 5.0, f"{name} in /api/kernelspecs")
    # The service goes away: its kernelspec stays (a notebook keeps its kernel), the start explains.
    from conda_store_jupyter.jupyter.kernels import backend as backends

    backend = backends.current()
    await backend.stop()  # no poller: the listing keeps what it had
    dead = f"http://127.0.0.1:{free_port()}"
    backend.service.target = dataclasses.replace(backend.target, url=dead)
    kernel_id = await jp_serverapp.kernel_manager.start_kernel(kernel_name=name)
    try:
        reply, _ = await run_cell(jp_serverapp, kernel_id, "1")
        assert reply["status"] == "error"
        assert f"the conda-store service at {dead} cannot be reached (connection refused)" in reply["evalue"]
        assert "restart this kernel" in reply["evalue"]
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)
    assert name in await kernelspecs(jp_fetch)


async def test_running_is_404_for_other_kernels(jp_fetch, jp_serverapp):
    r = await jp_fetch("conda-store", "kernels", "running", "not-a-kernel", raise_error=False)
    assert r.code == 404 and "not started from a conda-store environment" in json.loads(r.body)["message"]


@pytest.mark.parametrize("kernel_traits", [{"url": f"http://127.0.0.1:{free_port()}"}], indirect=True)
async def test_listing_when_the_service_was_never_reached(jp_fetch, jp_serverapp):
    r = await jp_fetch("conda-store", "kernels", raise_error=False)
    assert r.code == 503
    assert "cannot be reached (connection refused)" in json.loads(r.body)["message"]
