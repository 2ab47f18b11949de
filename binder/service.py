"""Start a standalone conda-store service for Binder, in the background, and say how to reach it.

Called by ``binder/start``; prints ``export CONDA_STORE_URL=…`` / ``export CONDA_STORE_TOKEN=…``
lines for it to evaluate (the jupyter-server extension reads exactly these variables), after the
service answers. The service is ``conda-store-server --standalone --demo``: a private redis-server
and a worker, SQLite, and ``demo/python-demo`` submitted at start. Its channel is the local one
that ``binder/postBuild`` built (``conda_store_jupyter.testing.channel``): conda-forge is reachable
on mybinder.org, but a solve against it takes minutes, the local channel's seconds, and the visitor
should see a COMPLETED environment before they have found the panel.

The API token is minted here and given to the service as a predefined admin token in the config
file (mode 0600), so nothing has to be read back from the server's output.

    python binder/service.py --root DIR --port PORT
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conda_store_jupyter.testing.channel import build_channel
from conda_store_jupyter.testing.config import local_channel_traits, write_config

START_TIMEOUT = 180.0
"""Seconds for the service to answer (migrations, redis-server, the worker; normally a few)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="store, channel, config and logs go here")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel", type=Path, help="an already built local channel (default: <root>/local-channel)")
    p.add_argument("--package-cache", type=Path, help="conda package cache (default: the store's)")
    args = p.parse_args()
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    channel = build_channel(args.channel or root / "local-channel")  # milliseconds when postBuild built it

    token = secrets.token_urlsafe(32)
    config = write_config(
        root / "conda_store_config.py",
        {"store_directory": str(root / "store"), **local_channel_traits(channel, args.package_cache),
         # No DOCKER_MANIFEST: images need skopeo/umoci, which the Binder image does not have.
         "build_artifacts": ["LOCKFILE", "YAML", "CONDA_PACK"]},
        AuthenticationBackend={"predefined_tokens": {
            token: {"primary_namespace": "demo", "role_bindings": {"*/*": ["admin"]}, "username": "binder"}}},
    )
    config.chmod(0o600)

    log = root / "server.log"
    with open(log, "ab") as out:
        # Not a new session: whoever stops binder/start's process group stops the service too.
        proc = subprocess.Popen(
            ["conda-store-server", "--standalone", "--demo", f"--config={config}", f"--port={args.port}",
             "--workers=1"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
    url = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            sys.exit(f"conda-store-server exited with {proc.returncode}; its log:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/api/v1/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"conda-store-server did not answer in {START_TIMEOUT:.0f} s; its log: {log}")
        time.sleep(0.2)  # polling the condition above, with a deadline
    print(f"export CONDA_STORE_URL={url}")
    print(f"export CONDA_STORE_TOKEN={token}")
    print(f"export CONDA_STORE_BINDER_SERVICE_PID={proc.pid}")


if __name__ == "__main__":
    main()
