"""Image builder benchmark: build time against conda-pack, and layer reuse between environments.

    .venv/bin/python benchmarks/image.py [--repeat 5] [--cache DIR]

1. For one build prefix, side by side in one run and repeated (medians): ``build_image`` into empty
   storage (cold: every layer compressed and written) and into storage that already has the image
   (warm: hashing only), against ``conda-pack -o env.tar.gz`` (the CONDA_PACK artifact; default
   single-threaded gzip level 4) and conda-pack with all cores. Target: cold ≤ 2× conda-pack.
   The same with the default base (the host runtime base, :mod:`conda_store_jupyter.builder.host_base`)
   assembled by the image job as the worker does: the first image in a storage also compresses the
   base layer, every later one only hashes it.
2. Two environments sharing most packages, built into one storage: the share of the second image's
   layer bytes that were already stored. Target: ≥ 80 %.

Prefixes are installed by rattler from the real local test channel (built and cached on first use).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import conda_pack

from conda_store_jupyter.builder.host_base import host_runtime_base
from conda_store_jupyter.builder.image import build_image
from conda_store_jupyter.storage.local import LocalStorage
from conda_store_jupyter.testing.channel import build_channel, cache_root, install_prefix

ENV_1 = ["python", "pip", "six", "packaging", "idna", "hello", "greet-data"]
ENV_2 = ["python", "pip", "six", "packaging", "colorama", "typing-extensions", "hello <2"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=cache_root())
    args = parser.parse_args(argv)
    channel = build_channel(args.cache.resolve() / "channel")
    pkgs = args.cache.resolve() / "pkgs"
    pkgs.mkdir(parents=True, exist_ok=True)
    # Work next to the package cache: conda-pack (ours and the reference) hardlinks instead of copying.
    work = Path(tempfile.mkdtemp(prefix="bench-image-", dir=args.cache.resolve()))
    try:
        env1 = install_prefix(channel.url, pkgs, work / "env1", ENV_1)
        env2 = install_prefix(channel.url, pkgs, work / "env2", ENV_2)
        print(f"prefix: {len(list((env1 / 'conda-meta').glob('*.json')))} packages, "
              f"{du(env1) / 1e6:.1f} MB on disk; {os.cpu_count()} cores; repeat {args.repeat}")

        def with_base(storage: LocalStorage):
            return build_image(env1, storage, work_dir=work, base=host_runtime_base(storage, work_dir=work))

        cold, warm, pack1, packn, base_cold, base_warm, alone_cold, alone_warm = ([] for _ in range(8))
        for i in range(args.repeat):
            store = work / f"store-{i}"
            storage = LocalStorage(storage_directory=str(store))
            cold.append(timed(lambda: build_image(env1, storage, work_dir=work)))
            warm.append(timed(lambda: build_image(env1, storage, work_dir=work)))
            storage = LocalStorage(storage_directory=str(work / f"store-base-{i}"))
            base_cold.append(timed(lambda: with_base(storage)))
            base_warm.append(timed(lambda: with_base(storage)))
            shutil.rmtree(work / f"store-base-{i}")
            storage = LocalStorage(storage_directory=str(work / f"store-alone-{i}"))
            alone_cold.append(timed(lambda: host_runtime_base(storage, work_dir=work)))
            alone_warm.append(timed(lambda: host_runtime_base(storage, work_dir=work)))
            shutil.rmtree(work / f"store-alone-{i}")
            out = work / "env.tar.gz"
            pack1.append(timed(lambda: conda_pack.pack(prefix=str(env1), output=str(out), force=True)))
            packn.append(timed(lambda: conda_pack.pack(prefix=str(env1), output=str(out), force=True,
                                                       n_threads=-1)))
            shutil.rmtree(store)
        image = build_image(env1, LocalStorage(storage_directory=str(work / "store-size")), work_dir=work)
        based = with_base(LocalStorage(storage_directory=str(work / "store-size-base")))
        tar_size = out.stat().st_size
        med = {name: statistics.median(v) for name, v in
               [("cold", cold), ("warm", warm), ("pack1", pack1), ("packn", packn),
                ("base_cold", base_cold), ("base_warm", base_warm), ("alone_cold", alone_cold),
                ("alone_warm", alone_warm)]}
        print()
        print(f"{'':40}{'median s':>10}{'min s':>8}{'MB':>8}")
        print(f"{'image build, empty storage':40}{med['cold']:>10.3f}{min(cold):>8.3f}{image.total_bytes / 1e6:>8.1f}"
              f"   ({len(image.layers)} layers)")
        print(f"{'image build, image already stored':40}{med['warm']:>10.3f}{min(warm):>8.3f}")
        print(f"{'+ host base, empty storage':40}{med['base_cold']:>10.3f}{min(base_cold):>8.3f}"
              f"{based.total_bytes / 1e6:>8.1f}   (base layer {based.layers[0].size / 1e6:.1f} MB)")
        print(f"{'+ host base, image already stored':40}{med['base_warm']:>10.3f}{min(base_warm):>8.3f}")
        print(f"{'host base alone, first image of a store':40}{med['alone_cold']:>10.3f}{min(alone_cold):>8.3f}")
        print(f"{'host base alone, every later image':40}{med['alone_warm']:>10.3f}{min(alone_warm):>8.3f}")
        print(f"{'conda-pack tar.gz (default, 1 thread)':40}{med['pack1']:>10.3f}{min(pack1):>8.3f}{tar_size / 1e6:>8.1f}")
        print(f"{'conda-pack tar.gz (-j -1)':40}{med['packn']:>10.3f}{min(packn):>8.3f}")
        ratio = med["cold"] / med["pack1"]
        print(f"\nimage build / conda-pack = {ratio:.2f}x  (target <= 2x: {'OK' if ratio <= 2 else 'MISSED'}); "
              f"vs conda-pack -j -1: {med['cold'] / med['packn']:.2f}x")

        storage = LocalStorage(storage_directory=str(work / "store-shared"))
        first = build_image(env1, storage, work_dir=work)
        second = build_image(env2, storage, work_dir=work)
        shared = {p for layer in first.layers for p in layer.packages} & \
                 {p for layer in second.layers for p in layer.packages}
        print(f"\nreuse: env2 shares {len(shared)} of {sum(len(l.packages) for l in second.layers)} packages "
              f"with env1; {second.reused_bytes / 1e6:.2f} of {second.total_bytes / 1e6:.2f} MB of its layers "
              f"were already stored = {100 * second.reused_share:.1f} % "
              f"(target >= 80 %: {'OK' if second.reused_share >= 0.8 else 'MISSED'})")
        return 0 if ratio <= 2 and second.reused_share >= 0.8 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
