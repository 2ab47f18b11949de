"""Pure parts of environment kernels: names, the spec directory, the notebook pin, recognising a
build's prefix, kernel commands, and the archive download's pending/refused answers (against a
small local HTTP server)."""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path

import pytest

from conda_store_jupyter.jupyter.kernels import cache
from conda_store_jupyter.jupyter.kernels.records import BuildInfo, EnvironmentEntry, KernelPackage
from conda_store_jupyter.jupyter.kernels.resolve import kernel_argv, read_pin, store_prefix
from conda_store_jupyter.jupyter.kernels.specs import KernelSpecDirectory, kernel_name

IPYKERNEL = KernelPackage("ipykernel", "7.4.0", "py_0", "python")


def entry(ns: str, env: str, *, kernel: KernelPackage | None = IPYKERNEL, status: str = "COMPLETED",
          build_id: int = 3, prefix: str = "/nowhere") -> EnvironmentEntry:
    build = BuildInfo(id=build_id, environment_id=1, status=status, deleted=False, scheduled_on="2026-01-01T00:00:00",
                      specification_sha256="ab" * 32, build_key=f"abababab-1767225600-{build_id}-{env}",
                      prefix=prefix, kernel=kernel, has_archive=False, lockfile_sha256=None)
    return EnvironmentEntry(ns, env, 1, build_id, build)


def test_kernel_names_are_valid_stable_and_never_collide():
    valid = re.compile(r"^[a-z0-9._\-]+$")  # jupyter_client's rule
    pairs = [("a-b", "c"), ("a", "b-c"), ("a.b", "c"), ("a", "b.c"), ("team__x", "py"), ("team", "x__py")]
    names = [kernel_name(ns, env) for ns, env in pairs]
    assert len(set(names)) == len(names)
    assert all(valid.match(n) for n in names)
    assert kernel_name("alice", "py") == "conda-store-5-alice-py" == kernel_name("alice", "py")


def test_spec_directory_holds_exactly_the_environments_with_a_kernel(tmp_path):
    specs = KernelSpecDirectory(tmp_path / "kernels")
    entries = [entry("alice", "py"), entry("alice", "plain", kernel=None), entry("alice", "failed", status="FAILED"),
               entry("alice", "r", kernel=KernelPackage("r-irkernel", "1.3", "r43_0", "R"))]
    assert specs.sync(entries) is True
    assert specs.names() == {kernel_name("alice", "py"), kernel_name("alice", "r")}
    spec = json.loads((tmp_path / "kernels" / kernel_name("alice", "r") / "kernel.json").read_text())
    assert spec["display_name"] == "alice/r" and spec["language"] == "r"
    # the Launcher's Python logo for Python kernels (from the server's own ipykernel), none for R
    assert (tmp_path / "kernels" / kernel_name("alice", "py") / "logo-64x64.png").is_file()
    assert not (tmp_path / "kernels" / kernel_name("alice", "r") / "logo-64x64.png").exists()
    assert spec["metadata"]["kernel_provisioner"] == {"provisioner_name": "conda-store",
                                                      "config": {"namespace": "alice", "environment": "r"}}
    # a rebuild (another build id) changes nothing on disk: specs do not depend on builds
    mtime = (tmp_path / "kernels" / kernel_name("alice", "py") / "kernel.json").stat().st_mtime_ns
    assert specs.sync([entry("alice", "py", build_id=9), entries[3]]) is False
    assert (tmp_path / "kernels" / kernel_name("alice", "py") / "kernel.json").stat().st_mtime_ns == mtime
    # an environment that goes away loses its spec; nothing else in the directory is touched
    (tmp_path / "kernels" / "README").write_text("not ours")
    assert specs.sync([entry("alice", "py")]) is True
    assert specs.names() == {kernel_name("alice", "py")} and (tmp_path / "kernels" / "README").exists()


def _notebook(path: Path, conda_store: object) -> Path:
    path.write_text(json.dumps({"cells": [], "metadata": {"conda_store": conda_store}, "nbformat": 4,
                                "nbformat_minor": 5}))
    return path


def test_the_pin_is_read_from_the_saved_notebook(tmp_path):
    (tmp_path / "sub").mkdir()
    _notebook(tmp_path / "sub" / "a.ipynb", {"namespace": "alice", "environment": "py", "pin_build": 4})
    assert read_pin("sub/a.ipynb", str(tmp_path), "alice", "py") == 4  # relative to root_dir
    assert read_pin(str(tmp_path / "sub" / "a.ipynb"), "/elsewhere", "alice", "py") == 4  # absolute
    assert read_pin("sub/a.ipynb", str(tmp_path), "alice", "other") is None  # another environment's pin
    _notebook(tmp_path / "b.ipynb", {"pin_build": 5})
    assert read_pin("b.ipynb", str(tmp_path), "alice", "py") == 5  # metadata that does not say which env
    for bad in (True, "4", 0, -1, 2.5, None):
        _notebook(tmp_path / "c.ipynb", {"pin_build": bad})
        assert read_pin("c.ipynb", str(tmp_path), "alice", "py") is None, bad
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert read_pin("broken.ipynb", str(tmp_path), "alice", "py") is None
    assert read_pin("missing.ipynb", str(tmp_path), "alice", "py") is None
    assert read_pin("console-1", str(tmp_path), "alice", "py") is None  # a console, not a notebook
    assert read_pin(None, str(tmp_path), "alice", "py") is None


def test_a_store_prefix_counts_only_if_it_is_that_build(tmp_path):
    e = entry("alice", "py", prefix=str(tmp_path / "abababab-1767225600-3-py"))
    assert store_prefix(e.build) is None  # not there (the store is not visible here)
    meta = tmp_path / "abababab-1767225600-3-py" / "conda-meta"
    meta.mkdir(parents=True)
    assert store_prefix(e.build) is None  # no record of the exact kernel package the service lists
    (meta / "ipykernel-7.4.0-py_1.json").write_text("{}")
    assert store_prefix(e.build) is None  # another build of it
    (meta / "ipykernel-7.4.0-py_0.json").write_text("{}")
    assert store_prefix(e.build) == tmp_path / "abababab-1767225600-3-py"
    other = entry("alice", "py", build_id=4, prefix=str(tmp_path / "abababab-1767225600-3-py"))
    assert store_prefix(other.build) is None  # the directory is not named by this build's key


def test_kernel_commands(tmp_path):
    assert kernel_argv(tmp_path, IPYKERNEL) is None  # no python in the prefix
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    assert kernel_argv(tmp_path, IPYKERNEL) == [str(tmp_path / "bin" / "python"), "-m", "ipykernel_launcher",
                                                "-f", "{connection_file}"]
    # an unknown kernel package: the kernelspec it installed, its program made absolute in the prefix
    spec = tmp_path / "share" / "jupyter" / "kernels" / "xlua"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": ["xlua", "-f", "{connection_file}"]}))
    (tmp_path / "bin" / "xlua").write_text("")
    assert kernel_argv(tmp_path, KernelPackage("xeus-lua", "0.7", "h0", "Lua")) == [
        str(tmp_path / "bin" / "xlua"), "-f", "{connection_file}"]


class _ArchiveServer:
    """Answers ``/api/v1/build/<id>/archive/`` from a script of (status, headers, body)."""

    def __init__(self, script: list[tuple[int, dict, bytes]]) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization")})
                status, headers, body = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive_server(request):
    server = _ArchiveServer(request.param)
    yield server
    server.close()


PENDING = (409, {"Retry-After": "0", "Content-Type": "application/json"},
           b'{"status": "error", "message": "the archive is being made"}')


@pytest.mark.parametrize("archive_server", [[PENDING, PENDING, (200, {}, b"archive bytes")]], indirect=True)
def test_a_pending_archive_is_waited_for(archive_server, tmp_path):
    source = cache.Source(archive_server.url, {"Authorization": "Bearer t"})
    digest = cache.download(source, 7, tmp_path / "a.tar.gz", wait=30)
    assert (tmp_path / "a.tar.gz").read_bytes() == b"archive bytes"
    assert len(archive_server.requests) == 3 and {r["auth"] for r in archive_server.requests} == {"Bearer t"}
    assert archive_server.requests[0]["path"] == "/api/v1/build/7/archive/"
    import hashlib

    assert digest == hashlib.sha256(b"archive bytes").hexdigest()


@pytest.mark.parametrize("archive_server", [[(202, {"Retry-After": "1"}, b"")]], indirect=True)
def test_a_pending_archive_is_waited_for_only_so_long(archive_server, tmp_path):
    with pytest.raises(cache.ArchiveError, match=r"still being made after 0\.5 s; restart the kernel in a while"):
        cache.download(cache.Source(archive_server.url, {}), 7, tmp_path / "a.tar.gz", wait=0.5)
    assert not (tmp_path / "a.tar.gz").exists()


@pytest.mark.parametrize("archive_server", [[(404, {"Content-Type": "application/json"},
                                              b'{"status": "error", "message": "build 7 has no CONDA_PACK artifact"}')]],
                         indirect=True)
def test_a_missing_archive_says_what_to_do(archive_server, tmp_path):
    with pytest.raises(cache.ArchiveError) as err:
        cache.download(cache.Source(archive_server.url, {}), 7, tmp_path / "a.tar.gz")
    assert "build 7 has no conda-pack archive on the service (build 7 has no CONDA_PACK artifact)" in str(err.value)
    assert "c.CondaStore.build_artifacts" in str(err.value)


class _Service:
    """Stands in for the service's one-environment answer (resolve_launch's only input from it)."""

    def __init__(self, answer) -> None:
        self.answer = answer

    async def one(self, namespace, environment, build_id=None):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _with(build_changes: dict | None, **entry_changes) -> EnvironmentEntry:
    import dataclasses

    e = entry("alice", "py")
    build = None if build_changes is None else dataclasses.replace(e.build, **build_changes)
    return dataclasses.replace(e, build=build, **entry_changes)


@pytest.mark.parametrize(("answer", "pinned", "reason"), [
    (None, None, "The environment alice/py does not exist any more, or you may no longer read it. Choose another kernel"),
    (_with(None), None, "alice/py has no completed build yet. Wait for its build to complete"),
    (_with(None), 2, "pinned to build 2 (metadata.conda_store.pin_build), which is not a build of alice/py. Clear the pin"),
    (_with({"deleted": True}), None, "The build 3 of alice/py was deleted. Rebuild the environment"),
    (_with({"deleted": True}), 3, "The build 3 of alice/py (this notebook's pinned build) was deleted. Clear or change the pin"),
    (_with({"status": "FAILED"}), 3, "is FAILED, not COMPLETED"),
    (_with({"kernel": None}), None, "has no kernel package. Add ipykernel (Python) or r-irkernel (R) to its dependencies and rebuild"),
])
def test_every_reason_a_kernel_cannot_start_is_worded(answer, pinned, reason):
    import asyncio

    from conda_store_jupyter.jupyter.kernels.resolve import ERROR_ENV, LaunchOptions, resolve_launch

    plan = asyncio.run(resolve_launch(_Service(answer), None, LaunchOptions(), "alice", "py", pinned))
    assert plan.error is not None and reason in plan.error, plan.error
    assert plan.argv[1:3] == ["-m", "conda_store_jupyter.jupyter.kernels.fallback"] and plan.env[ERROR_ENV] == plan.error
    assert plan.pinned == pinned


def test_the_credential_never_follows_a_redirect_to_storage(tmp_path):
    storage = _ArchiveServer([(200, {}, b"from storage")])
    service = _ArchiveServer([(307, {"Location": f"{storage.url}/bucket/archive.tar.gz?X-Amz-Signature=s"}, b"")])
    try:
        cache.download(cache.Source(service.url, {"Authorization": "Bearer secret"}), 7, tmp_path / "a.tar.gz")
    finally:
        storage.close()
        service.close()
    assert (tmp_path / "a.tar.gz").read_bytes() == b"from storage"
    assert service.requests[0]["auth"] == "Bearer secret"
    assert storage.requests == [{"path": "/bucket/archive.tar.gz?X-Amz-Signature=s", "auth": None}]


@pytest.mark.parametrize("archive_server", [[(410, {"Content-Type": "application/json"},
                                              b'{"status": "error", "message": "conda-pack: disk full"}')]],
                         indirect=True)
def test_a_failed_archive_says_so(archive_server, tmp_path):
    with pytest.raises(cache.ArchiveError, match=r"making the conda-pack archive of build 7 failed "
                                                 r"\(conda-pack: disk full\); rebuild the environment"):
        cache.download(cache.Source(archive_server.url, {}), 7, tmp_path / "a.tar.gz")
