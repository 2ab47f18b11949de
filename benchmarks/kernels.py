"""Environment kernels: how fast a completed build becomes a kernel, and what our launch adds.

    .venv/bin/python benchmarks/kernels.py [--builds 3] [--starts 7]

Self-contained: a real redis-server, the service in-process, one real worker, the local test
channel (``python + ipykernel + numpy``), and a real ``jupyter server`` process with the
extension (default settings) for alice.

1. COMPLETED -> listed: for each of ``--builds`` environments, the time from the build's status
   turning COMPLETED (database polled every 20 ms) to its kernelspec in the server's
   ``GET /api/kernelspecs`` (polled every 20 ms; what Lab's launcher refreshes from). Target <= 5 s.
2. Kernel start: ``AsyncKernelManager.start_kernel`` until the kernel answers ``kernel_info``
   (``wait_for_ready``), for the environment's kernel through our provisioner (asks the service
   for the current build, verifies the store prefix, formats the command) vs a plain ipykernel
   kernelspec pointing at the same prefix, interleaved ``--starts`` times. Target <= 1.3x.

Prints medians and the ratios against their targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures_service import ServiceEnv  # noqa: E402
from tests.processes import free_port, stop_process, wait_for  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402

SPEC = "name: {name}\ndependencies:\n  - python\n  - ipykernel\n  - numpy\n"
LISTED_TARGET = 5.0
START_TARGET = 1.3
POLL = 0.02


def start_jupyter(root: Path, url: str, token: str) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    jtoken = "bench-" + os.urandom(8).hex()
    env = dict(os.environ, JUPYTER_DATA_DIR=str(root / "data"), JUPYTER_CONFIG_DIR=str(root / "config"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"), CONDA_STORE_URL=url, CONDA_STORE_TOKEN=token)
    log = open(root / "jupyter.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--ServerApp.port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={jtoken}", f"--ServerApp.root_dir={root}",
         "--ServerApp.jpserver_extensions={'conda_store_jupyter.jupyter': True}",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/api/status", headers={"Authorization": f"token {jtoken}"}).status_code == 200,
             60, "jupyter server", 0.2, proc=proc, log=root / "jupyter.log", ignore=httpx.HTTPError)
    return proc, base, jtoken


def time_to_listed(service, store, jupyter: str, jtoken: str, alice: str, name: str) -> tuple[int, float]:
    from conda_store_jupyter.jupyter.kernels.specs import kernel_name
    from tests.fixtures_service import status_of
    from conda_store_jupyter.schema import BuildStatus

    r = httpx.post(service.api("specification/"), json={"namespace": "alice", "specification": SPEC.format(name=name)},
                   headers={"Authorization": f"Bearer {alice}"}, timeout=30)
    r.raise_for_status()
    build_id = r.json()["data"]["build_id"]
    wait_for(lambda: status_of(store, build_id)[0] in (BuildStatus.COMPLETED, BuildStatus.FAILED), 900,
             f"build {build_id}", POLL)
    completed = time.monotonic()
    assert status_of(store, build_id)[0] == BuildStatus.COMPLETED, status_of(store, build_id)
    wanted = kernel_name("alice", name)
    with httpx.Client(headers={"Authorization": f"token {jtoken}"}) as client:
        wait_for(lambda: wanted in client.get(f"{jupyter}/api/kernelspecs").json()["kernelspecs"], 60,
                 f"{wanted} listed", POLL)
    return build_id, time.monotonic() - completed


async def start_times(spec_dir: Path, plain_dir: Path, ours: str, plain: str, n: int) -> dict[str, list[float]]:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir), str(plain_dir)])
    results: dict[str, list[float]] = {ours: [], plain: []}

    async def once(name: str) -> float:
        km = AsyncKernelManager(kernel_name=name, kernel_spec_manager=ksm)
        start = time.perf_counter()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            return time.perf_counter() - start
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    # what our provisioner adds before the process starts: ask the service, verify the prefix
    from conda_store_jupyter.jupyter.kernels import backend as backends
    from conda_store_jupyter.jupyter.kernels.resolve import resolve_launch

    backend = backends.standalone()
    resolves = []
    for _ in range(20):
        began = time.perf_counter()
        plan = await resolve_launch(backend.service, backend.source, backend.options, "alice", "env0", None)
        resolves.append(time.perf_counter() - began)
        assert plan.error is None, plan.error
    results["resolve"] = resolves

    await once(ours)
    await once(plain)  # warm the page cache for both
    for _ in range(n):
        for name in (ours, plain):
            results[name].append(await once(name))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=7)
    args = parser.parse_args()

    from conda_store_jupyter.testing.channel import build_channel, cache_root

    cache = cache_root()
    channel = build_channel(cache / "channel")
    (cache / "pkgs").mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-kernels-"))
    try:
        listed, times, ours = measure(args, root, channel, cache)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report(listed, times, ours)


def measure(args, root: Path, channel, cache):  # noqa: ANN001 - script plumbing
    from traitlets.config import Config

    from conda_store_jupyter.jupyter.kernels.specs import kernel_name
    from conda_store_jupyter.server.testing import running_server, user_token
    from conda_store_jupyter.testing.config import local_channel_traits, write_config
    from conda_store_jupyter.worker.tasks import load_store

    with redis_server() as redis_url:
        config = write_config(root / "conda_store_config.py", dict(
            store_directory=str(root / "store"), database_url=f"sqlite:///{root / 'conda-store.sqlite'}",
            redis_url=f"{redis_url}/1", **local_channel_traits(channel, cache / "pkgs"),
            build_artifacts=["LOCKFILE", "YAML"]))
        env = ServiceEnv(config=config, store=load_store(str(config)), tmp=root)
        with running_server(Config(), ["--config", str(config)]) as service:
            alice = user_token(service, "alice")
            env.start_worker()
            jupyter = None
            try:
                jupyter, base, jtoken = start_jupyter(root, service.url, alice)
                listed = []
                for i in range(args.builds):
                    build_id, seconds = time_to_listed(service, env.store, base, jtoken, alice, f"env{i}")
                    listed.append(seconds)
                    print(f"build {build_id}: COMPLETED -> listed in {seconds:.2f} s")
            finally:
                if jupyter is not None:
                    stop_process(jupyter)
                env.stop_workers()  # also when jupyter did not start

            # start times, in this process: our provisioner vs plain ipykernel in the same prefix
            os.environ.update(CONDA_STORE_URL=service.url, CONDA_STORE_TOKEN=alice)
            spec_dir = next((root / "data" / "conda-store").iterdir()) / "kernels"
            ours = kernel_name("alice", "env0")
            prefix = httpx.get(service.api("kernels/"), params={"namespace": "alice", "environment": "env0"},
                               headers={"Authorization": f"Bearer {alice}"}).json()["data"][0]["build"]["prefix"]
            plain_dir = root / "plain"
            (plain_dir / "plain-ipykernel").mkdir(parents=True)
            (plain_dir / "plain-ipykernel" / "kernel.json").write_text(json.dumps({
                "argv": [f"{prefix}/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "plain", "language": "python"}))
            times = asyncio.run(start_times(spec_dir, plain_dir, ours, "plain-ipykernel", args.starts))
        env.store.dispose()
    return listed, times, ours


def report(listed: list[float], times: dict[str, list[float]], ours: str) -> int:
    listed_median = statistics.median(listed)
    ours_median = statistics.median(times[ours])
    plain_median = statistics.median(times["plain-ipykernel"])
    ratio = ours_median / plain_median
    print()
    print(f"COMPLETED -> kernelspec listed: median {listed_median:.2f} s, max {max(listed):.2f} s "
          f"(target <= {LISTED_TARGET:g} s: {listed_median / LISTED_TARGET:.2f} of the target)")
    print(f"kernel start, plain ipykernel:   median {plain_median * 1000:.0f} ms "
          f"(min {min(times['plain-ipykernel']) * 1000:.0f})")
    print(f"kernel start, conda-store kernel: median {ours_median * 1000:.0f} ms (min {min(times[ours]) * 1000:.0f})")
    print(f"our resolution step alone (service request + prefix check): median "
          f"{statistics.median(times['resolve']) * 1000:.0f} ms over {len(times['resolve'])}")
    print(f"launch overhead (median difference): {(ours_median - plain_median) * 1000:+.0f} ms")
    print(f"start ratio conda-store / plain: {ratio:.2f}x (target <= {START_TARGET:g}x)")
    ok = max(listed) <= LISTED_TARGET and ratio <= START_TARGET
    print("PASS" if ok else "MISSED TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
