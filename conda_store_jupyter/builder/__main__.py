"""Build one environment without server, database or queue.

    python -m conda_store_jupyter.builder SPEC.yaml --channel URL [--channel URL ...]
        [--platform P ...] [--pip-index-url URL] [--pip-find-links DIR ...]
        [--package-cache DIR] [--no-pack] [--timeout S] --output DIR

Writes into DIR: ``env/`` (the prefix), ``conda-lock.yml``, ``environment.yaml`` (pinned),
``environment.tar.gz`` (conda-pack) and ``build.log``. Progress goes to stderr; the LAST line of
stdout is a JSON summary. On failure the exit status is non-zero and stderr ends with the
one-paragraph reason (never a traceback: the log file has the details).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..exceptions import CondaStoreError
from ..schema import BuildArtifactType, parse_specification
from .log import BuildLog
from .pipeline import run_pipeline
from .records import BuildPaths, BuildSettings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conda_store_jupyter.builder",
        description="Build a conda environment from an environment.yaml, offline and without a server.",
    )
    p.add_argument("spec", type=Path, help="environment.yaml to build")
    p.add_argument("--output", "-o", type=Path, required=True, help="directory for the prefix and artifacts")
    p.add_argument(
        "--channel", "-c", action="append", default=[],
        help="channel URL or local directory (repeatable; default: the specification's channels)",
    )
    p.add_argument("--platform", "-p", action="append", default=[], help="extra platform to solve for (repeatable)")
    p.add_argument("--pip-index-url", help="index for the pip: section (PEP 503/691)")
    p.add_argument("--pip-find-links", action="append", default=[], help="wheel directory or page (repeatable)")
    p.add_argument("--package-cache", type=Path, help="shared package cache (default: OUTPUT/.pkgs)")
    p.add_argument("--no-pack", action="store_true", help="skip the conda-pack archive")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before the build is stopped")
    p.add_argument("--quiet", "-q", action="store_true", help="do not echo the build log to stderr")
    return p


def _channel_url(channel: str) -> str:
    if "://" in channel:
        return channel.rstrip("/")
    return Path(channel).expanduser().resolve().as_uri()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        try:
            text = args.spec.read_bytes()
        except OSError as exc:
            raise CondaStoreError(f"cannot read {args.spec}: {exc.strerror or exc}") from None
        spec = parse_specification(text)
        channels = args.channel or spec.channels
        if not channels:
            raise CondaStoreError("no channels: give --channel URL or list channels in the specification")
        output = args.output.resolve()
        output.mkdir(parents=True, exist_ok=True)
        artifacts = {BuildArtifactType.LOCKFILE, BuildArtifactType.YAML}
        if not args.no_pack:
            artifacts.add(BuildArtifactType.CONDA_PACK)
        settings = BuildSettings(
            channels=tuple(_channel_url(c) for c in channels),
            platforms=tuple(args.platform),
            package_cache_directory=(args.package_cache or output / ".pkgs").resolve(),
            pip_index_url=args.pip_index_url,
            pip_find_links=tuple(args.pip_find_links),
            artifacts=frozenset(artifacts),
            timeout=args.timeout,
        )
        paths = BuildPaths.in_directory(output)
        sink = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        with BuildLog(paths.log, sink=sink) as log:
            result = run_pipeline(spec, settings, paths, log)
    except CondaStoreError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result.summary(), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
