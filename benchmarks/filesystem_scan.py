"""Cost of watching a directory of environment files (``CondaStore.watch_paths``), side by side.

A directory of N environment files is scanned the way the server does every ``watch_interval``:
the first pass reads and validates every file; a steady-state pass only lists the directory and
stats each file; a pass after one file changed reads that file alone. Prints the time of each and
the ratio of a first pass to a steady one (how much the stat signatures save per tick). No builds
are submitted (only the scan and parse steps run), so no Redis or worker is needed.

    .venv/bin/python benchmarks/filesystem_scan.py [--files 1000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from conda_store_jupyter.api.filesystem import FilesystemSync, SyncReport
from conda_store_jupyter.app import CondaStore


def read_pass(sync: FilesystemSync) -> float:
    started = time.perf_counter()
    files, _missing = sync._scan()
    sync._read_changed(files, SyncReport())
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "environments"
        for i in range(args.files):
            sub = root / f"team-{i % 20}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"env-{i}.yaml").write_text(f"name: env-{i}\nchannels: [conda-forge]\n"
                                              f"dependencies:\n  - python >=3.11\n  - numpy\n  - pandas\n")
        store = CondaStore(store_directory=str(Path(tmp) / "store"), watch_paths=[str(root)])
        store.engine  # noqa: B018 - migrate before timing
        sync = FilesystemSync(store)
        first = read_pass(sync)
        steady = statistics.median(read_pass(sync) for _ in range(args.repeat))
        changed = []
        for i in range(args.repeat):
            (root / "team-0" / "env-0.yaml").write_text(f"name: env-0\ndependencies:\n  - python >=3.{i}\n")
            changed.append(read_pass(sync))
        one = statistics.median(changed)
        print(f"{args.files} files: first pass (read + validate all) {first * 1000:.1f} ms, "
              f"steady pass (list + stat) {steady * 1000:.2f} ms, one changed file {one * 1000:.2f} ms")
        print(f"first / steady = {first / steady:.1f}x; steady pass per file {steady / args.files * 1e6:.1f} us")
        store.dispose()


if __name__ == "__main__":
    main()
