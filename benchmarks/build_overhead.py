"""How much does our build pipeline cost on top of the raw tools it drives?

Same specification, warm package cache, in ONE process (imports and repodata parsing paid once
by both sides), several repetitions, interleaved so drift hits both equally:

* raw:      ``rattler.solve`` + ``rattler.install`` (+ ``uv pip install`` for the pip variant)
* pipeline: ``run_pipeline`` without conda-pack (solve, lockfile, install, pip + url lookup,
            lockfile rewrite, pinned YAML, log, size) — what a build costs before artifacts.

Prints both medians and their ratio per variant (target: pipeline ≤ 1.5 × raw).

    .venv/bin/python benchmarks/build_overhead.py [--repeat 9] [--cache DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings, run_pipeline  # noqa: E402
from conda_store_jupyter.builder.pip import uv_environment, uv_executable  # noqa: E402
from conda_store_jupyter.schema import BuildArtifactType, parse_specification  # noqa: E402
from conda_store_jupyter.testing.channel import build_channel, cache_root  # noqa: E402

VARIANTS = {
    "conda only": "name: bench\ndependencies:\n  - python 3.11.*\n  - six\n  - hello\n",
    "conda + pip": "name: bench\ndependencies:\n  - python 3.11.*\n  - six\n  - hello\n  - pip:\n    - tomli\n",
}


_RAW_GATEWAY = None


async def raw_build(specs: list[str], pip: list[str], settings: BuildSettings, prefix: Path) -> None:
    """The bare minimum a script calling the tools directly would do (one gateway, kept warm,
    never cleared: the cheapest possible solve, so the ratio is an upper bound of our cost)."""
    from rattler import Gateway, MatchSpec, install, solve

    global _RAW_GATEWAY
    if _RAW_GATEWAY is None:
        _RAW_GATEWAY = Gateway(cache_dir=settings.repodata_cache_directory)
    gateway = _RAW_GATEWAY
    records = await solve(
        sources=list(settings.channels), specs=specs, gateway=gateway,
        platforms=[settings.host_platform, "noarch"], virtual_packages=[],
    )
    await install(
        records, target_prefix=prefix, cache_dir=settings.package_cache_directory, show_progress=False,
        requested_specs=[MatchSpec(s)._match_spec for s in specs],
    )
    if pip:
        cmd = [uv_executable(), "pip", "install", "--python", str(prefix / "bin" / "python"), "--no-config"]
        subprocess.run(
            [*cmd, "--default-index", str(settings.pip_index_url), *pip],
            check=True, capture_output=True, env=uv_environment(settings),
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--cache", type=Path, default=cache_root(), help="channel + package cache root")
    args = ap.parse_args()

    channel = build_channel(args.cache / "channel")
    pkgs = args.cache / "pkgs"
    pkgs.mkdir(parents=True, exist_ok=True)
    settings = BuildSettings(
        channels=(channel.url,),
        package_cache_directory=pkgs,
        pip_index_url=channel.pypi_index_url,
        artifacts=frozenset({BuildArtifactType.LOCKFILE, BuildArtifactType.YAML}),
    )
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    worst = 0.0
    try:
        for label, text in VARIANTS.items():
            spec = parse_specification(text)
            raw_times: list[float] = []
            ours_times: list[float] = []
            for i in range(args.repeat + 1):  # run 0 warms caches (package cache, uv cache, imports)
                prefix = work / f"raw-{i}"
                t = time.perf_counter()
                asyncio.run(raw_build(list(spec.dependencies), list(spec.pip), settings, prefix))
                raw = time.perf_counter() - t
                shutil.rmtree(prefix)

                paths = BuildPaths.in_directory(work / f"ours-{i}")
                t = time.perf_counter()
                with BuildLog(paths.log) as log:
                    run_pipeline(spec, settings, paths, log)
                ours = time.perf_counter() - t
                shutil.rmtree(paths.prefix.parent)
                if i:
                    raw_times.append(raw)
                    ours_times.append(ours)
            r, o = statistics.median(raw_times), statistics.median(ours_times)
            worst = max(worst, o / r)
            print(
                f"{label:12s}  raw solve+install{'+uv' if spec.pip else ''}: median {r * 1000:7.1f} ms   "
                f"pipeline (no conda-pack): median {o * 1000:7.1f} ms   ratio {o / r:.2f}x   (n={args.repeat})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"worst ratio {worst:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
