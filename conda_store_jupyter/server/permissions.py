"""``/api/v1/`` (version), ``/api/v1/permission/`` (who am I, what may I do), ``/api/v1/usage/``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .. import api
from ..auth.rbac import ROLES, canonical_role
from . import serialize
from .base import BaseHandler


def server_version() -> str:
    try:
        return version("conda-store-jupyter")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0+unknown"


class VersionHandler(BaseHandler):
    def get(self) -> None:
        # registry_host: set only when configured (c.CondaStoreServer.registry_url); otherwise
        # clients derive it from the address they reach the server at.
        server = self.server
        self.ok({"version": server_version(),
                 "registry_host": server.registry_host if server.enable_registry else None})


class PermissionHandler(BaseHandler):
    async def get(self) -> None:
        bindings = await self.in_db(self.bindings)
        permissions = {
            glob: sorted({p.value for role in roles for p in ROLES[canonical_role(role)]})
            for glob, roles in bindings.items()
        }
        self.ok({
            "authenticated": self.identity.authenticated,
            "primary_namespace": self.identity.primary_namespace,
            "username": self.identity.username,
            "entity_permissions": permissions,
            "entity_roles": {glob: sorted(roles) for glob, roles in bindings.items()},
            "expiration": serialize.timestamp(self.identity.expiration),
        })


class UsageHandler(BaseHandler):
    async def get(self) -> None:
        self.ok(await self.in_db(lambda db: api.usage(db, self.bindings(db))))


HANDLERS = [
    (r"/api/v1/", VersionHandler),
    (r"/api/v1/permission/", PermissionHandler),
    (r"/api/v1/usage/", UsageHandler),
]
