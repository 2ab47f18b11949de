"""Serving a lockfile as JSON: our YAML 1.2 reader (libyaml) against ruamel's, side by side.

The lockfile endpoints answer the JSON of the stored conda-lock YAML (upstream's form), converted
per request (``server/lockfiles.py``). This measures that conversion on a lockfile written by
ruamel as conda-lock writes it, for a given number of packages, and checks both readers agree.

    .venv/bin/python benchmarks/lockfile_json.py [--packages 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import json
import time

from ruamel.yaml import YAML

from conda_store_jupyter.server.lockfiles import to_json


def lockfile_text(packages: int) -> bytes:
    """A conda-lock v1 document with ``packages`` entries, dumped by ruamel (as conda-lock does)."""
    entries = [{
        "name": f"pkg{i}", "version": f"1.10.{i}", "manager": "conda", "platform": "linux-64",
        "dependencies": {f"dep{j}": ">=1.0" for j in range(5)},
        "url": f"https://conda.anaconda.org/conda-forge/linux-64/pkg{i}-1.10.{i}-h123_0.conda",
        "hash": {"md5": "0" * 32, "sha256": "a" * 64}, "category": "main", "optional": False,
    } for i in range(packages)]
    doc = {"version": 1, "metadata": {"content_hash": {"linux-64": "x"}, "platforms": ["linux-64"],
                                      "channels": [{"url": "conda-forge", "used_env_vars": []}],
                                      "sources": ["environment.yaml"]}, "package": entries}
    out = io.StringIO()
    YAML().dump(doc, out)
    return out.getvalue().encode()


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    text = lockfile_text(args.packages)
    ours = best_ms(lambda: to_json(text), args.repeat)
    ruamel = best_ms(lambda: json.dumps(YAML(typ="safe", pure=True).load(text)), max(1, args.repeat // 2))
    assert json.loads(to_json(text)) == YAML(typ="safe", pure=True).load(text)
    print(f"{len(text) / 1e3:.0f} kB lockfile, {args.packages} packages: to_json {ours:.0f} ms, "
          f"ruamel {ruamel:.0f} ms (ruamel / ours = {ruamel / ours:.1f}x)")


if __name__ == "__main__":
    main()
