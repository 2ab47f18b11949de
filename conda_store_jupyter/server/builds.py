"""``/api/v1/build/…``: list, read, rebuild, cancel, delete, packages and artifacts."""

from __future__ import annotations

from .. import api
from ..auth.rbac import Permission
from ..schema import BuildArtifactType, BuildStatus
from ..worker.queue import BuildQueue
from . import serialize
from .artifacts import send_artifact
from .base import BaseHandler, parse_id


def _arn(build) -> str:
    env = build.environment
    return f"{env.namespace.name}/{env.name}"


class BuildListHandler(BaseHandler):
    def get(self) -> None:
        environment_id = self.query_int("environment_id")
        with self.store.session() as db:
            result = api.list_builds(
                db, self.bindings(db), self.page(),
                status=self.query_enum("status", BuildStatus),
                artifact=self.query_enum("artifact", BuildArtifactType),
                packages=self.query_list("packages"),
                environment_id=environment_id,
                name=self.query("name"),
                namespace=self.query("namespace"),
            )
            self.ok_page(result, serialize.build)


class BuildHandler(BaseHandler):
    def get(self, build_id: str) -> None:
        with self.store.session() as db:
            build = api.get_build(db, parse_id(build_id))
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(build))
            self.ok(serialize.build(build, full=True))

    def put(self, build_id: str) -> None:
        """Rebuild: a new build of the same specification (picks up new package versions)."""
        with self.store.session() as db:
            build = api.get_build(db, parse_id(build_id))
            self.authorize(db, Permission.ENVIRONMENT_UPDATE, _arn(build))
            new_id = api.rebuild(db, build).id
        BuildQueue(self.store).enqueue_build(new_id)
        self.ok({"build_id": new_id}, message="rebuild triggered")

    def delete(self, build_id: str) -> None:
        with self.store.session() as db:
            build = api.get_build(db, parse_id(build_id))
            self.authorize(db, Permission.BUILD_DELETE, _arn(build))
            api.delete_build(db, build)
            deleted = build.id
        BuildQueue(self.store).enqueue_delete_build(deleted)
        self.ok()


class BuildCancelHandler(BaseHandler):
    def put(self, build_id: str) -> None:
        with self.store.session() as db:
            build = api.get_build(db, parse_id(build_id))
            self.authorize(db, Permission.BUILD_CANCEL, _arn(build))
        BuildQueue(self.store).cancel_build(build.id)  # ConflictError (409) if it already finished
        self.ok(message=f"build {build.id} canceled")


class BuildPackagesHandler(BaseHandler):
    def get(self, build_id: str) -> None:
        with self.store.session() as db:
            build = api.get_build(db, parse_id(build_id))
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(build))
            result = api.list_build_packages(
                db, build, self.page(), search=self.query("search"), exact=self.query_bool("exact"),
                build_string=self.query("build"),
            )
            self.ok_page(result, serialize.package_build)


class BuildArtifactHandler(BaseHandler):
    """``lockfile/``, ``conda-lock.yml``, ``conda-lock.yaml``, ``yaml/``, ``archive/``."""

    KINDS = {
        "lockfile": BuildArtifactType.LOCKFILE,
        "conda-lock.yml": BuildArtifactType.LOCKFILE,
        "conda-lock.yaml": BuildArtifactType.LOCKFILE,
        "yaml": BuildArtifactType.YAML,
        "archive": BuildArtifactType.CONDA_PACK,
    }

    async def get(self, build_id: str, what: str) -> None:
        with self.store.session() as db:
            build = api.get_build(db, parse_id(build_id))
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(build))
        await send_artifact(self, build, self.KINDS[what])


HANDLERS = [
    (r"/api/v1/build/", BuildListHandler),
    (r"/api/v1/build/([^/]+)/", BuildHandler),
    (r"/api/v1/build/([^/]+)/cancel/", BuildCancelHandler),
    (r"/api/v1/build/([^/]+)/packages/", BuildPackagesHandler),
    (r"/api/v1/build/([^/]+)/(lockfile|yaml|archive|conda-lock\.yml|conda-lock\.yaml)/", BuildArtifactHandler),
]
