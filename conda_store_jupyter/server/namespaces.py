"""``/api/v1/namespace/…``: list, read, create, update (metadata + role mappings), delete.

Role mappings have two views: ``PUT namespace/{ns}/`` replaces the upstream v1 list
(``{entity glob: [roles]}``); ``namespace/{ns}/role(s)`` is upstream's v2 view ("namespace
*other* gets *role* here"), stored as the v1 entity ``<other>/*`` so both agree.
"""

from __future__ import annotations

from .. import api
from ..auth.rbac import Permission
from ..exceptions import ValidationError
from ..naming import validate_name
from ..worker.queue import BuildQueue
from . import serialize
from .base import BaseHandler, run_sync, serialized


def _arn(ns: str) -> str:
    return f"{validate_name(ns, 'namespace')}/"


class NamespaceListHandler(BaseHandler):
    async def get(self) -> None:
        page = self.page()

        def work(db):
            return serialized(api.list_namespaces(db, self.bindings(db), page), serialize.namespace)

        self.ok_page(await self.in_db(work))


class NamespaceHandler(BaseHandler):
    async def get(self, ns: str) -> None:
        def work(db):
            self.authorize(db, Permission.NAMESPACE_READ, _arn(ns))
            return serialize.namespace(api.get_namespace(db, ns), full=True)

        self.ok(await self.in_db(work))

    async def post(self, ns: str) -> None:
        def work(db):
            self.authorize(db, Permission.NAMESPACE_CREATE, _arn(ns))
            api.create_namespace(db, ns, owner=api.user_namespace_owner(self.identity, ns))

        await self.in_db(work)
        self.ok()

    async def put(self, ns: str) -> None:
        body = self.json_body()
        unknown = set(body) - {"metadata", "role_mappings"}
        if unknown:
            raise ValidationError(f"unknown field(s) {sorted(unknown)}; expected metadata and/or role_mappings")

        def work(db):
            self.authorize(db, Permission.NAMESPACE_UPDATE, _arn(ns))
            if body.get("role_mappings") is not None:
                self.authorize(db, Permission.ROLE_MAPPING_UPDATE, _arn(ns))
            api.update_namespace(db, api.get_namespace(db, ns), metadata=body.get("metadata"),
                                 role_mappings=body.get("role_mappings"))

        await self.in_db(work)
        self.ok()

    async def delete(self, ns: str) -> None:
        def work(db) -> int:
            self.authorize(db, Permission.NAMESPACE_DELETE, _arn(ns))
            namespace = api.get_namespace(db, ns)
            api.delete_namespace(db, namespace)
            return namespace.id

        namespace_id = await self.in_db(work)
        await run_sync(BuildQueue(self.store).enqueue_delete_namespace, namespace_id)
        self.ok()


class NamespaceMetadataHandler(BaseHandler):
    """``PUT namespace/{ns}/metadata``: the body is the metadata object itself."""

    async def put(self, ns: str) -> None:
        metadata = self.json_body()

        def work(db):
            self.authorize(db, Permission.NAMESPACE_UPDATE, _arn(ns))
            api.update_namespace(db, api.get_namespace(db, ns), metadata=metadata)

        await self.in_db(work)
        self.ok()


class NamespaceRolesHandler(BaseHandler):
    async def get(self, ns: str) -> None:
        def work(db):
            self.authorize(db, Permission.ROLE_MAPPING_READ, _arn(ns))
            return api.list_namespace_roles(db, api.get_namespace(db, ns))

        self.ok(await self.in_db(work))

    async def delete(self, ns: str) -> None:
        def work(db):
            self.authorize(db, Permission.ROLE_MAPPING_DELETE, _arn(ns))
            api.delete_namespace_role(db, api.get_namespace(db, ns))

        await self.in_db(work)
        self.ok()


class NamespaceRoleHandler(BaseHandler):
    async def get(self, ns: str) -> None:
        other = self.query("other_namespace")
        if not other:
            raise ValidationError("query parameter 'other_namespace' is required")

        def work(db):
            self.authorize(db, Permission.ROLE_MAPPING_READ, _arn(ns))
            return api.get_namespace_role(db, api.get_namespace(db, ns), other)

        self.ok(await self.in_db(work))

    async def _set(self, ns: str, permission: Permission) -> None:
        body = self.json_body()
        other, role = body.get("other_namespace"), body.get("role")
        if not isinstance(role, str):
            raise ValidationError("'role' is required: viewer, editor/developer or admin")

        def work(db):
            self.authorize(db, permission, _arn(ns))
            api.set_namespace_role(db, api.get_namespace(db, ns), other, role)

        await self.in_db(work)
        self.ok()

    async def post(self, ns: str) -> None:
        await self._set(ns, Permission.ROLE_MAPPING_CREATE)

    async def put(self, ns: str) -> None:
        await self._set(ns, Permission.ROLE_MAPPING_UPDATE)

    async def delete(self, ns: str) -> None:
        other = validate_name(self.json_body().get("other_namespace"), "other_namespace")

        def work(db):
            self.authorize(db, Permission.ROLE_MAPPING_DELETE, _arn(ns))
            api.delete_namespace_role(db, api.get_namespace(db, ns), other)

        await self.in_db(work)
        self.ok()


HANDLERS = [
    (r"/api/v1/namespace/", NamespaceListHandler),
    (r"/api/v1/namespace/([^/]+)/metadata/", NamespaceMetadataHandler),
    (r"/api/v1/namespace/([^/]+)/roles/", NamespaceRolesHandler),
    (r"/api/v1/namespace/([^/]+)/role/", NamespaceRoleHandler),
    (r"/api/v1/namespace/([^/]+)/", NamespaceHandler),
]
