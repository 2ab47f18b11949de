"""The local channel can build environments that run real Jupyter kernels.

``ipykernel`` (with its whole dependency closure, binary wheels included) and ``numpy`` are in the
channel as linux-64 packages for the channel's python. One environment, ``python + ipykernel +
numpy`` as a user would write it, is built once per module by the real builder pipeline; a real
ipykernel is started in it and driven through jupyter_client.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rattler import Gateway, SourceConfig, solve

from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings, run_pipeline
from conda_store_jupyter.builder.records import current_platform
from conda_store_jupyter.schema import parse_specification
from conda_store_jupyter.testing._pkgwriter import PackageFile
from conda_store_jupyter.testing._wheel_pkg import TargetPython, absolute_rpaths, conda_depends
from conda_store_jupyter.testing._wheels import KERNEL_PYTHON, KERNEL_WHEELS

PY_SHORT = "{}.{}".format(*sys.version_info[:2])
pytestmark = pytest.mark.skipif(
    current_platform() != "linux-64" or PY_SHORT != KERNEL_PYTHON,
    reason=f"the channel's kernel packages are pinned for CPython {KERNEL_PYTHON} on linux-64",
)

SPEC = """\
name: kernel
dependencies:
  - python
  - ipykernel
  - numpy
"""
KERNEL_DEADLINE = 60.0
"""Generous bound for a first kernel start (no .pyc yet) on a loaded 2-core CI machine."""


def _solve(channel, specs: list[str]) -> dict[str, object]:
    async def run():
        gateway = Gateway(default_config=SourceConfig(cache_action="no-cache"))
        return await solve(sources=[channel.url], specs=specs, gateway=gateway, platforms=["linux-64", "noarch"])

    return {r.name.normalized: r for r in asyncio.run(run())}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, local_channel, package_cache_dir) -> Path:
    paths = BuildPaths.in_directory(tmp_path_factory.mktemp("kernel-build"))
    settings = BuildSettings(channels=(local_channel.url,), package_cache_directory=package_cache_dir,
                             artifacts=frozenset(), timeout=300)
    with BuildLog(paths.log) as log:
        run_pipeline(parse_specification(SPEC), settings, paths, log)
    return paths.prefix


def test_ipykernel_alone_pulls_its_whole_closure(local_channel) -> None:
    records = _solve(local_channel, ["ipykernel"])
    # Every pinned wheel except numpy (nobody in the closure needs it) plus what the pure-wheel
    # side of the channel provides; nothing for other platforms (appnope, colorama, cffi).
    expected = {w.project.lower().replace("_", "-") for w in KERNEL_WHEELS} - {"numpy"}
    assert expected <= set(records), expected - set(records)
    assert {"python", "six", "packaging", "typing-extensions"} <= set(records)
    assert not {"appnope", "colorama", "cffi", "exceptiongroup", "numpy"} & set(records)
    ipykernel = records["ipykernel"]
    assert ipykernel.subdir == "linux-64"
    assert f"python {PY_SHORT}.*" in ipykernel.depends
    assert "jupyter-client >=8.9.0" in ipykernel.depends
    assert all("appnope" not in d for d in ipykernel.depends)


def test_markers_are_evaluated_for_the_channel_python() -> None:
    requires = ['typing_extensions>=4.6; python_version < "3.12"', 'colorama>=0.4.4; sys_platform == "win32"',
                "pexpect>4.6; sys_platform != 'win32'", "prompt_toolkit<3.1.0,>=3.0.41", "pytest; extra == 'test'"]
    assert conda_depends(requires, TargetPython("3.11.7")) == (
        "pexpect >4.6", "prompt-toolkit <3.1.0,>=3.0.41", "typing-extensions >=4.6")
    assert conda_depends(requires, TargetPython("3.12.1")) == ("pexpect >4.6", "prompt-toolkit <3.1.0,>=3.0.41")


def test_absolute_rpath_is_refused() -> None:
    # The host interpreter (pyenv, --enable-shared) carries an absolute RUNPATH: exactly what a
    # wheel must not have, since it breaks once the package is installed at another prefix.
    exe = Path(sys.base_prefix) / "bin" / f"python{PY_SHORT}"
    bad = absolute_rpaths({"bin/python": PackageFile(exe.read_bytes())})
    if not bad:
        pytest.skip(f"{exe} has no absolute RUNPATH on this machine")
    assert bad[0].startswith("bin/python: /")


def test_binary_packages_work_at_the_install_prefix(kernel_env: Path) -> None:
    code = (
        "import sys, numpy, zmq, tornado.speedups, psutil, debugpy, wcwidth;"
        "print(sys.prefix); print(numpy.__file__); print(zmq.zmq_version());"
        "print(float(numpy.linalg.inv(numpy.array([[2.0, 0], [0, 4.0]]))[1, 1]))"
    )
    out = subprocess.run([kernel_env / "bin" / "python", "-c", code], capture_output=True, text=True,
                         check=True, timeout=KERNEL_DEADLINE).stdout.split()
    assert out[0] == str(kernel_env)
    assert out[1].startswith(str(kernel_env))  # numpy from the env, not from the host
    assert out[2].count(".") == 2  # libzmq loaded from pyzmq.libs inside the prefix
    assert out[3] == "0.25"  # openblas (numpy.libs) works
    # Console scripts got the environment's python in their shebang.
    specs = subprocess.run([kernel_env / "bin" / "jupyter", "kernelspec", "list", "--json"],
                           capture_output=True, text=True, check=True, timeout=KERNEL_DEADLINE).stdout
    assert json.loads(specs)["kernelspecs"]["python3"]["resource_dir"].startswith(str(kernel_env))


def test_real_kernel_executes_in_the_environment(kernel_env: Path, tmp_path: Path) -> None:
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    # A kernel spec naming the environment's python (what a kernel for an environment is); the
    # manager picks free ports itself and knows whether the process is alive (a bare client only
    # has the heartbeat, which says "dead" while a first start is still importing).
    spec_dir = tmp_path / "kernels" / "env"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(kernel_env / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "kernel env", "language": "python",
    }))
    km = KernelManager(kernel_name="env", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
                       connection_file=str(tmp_path / "conn.json"))
    km.start_kernel(cwd=str(tmp_path))
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=KERNEL_DEADLINE)
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = client.execute_interactive("import sys, numpy; print(sys.prefix)", output_hook=hook,
                                           timeout=KERNEL_DEADLINE)
        assert reply["content"]["status"] == "ok", out
        assert "".join(out).strip() == str(kernel_env)
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=False)
    assert not km.is_alive()
