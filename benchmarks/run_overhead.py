"""How much does ``conda-store run`` add over exec'ing the environment's python directly?

    .venv/bin/python benchmarks/run_overhead.py [-n 30] [--url URL --uri NS/ENV]

Without ``--url`` the benchmark is self-contained: it builds a small real environment from the
local test channel (python + a native package), conda-packs it, installs it into a temporary
XDG cache as build 1 (the cached state ``run`` reaches after its first download) and serves
the one request an ``ns/env`` URI needs (``GET /api/v1/environment/ns/env/``) from a tiny local
HTTP server. It then times, interleaved like hyperfine's side-by-side runs:

    direct      <prefix>/bin/python -c pass
    run <id>    conda-store run 1 -- python -c pass           (no request at all)
    run ns/env  conda-store run bench/env -- python -c pass   (one light request)

and prints mean/median/min per command and the overhead (median difference) in ms.
Target: <= 60 ms (issue 13). With ``--url``/``--uri`` it measures against a real server instead; the
build must already be cached (run the command once first).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CONDA_STORE = Path(sys.executable).parent / "conda-store"
TARGET_MS = 60.0

SPEC = "name: bench\ndependencies:\n  - python 3.11.*\n  - hello\n"


def _build_cached_env(cache_home: Path, url: str) -> Path:
    """Build + pack a real env and install it into ``cache_home`` exactly as ``run`` would."""
    import hashlib

    from conda_store_jupyter.builder import BuildLog, BuildPaths, BuildSettings, run_pipeline
    from conda_store_jupyter.builder.records import current_platform
    from conda_store_jupyter.cli._config import resolve_config
    from conda_store_jupyter.cli._run import build_dir, install_archive
    from conda_store_jupyter.schema import parse_specification
    from conda_store_jupyter.testing.channel import build_channel, cache_root

    cache = cache_root()
    channel = build_channel(cache / "channel")
    pkgs = cache / "pkgs"
    pkgs.mkdir(parents=True, exist_ok=True)
    out = cache_home / "build"
    settings = BuildSettings(channels=(channel.url,), platforms=(current_platform(),), package_cache_directory=pkgs,
                             pip_index_url=channel.pypi_index_url, timeout=600)
    paths = BuildPaths.in_directory(out)
    with BuildLog(paths.log) as log:
        result = run_pipeline(parse_specification(SPEC), settings, paths, log)
    archive = Path(result.archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    key = resolve_config(url=url, environ={}).cache_key
    directory = build_dir(key, 1, cache_home / "conda-store")
    directory.mkdir(parents=True, exist_ok=True)
    return install_archive(archive, digest, 1, directory, {"build_id": 1, "scheduled_on": "2024-01-01T00:00:00", "environment_id": 1})


class _EnvHandler(http.server.BaseHTTPRequestHandler):
    """Answers the environment lookup like the real server (v1 envelope)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        build = {"id": 1, "environment_id": 1, "scheduled_on": "2024-01-01T00:00:00", "status": "COMPLETED"}
        if self.path.rstrip("/") == "/api/v1/environment/bench/env":
            body = json.dumps({"status": "ok", "message": None,
                               "data": {"id": 1, "name": "env", "current_build_id": 1, "current_build": build}}).encode()
            self.send_response(200)
        elif self.path.rstrip("/") == "/api/v1/build/1":
            body = json.dumps({"status": "ok", "message": None, "data": build}).encode()
            self.send_response(200)
        else:
            body = b'{"status":"error","message":"not found"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--url", help="a real server (the build must already be cached)")
    parser.add_argument("--uri", help="ns/env or build id on that server")
    args = parser.parse_args()

    # Self-contained mode must not pick up the caller's server or token; --url mode needs them.
    strip = ("CONDA_PREFIX",) if args.url else ("CONDA_STORE", "CONDA_PREFIX")
    env = {k: v for k, v in os.environ.items() if not k.startswith(strip)}
    commands: dict[str, list[str]] = {}
    server = None
    with tempfile.TemporaryDirectory(prefix="cs-bench-") as tmp:
        if args.url:
            if not args.uri:
                parser.error("--url needs --uri")
            from conda_store_jupyter.cli._config import resolve_config
            from conda_store_jupyter.cli._light import current_build_id
            from conda_store_jupyter.cli._run import find_cached

            cfg = resolve_config(url=args.url)
            build = int(args.uri) if args.uri.isdigit() else current_build_id(cfg, *args.uri.split(":")[0].split("/"))
            prefix = find_cached(cfg.cache_key, build)
            if prefix is None:
                parser.error(f"build {build} is not cached yet: run 'conda-store run {args.uri} -- python -c pass' once")
            commands = {"direct": [str(prefix / "bin" / "python"), "-c", "pass"],
                        f"run {args.uri}": [str(CONDA_STORE), "--conda-store-url", args.url, "run", args.uri, "--", "python", "-c", "pass"]}
        else:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EnvHandler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}"
            print("building and caching a small environment (once per channel cache)...", file=sys.stderr)
            prefix = _build_cached_env(Path(tmp), url)
            env["XDG_CACHE_HOME"] = tmp
            base = [str(CONDA_STORE), "--conda-store-url", url, "run"]
            commands = {"direct": [str(prefix / "bin" / "python"), "-c", "pass"],
                        "run 1": [*base, "1", "--", "python", "-c", "pass"],
                        "run bench/env": [*base, "bench/env", "--", "python", "-c", "pass"]}
        try:
            for cmd in commands.values():
                for _ in range(args.warmup):
                    _time(cmd, env)
            samples: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):  # interleaved: drift (CPU frequency, cache) hits all alike
                for name, cmd in commands.items():
                    samples[name].append(_time(cmd, env))
        finally:
            if server is not None:
                server.shutdown()

    base_median = statistics.median(samples["direct"])
    print(f"{'command':<16}{'mean':>9}{'median':>9}{'min':>9}{'stdev':>9}   overhead (median)")
    worst = 0.0
    for name, values in samples.items():
        median = statistics.median(values)
        overhead = median - base_median
        if name != "direct":
            worst = max(worst, overhead)
        print(f"{name:<16}{statistics.mean(values):>8.1f}ms{median:>7.1f}ms{min(values):>7.1f}ms"
              f"{statistics.stdev(values):>7.1f}ms   {'' if name == 'direct' else f'+{overhead:.1f} ms'}")
    verdict = "OK" if worst <= TARGET_MS else "OVER TARGET"
    print(f"overhead of conda-store run: {worst:.1f} ms (target <= {TARGET_MS:.0f} ms): {verdict}  [{args.runs} runs each]")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
