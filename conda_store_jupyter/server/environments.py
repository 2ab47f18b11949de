"""``/api/v1/environment/…``: list (filters, search, paging), read, update (current build or
description), delete, and the current build's lockfile."""

from __future__ import annotations

from typing import Any

from .. import api
from ..auth.rbac import Permission
from ..exceptions import NotFoundError, ValidationError
from ..naming import validate_name
from ..schema import BuildArtifactType, BuildStatus
from ..worker.queue import BuildQueue
from . import serialize
from .base import BaseHandler, run_sync, serialized
from .lockfiles import send_lockfile

DEPRECATION_SUNSET = "2025-03-17"
"""Upstream deprecated the v1 environment listing (still used by its UI and CLI); we say so too."""


def _arn(ns: str, name: str) -> str:
    return f"{validate_name(ns, 'namespace')}/{validate_name(name, 'environment name')}"


def _listed(env) -> dict[str, Any]:
    """A listed environment with its current build's status and artifact types: what the home
    page shows and links (loaded eagerly by ``api.list_environments``)."""
    out = serialize.environment(env, current_build=env.current_build)
    if env.current_build is not None:
        out["current_build"]["build_artifacts"] = serialize.ready_artifacts(env.current_build)
    return out


class EnvironmentListHandler(BaseHandler):
    async def get(self) -> None:
        self.set_header("Deprecation", "True")
        self.set_header("Sunset", DEPRECATION_SUNSET)
        page = self.page()
        filters = dict(
            search=self.query("search"),
            namespace=self.query("namespace"),
            name=self.query("name"),
            status=self.query_enum("status", BuildStatus),
            artifact=self.query_enum("artifact", BuildArtifactType),
            packages=self.query_list("packages"),
        )

        def work(db):
            result = api.list_environments(db, self.bindings(db), page, **filters)
            return serialized(result, _listed)

        self.ok_page(await self.in_db(work))


class EnvironmentHandler(BaseHandler):
    async def get(self, ns: str, name: str) -> None:
        def work(db):
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            return serialize.environment(env, current_build=env.current_build)

        self.ok(await self.in_db(work))

    async def put(self, ns: str, name: str) -> None:
        """``{"build_id": N}`` makes a completed build current (rollback); ``description`` edits."""
        body: dict[str, Any] = self.json_body()
        build_id, description = body.get("build_id"), body.get("description")
        if build_id is not None and (not isinstance(build_id, int) or isinstance(build_id, bool)
                                     or not 0 < build_id < 2**63):
            raise ValidationError("build_id must be a positive integer (a build id)")
        if description is not None and not isinstance(description, str):
            raise ValidationError("description must be a string")
        if build_id is None and description is None:
            raise ValidationError("nothing to update: give build_id and/or description")

        def work(db) -> tuple[int, bool]:
            self.authorize(db, Permission.ENVIRONMENT_UPDATE, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            return env.id, api.update_environment(db, env, build_id=build_id, description=description)

        env_id, changed = await self.in_db(work)
        if changed:
            await run_sync(BuildQueue(self.store).enqueue_update_environment_link, env_id)
        self.ok()

    async def delete(self, ns: str, name: str) -> None:
        def work(db) -> int:
            self.authorize(db, Permission.ENVIRONMENT_DELETE, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            api.delete_environment(db, env)
            return env.id

        env_id = await self.in_db(work)
        await run_sync(BuildQueue(self.store).enqueue_delete_environment, env_id)
        self.ok()


class EnvironmentLockfileHandler(BaseHandler):
    async def get(self, ns: str, name: str) -> None:
        def work(db):
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            if api.completed_current_build(env) is None:  # a new environment's first build is current
                state = f" (build {env.current_build_id} is {env.current_build.status.value.lower()})" \
                    if env.current_build is not None else ""
                raise NotFoundError(f"environment {ns}/{name} has no completed build yet{state}")
            return api.get_build(db, env.current_build_id)  # artifacts loaded eagerly

        await send_lockfile(self, await self.in_db(work))


HANDLERS = [
    (r"/api/v1/environment/", EnvironmentListHandler),
    (r"/api/v1/environment/([^/]+)/([^/]+)/", EnvironmentHandler),
    (r"/api/v1/environment/([^/]+)/([^/]+)/(?:lockfile|conda-lock\.yml|conda-lock\.yaml)/",
     EnvironmentLockfileHandler),
]
