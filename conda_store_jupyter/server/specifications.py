"""``/api/v1/specification/``: submit an environment (POST) and solve one without building (GET)."""

from __future__ import annotations

from typing import Any

from .. import api
from ..auth.rbac import Permission
from ..exceptions import SpecificationError, ValidationError
from ..lockspec import LockSpecification, parse_lockfile_specification
from ..naming import validate_name
from ..schema import Specification
from .base import BaseHandler, run_sync

SOLVE_TIMEOUT = 60.0
"""Seconds a remote solve may take (a solve of a sane environment takes milliseconds)."""


def _warnings_message(warnings: list[str]) -> str | None:
    return "; ".join(f"warning: {w}" for w in warnings) or None


def prepare_lockfile_specification(store, text: str | dict, name: object, description: str | None) -> LockSpecification:
    """Validate a lockfile for this store: its platform, channel policy and required packages."""
    from ..builder.records import current_platform

    platform = current_platform()
    lock = parse_lockfile_specification(
        text, name=name, description=description, platform=platform,
        allowed_channels=store.allowed_channels, channel_alias=store.conda_channel_alias,
        required_packages=store.conda_required_packages,
    )
    # A lock is installed as it is: the packages this store adds to every solve are not added.
    locked = {f.name for f in lock.files(platform)}
    left_out = [p for p in store.conda_included_packages if p.split()[0].split("=")[0] not in locked]
    if left_out:
        lock.warnings.append(f"conda_included_packages {', '.join(left_out)} are not added: a lockfile is "
                             "installed exactly as locked")
    return lock


class SpecificationHandler(BaseHandler):
    async def post(self) -> None:
        """Create or update ``namespace/<spec name>`` and queue a build: ``{"build_id": N}``.

        What the specification asked for but will not get (``prefix:``) is said in ``message``.
        """
        body: dict[str, Any] = self.json_body()
        is_lockfile = body.get("is_lockfile", False)
        if not isinstance(is_lockfile, bool):
            raise ValidationError("is_lockfile must be true or false")
        text = body.get("specification")
        if not isinstance(text, (str, dict)) or not text:
            what = "the conda-lock file" if is_lockfile else "the environment.yaml text"
            raise ValidationError(f"'specification' is required: {what}")
        description = body.get("environment_description")
        if description is not None and not isinstance(description, str):
            raise ValidationError("environment_description must be a string")
        namespace = body.get("namespace") or self.identity.primary_namespace
        validate_name(namespace, "namespace")
        spec: Specification | LockSpecification
        if is_lockfile:  # installed exactly as locked, no solve (lockspec.py, builder/from_lock.py)
            spec = await run_sync(prepare_lockfile_specification, self.store, text,
                                  body.get("environment_name"), description)
        else:
            # The target environment's settings (channels, packages) apply: read them off the loop.
            spec = await run_sync(api.prepare_specification, self.store, text, namespace=namespace,
                                  name=body.get("environment_name") or None)

        def authorize(db) -> None:
            if api.find_namespace(db, namespace) is None:
                self.authorize(db, Permission.NAMESPACE_CREATE, f"{namespace}/")
            self.authorize(db, Permission.ENVIRONMENT_CREATE, f"{namespace}/{spec.name}")

        await self.in_db(authorize)
        build_id = await run_sync(api.submit, self.store, namespace=namespace, specification=spec,
                                  description=description, owner=api.user_namespace_owner(self.identity, namespace))
        self.ok({"build_id": build_id}, message=_warnings_message(spec.warnings))

    async def get(self) -> None:
        """Solve ``conda`` specs on ``channel`` (repeatable) for the host platform, no build.

        Needs ``environment::solve`` (developer) in one's own namespace: a solve costs CPU and
        fetches repodata, so unlike upstream it is not open to everyone.
        Upstream answers ``{"solve": [...]}`` without the envelope; its client reads that key, so
        the enveloped answer carries it at the top level too.
        """
        from ..builder.records import BuildSettings
        from ..builder.solve import solve_specification

        await self.in_db(self.authorize, Permission.ENVIRONMENT_SOLVE, f"{self.identity.primary_namespace}/*")
        conda = self.query_list("conda")
        if not conda:
            raise ValidationError("give at least one 'conda' match spec to solve")
        channels = self.query_list("channel") + self.query_list("channels")  # the client sends 'channels'
        spec = await run_sync(api.prepare_specification, self.store,
                              {"name": "solve", "channels": channels, "dependencies": conda},
                              namespace=self.identity.primary_namespace)
        if self.query_list("pip"):
            raise SpecificationError("remote solves cover conda packages only; 'pip' is not supported")
        settings = BuildSettings(
            channels=tuple(self.store.channel_url(c) for c in spec.channels),
            package_cache_directory=self.store.package_cache_directory,
        )
        result = await solve_specification(spec.dependencies, settings, timeout=SOLVE_TIMEOUT)
        packages = [
            {"name": p.name, "version": p.version, "build": p.build, "channel": p.channel, "channel_id": None,
             "subdir": p.subdir, "size": p.size, "url": p.url, "sha256": p.sha256}
            for p in result.host.packages
        ]
        self.write_json({"status": "ok", "data": {"solve": packages}, "message": None, "solve": packages})


HANDLERS = [(r"/api/v1/specification/", SpecificationHandler)]
