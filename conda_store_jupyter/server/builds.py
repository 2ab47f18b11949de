"""``/api/v1/build/…``: list, read, rebuild, cancel, delete, packages and artifacts."""

from __future__ import annotations

from .. import api
from ..auth.rbac import Permission
from ..schema import BuildArtifactType, BuildStatus
from ..worker.queue import BuildQueue
from . import serialize
from .artifacts import send_artifact
from .base import BaseHandler, parse_id, run_sync, serialized
from .lockfiles import send_lockfile


def _arn(build) -> str:
    env = build.environment
    return f"{env.namespace.name}/{env.name}"


class BuildListHandler(BaseHandler):
    async def get(self) -> None:
        page = self.page()
        filters = dict(
            status=self.query_enum("status", BuildStatus),
            artifact=self.query_enum("artifact", BuildArtifactType),
            packages=self.query_list("packages"),
            environment_id=self.query_int("environment_id"),
            name=self.query("name"),
            namespace=self.query("namespace"),
        )

        def work(db):
            return serialized(api.list_builds(db, self.bindings(db), page, **filters), serialize.build)

        self.ok_page(await self.in_db(work))


class BuildHandler(BaseHandler):
    async def get(self, build_id: str) -> None:
        wanted = parse_id(build_id)

        def work(db):
            build = api.get_build(db, wanted)
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(build))
            return serialize.build(build, full=True)

        self.ok(await self.in_db(work))

    async def put(self, build_id: str) -> None:
        """Rebuild: a new build of the same specification (picks up new package versions)."""
        wanted = parse_id(build_id)

        def work(db) -> int:
            build = api.get_build(db, wanted)
            self.authorize(db, Permission.ENVIRONMENT_UPDATE, _arn(build))
            return api.rebuild(db, build).id

        new_id = await self.in_db(work)
        await run_sync(BuildQueue(self.store).enqueue_build, new_id)
        self.ok({"build_id": new_id}, message="rebuild triggered")

    async def delete(self, build_id: str) -> None:
        wanted = parse_id(build_id)

        def work(db) -> None:
            build = api.get_build(db, wanted)
            self.authorize(db, Permission.BUILD_DELETE, _arn(build))
            api.delete_build(db, build)

        await self.in_db(work)
        await run_sync(BuildQueue(self.store).enqueue_delete_build, wanted)
        self.ok()


class BuildCancelHandler(BaseHandler):
    async def put(self, build_id: str) -> None:
        wanted = parse_id(build_id)

        def work(db) -> None:
            self.authorize(db, Permission.BUILD_CANCEL, _arn(api.get_build(db, wanted)))

        await self.in_db(work)
        await run_sync(BuildQueue(self.store).cancel_build, wanted)  # ConflictError (409) if it already finished
        self.ok(message=f"build {wanted} canceled")


class BuildPackagesHandler(BaseHandler):
    async def get(self, build_id: str) -> None:
        wanted = parse_id(build_id)
        page = self.page()
        filters = dict(search=self.query("search"), exact=self.query_bool("exact"), build_string=self.query("build"))

        def work(db):
            build = api.get_build(db, wanted)
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(build))
            return serialized(api.list_build_packages(db, build, page, **filters), serialize.package_build)

        self.ok_page(await self.in_db(work))


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
        wanted = parse_id(build_id)

        kind = self.KINDS[what]

        def work(db):
            build = api.get_build(db, wanted)  # artifacts loaded eagerly
            self.authorize(db, Permission.ENVIRONMENT_READ, _arn(build))
            # Which artifacts its environment makes (settings can switch the archive/image off there).
            env = build.environment
            made = api.effective_settings(db, self.store, api.Scope(env.namespace.name, env.name)).build_artifacts
            return build, made

        build, made = await self.in_db(work)
        if kind == BuildArtifactType.LOCKFILE:
            await send_lockfile(self, build)  # JSON, or YAML when asked (see lockfiles.py)
        else:
            await send_artifact(self, build, kind, made)


HANDLERS = [
    (r"/api/v1/build/", BuildListHandler),
    (r"/api/v1/build/([^/]+)/", BuildHandler),
    (r"/api/v1/build/([^/]+)/cancel/", BuildCancelHandler),
    (r"/api/v1/build/([^/]+)/packages/", BuildPackagesHandler),
    (r"/api/v1/build/([^/]+)/(lockfile|yaml|archive|conda-lock\.yml|conda-lock\.yaml)/", BuildArtifactHandler),
]
