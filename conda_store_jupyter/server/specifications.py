"""``/api/v1/specification/``: submit an environment (POST) and solve one without building (GET)."""

from __future__ import annotations

from typing import Any

from .. import api
from ..auth.rbac import Permission
from ..exceptions import SpecificationError, ValidationError
from ..naming import validate_name
from .base import BaseHandler, run_sync

SOLVE_TIMEOUT = 60.0
"""Seconds a remote solve may take (a solve of a sane environment takes milliseconds)."""


def _warnings_message(warnings: list[str]) -> str | None:
    return "; ".join(f"warning: {w}" for w in warnings) or None


class SpecificationHandler(BaseHandler):
    async def post(self) -> None:
        """Create or update ``namespace/<spec name>`` and queue a build: ``{"build_id": N}``.

        What the specification asked for but will not get (``prefix:``) is said in ``message``.
        """
        body: dict[str, Any] = self.json_body()
        if body.get("is_lockfile"):
            raise ValidationError("lockfile specifications (is_lockfile) are not supported; submit environment.yaml")
        text = body.get("specification")
        if not isinstance(text, (str, dict)) or not text:
            raise ValidationError("'specification' is required: the environment.yaml text")
        description = body.get("environment_description")
        if description is not None and not isinstance(description, str):
            raise ValidationError("environment_description must be a string")
        namespace = body.get("namespace") or self.identity.primary_namespace
        validate_name(namespace, "namespace")
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

        Needs the right to build in one's own namespace (a solve costs CPU and fetches repodata).
        Upstream answers ``{"solve": [...]}`` without the envelope; its client reads that key, so
        the enveloped answer carries it at the top level too.
        """
        from ..builder.records import BuildSettings
        from ..builder.solve import solve_specification

        await self.in_db(self.authorize, Permission.ENVIRONMENT_CREATE, f"{self.identity.primary_namespace}/*")
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
