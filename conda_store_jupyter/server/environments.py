"""``/api/v1/environment/…``: list (filters, search, paging), read, update (current build or
description), delete, and the current build's lockfile."""

from __future__ import annotations

from typing import Any

from .. import api
from ..auth.rbac import Permission
from ..exceptions import ValidationError
from ..naming import validate_name
from ..schema import BuildArtifactType, BuildStatus
from . import serialize
from .artifacts import send_artifact
from .base import BaseHandler

DEPRECATION_SUNSET = "2025-03-17"
"""Upstream deprecated the v1 environment listing (still used by its UI and CLI); we say so too."""


def _arn(ns: str, name: str) -> str:
    return f"{validate_name(ns, 'namespace')}/{validate_name(name, 'environment name')}"


def _listed(env) -> dict[str, Any]:
    """A listed environment with its current build's status and artifact types: what the home
    page shows and links (loaded eagerly by ``api.list_environments``)."""
    out = serialize.environment(env, current_build=env.current_build)
    if env.current_build is not None:
        out["current_build"]["build_artifacts"] = [serialize.artifact(a) for a in env.current_build.artifacts]
    return out


class EnvironmentListHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Deprecation", "True")
        self.set_header("Sunset", DEPRECATION_SUNSET)
        with self.store.session() as db:
            result = api.list_environments(
                db, self.bindings(db), self.page(),
                search=self.query("search"),
                namespace=self.query("namespace"),
                name=self.query("name"),
                status=self.query_enum("status", BuildStatus),
                artifact=self.query_enum("artifact", BuildArtifactType),
                packages=self.query_list("packages"),
            )
            self.ok_page(result, _listed)


class EnvironmentHandler(BaseHandler):
    def get(self, ns: str, name: str) -> None:
        with self.store.session() as db:
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            self.ok(serialize.environment(env, current_build=env.current_build))

    def put(self, ns: str, name: str) -> None:
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
        with self.store.session() as db:
            self.authorize(db, Permission.ENVIRONMENT_UPDATE, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            changed = api.update_environment(db, env, build_id=build_id, description=description)
        if changed:
            self.store.queue.enqueue_update_environment_link(env.id)
        self.ok()

    def delete(self, ns: str, name: str) -> None:
        with self.store.session() as db:
            self.authorize(db, Permission.ENVIRONMENT_DELETE, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            api.delete_environment(db, env)
        self.store.queue.enqueue_delete_environment(env.id)
        self.ok()


class EnvironmentLockfileHandler(BaseHandler):
    async def get(self, ns: str, name: str) -> None:
        with self.store.session() as db:
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(ns, name))
            env = api.get_environment(db, ns, name)
            if env.current_build_id is None:
                raise ValidationError(f"environment {ns}/{name} has no completed build yet")
            build = api.get_build(db, env.current_build_id)
        await send_artifact(self, build, BuildArtifactType.LOCKFILE)


HANDLERS = [
    (r"/api/v1/environment/", EnvironmentListHandler),
    (r"/api/v1/environment/([^/]+)/([^/]+)/", EnvironmentHandler),
    (r"/api/v1/environment/([^/]+)/([^/]+)/(?:lockfile|conda-lock\.yml|conda-lock\.yaml)/",
     EnvironmentLockfileHandler),
]
