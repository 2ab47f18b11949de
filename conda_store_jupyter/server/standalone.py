"""``conda-store-server --standalone [--demo]``: everything on one machine, nothing to configure.

What it adds to whatever the config file sets:

1. a channel: the configured default channels if one answers, else a real local channel built
   under ``<store>/local-channel`` (no public channel is reachable on air-gapped hosts);
2. a generated config file ``<store>/standalone_config.py`` that loads the user's file and adds
   those choices, so the worker processes see exactly what the server sees;
3. a private redis-server and worker processes (``EmbeddedServices``) unless Redis is configured;
4. an admin token for this run (a ``predefined_tokens`` entry, printed once, never stored).
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from ..testing.config import config_lines

if TYPE_CHECKING:
    from .app import CondaStoreServer

CHANNEL_PROBE_TIMEOUT = 3.0
"""Seconds to wait for a default channel's repodata before building the local channel."""

DEMO_NAMESPACE = "demo"


def channel_reachable(url: str) -> bool:
    """Does ``<url>/noarch/repodata.json`` exist (file://) or answer (http/https)?"""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"), "noarch", "repodata.json").is_file()
    import httpx

    try:
        response = httpx.head(f"{url}/noarch/repodata.json", timeout=CHANNEL_PROBE_TIMEOUT, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return response.status_code < 400


def prepare_standalone(app: "CondaStoreServer", stack: ExitStack) -> None:
    store = app.store
    store.store_path.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, object] = {"store_directory": str(store.store_path)}
    channels = [store.channel_url(c) for c in store.conda_default_channels]
    if not any(channel_reachable(c) for c in channels):
        from ..testing.channel import build_channel
        from ..testing.config import local_channel_traits

        print(f"default channel(s) {', '.join(channels)} not reachable: building a local channel…", flush=True)
        overrides.update(local_channel_traits(build_channel(store.store_path / "local-channel")))
    for name, value in overrides.items():
        setattr(store, name, value)

    config = store.store_path / "standalone_config.py"
    lines = ["# Written by conda-store-server --standalone: the user's config plus standalone choices.",
             "c = get_config()  # noqa: F821"]
    if app.config_file:
        lines.append(f"load_subconfig({str(Path(app.config_file).resolve())!r})  # noqa: F821")
    lines += config_lines({"CondaStore": overrides})
    config.write_text("\n".join(lines) + "\n")
    store.config_file = str(config)

    if not store.redis_url:
        from ..worker.embedded import EmbeddedServices

        stack.enter_context(EmbeddedServices(store, workers=app.workers))

    app.admin_token = secrets.token_urlsafe(32)
    app.auth.predefined_tokens = {
        **app.auth.predefined_tokens,
        app.admin_token: {"primary_namespace": DEMO_NAMESPACE, "role_bindings": {"*/*": ["admin"]},
                          "username": "admin"},
    }


async def announce(app: "CondaStoreServer") -> None:
    """Print the admin token once; with --demo, submit the sample environment and follow it."""
    url = app.public_url.rstrip("/")
    print(f"admin token for this run (shown once): {app.admin_token}", flush=True)
    print(f"  curl -H 'Authorization: Bearer {app.admin_token}' {url}/api/v1/environment/", flush=True)
    if app.demo:
        asyncio.get_running_loop().create_task(_demo(app, url))


async def _demo(app: "CondaStoreServer", url: str) -> None:
    from .. import api, orm
    from .app import DEMO_SPECIFICATION

    store = app.store
    text = DEMO_SPECIFICATION.format(pip_package="toolz")
    loop = asyncio.get_running_loop()
    try:
        spec = api.prepare_specification(store, text)
        build_id = await loop.run_in_executor(
            None, lambda: api.submit(store, namespace=DEMO_NAMESPACE, specification=spec))
    except Exception as exc:  # the server stays useful even if the demo cannot be built
        print(f"demo: could not submit {DEMO_NAMESPACE}/python-demo: {exc}", flush=True)
        return
    print(f"demo: building {DEMO_NAMESPACE}/python-demo (build {build_id}); live log:\n"
          f"  curl -N -H 'Authorization: Bearer {app.admin_token}' {url}/api/v1/build/{build_id}/logs/stream/",
          flush=True)
    while True:
        await asyncio.sleep(1)
        with store.session() as db:
            build = db.get(orm.Build, build_id)
            status, info = build.status, build.status_info
        if status.finished:
            break
    print(f"demo: build {build_id} {status.value}{': ' + info if info else ''}", flush=True)
    if status.value == "COMPLETED":
        print("download its lockfile with the conda-store client:\n"
              f"  CONDA_STORE_URL={url} CONDA_STORE_AUTH=token CONDA_STORE_TOKEN={app.admin_token} \\\n"
              f"    conda-store download {DEMO_NAMESPACE}/python-demo --artifact lockfile", flush=True)
