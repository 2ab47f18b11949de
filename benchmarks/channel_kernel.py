"""What the kernel packages (ipykernel's closure + numpy) cost the local channel and the demo.

Side by side in one run, on the same machine state:

1. channel build with a warm wheel cache, with vs without the kernel packages (wall and CPU);
2. the ``--demo`` environment's build (real pipeline, the default artifacts incl. conda-pack) with
   the current specification (python + numpy + ipykernel + six + hello + pip: toolz) vs the
   previous one (python + six + hello + pip: toolz), from one warm package cache.

    .venv/bin/python benchmarks/channel_kernel.py

The cold build (empty wheel cache: pip downloads from PyPI) is network-bound; it is measured by
``python -m conda_store_jupyter.testing.channel DIR`` on an empty DIR.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings, run_pipeline
from conda_store_jupyter.schema import parse_specification
from conda_store_jupyter.server.standalone import DEMO_SPECIFICATION
from conda_store_jupyter.testing.channel import build_channel, cache_root, install_prefix

PREVIOUS_DEMO = DEMO_SPECIFICATION.replace("  - numpy\n", "").replace("  - ipykernel\n", "")


def _cpu() -> float:
    """CPU seconds of this process and its finished children (whl2conda, patchelf, uv...)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    fn(*args)
    return time.perf_counter() - wall, _cpu() - cpu


def channel_build(tmp: Path, wheels: Path, with_kernel: bool) -> tuple[float, float]:
    out = tmp / ("with" if with_kernel else "without")
    out.mkdir()
    (out / "channel.wheels").symlink_to(wheels)  # warm: no network in this measurement
    return timed(build_channel, out / "channel", with_kernel)


def demo_build(tmp: Path, name: str, spec_text: str, channel, package_cache: Path) -> tuple[float, float]:
    paths = BuildPaths.in_directory(tmp / name)
    settings = BuildSettings(channels=(channel.url,), package_cache_directory=package_cache,
                             pip_index_url=channel.pypi_index_url, timeout=900)

    def build() -> None:
        with BuildLog(paths.log) as log:
            run_pipeline(parse_specification(spec_text), settings, paths, log)

    return timed(build)


def main() -> None:
    channel = build_channel(cache_root() / "channel")
    wheels = channel.path.parent / f"{channel.path.name}.wheels"
    with tempfile.TemporaryDirectory(prefix="cs-bench-channel-") as d:
        tmp = Path(d)
        without = channel_build(tmp, wheels, with_kernel=False)
        with_ = channel_build(tmp, wheels, with_kernel=True)
        print(f"channel build (warm wheels) without kernel packages: {without[0]:6.1f} s wall {without[1]:6.1f} s CPU")
        print(f"channel build (warm wheels) with kernel packages:    {with_[0]:6.1f} s wall {with_[1]:6.1f} s CPU")
        print(f"  ratio with/without: wall {with_[0] / without[0]:.2f}x  CPU {with_[1] / without[1]:.2f}x")

        cache = tmp / "pkgs"
        # Warm the package cache with every package either demo needs (what a running store has).
        install_prefix(channel.url, cache, tmp / "warm", ["python", "numpy", "ipykernel", "six", "hello"])
        old = demo_build(tmp, "old", PREVIOUS_DEMO, channel, cache)
        new = demo_build(tmp, "new", DEMO_SPECIFICATION, channel, cache)
        print(f"demo build, previous spec (python six hello + pip toolz): {old[0]:6.1f} s wall {old[1]:6.1f} s CPU")
        print(f"demo build, current spec (+ numpy ipykernel):             {new[0]:6.1f} s wall {new[1]:6.1f} s CPU")
        print(f"  ratio current/previous: wall {new[0] / old[0]:.2f}x  CPU {new[1] / old[1]:.2f}x")


if __name__ == "__main__":
    main()
