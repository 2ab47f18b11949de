"""``/api/v1/setting/[<ns>/[<env>/]]``: read the effective settings of a scope, override keys there.

GET answers the merged settings (configuration → global → namespace → environment overrides)
and needs ``setting::read`` on the scope; PUT takes ``{key: value}`` (``null`` removes that
level's override) and needs ``setting::update``. The global scope's ARN is ``""``, which only a
``*/*`` binding covers, as upstream. ``/api/v1/settings/...`` (the plural) is accepted too.
"""

from __future__ import annotations

from .. import api
from ..auth.rbac import Permission
from .base import BaseHandler


class SettingHandler(BaseHandler):
    async def get(self, ns: str | None = None, env: str | None = None) -> None:
        scope = api.scope_of(ns, env)

        def work(db):
            self.authorize(db, Permission.SETTING_READ, scope.arn)
            return api.effective_settings(db, self.store, scope).as_dict()

        self.ok(await self.in_db(work))

    async def put(self, ns: str | None = None, env: str | None = None) -> None:
        scope = api.scope_of(ns, env)
        body = self.json_body()

        def work(db):
            self.authorize(db, Permission.SETTING_UPDATE, scope.arn)
            return api.update_settings(db, self.store, scope, body)

        keys = await self.in_db(work)
        where = {"global": "global", "namespace": f"namespace {ns}", "environment": f"environment {ns}/{env}"}
        self.ok(None, message=f"{where[scope.level]} setting keys {keys} updated")


HANDLERS = [
    (rf"/api/v1/{plural}/", SettingHandler) for plural in ("setting", "settings")
] + [
    (rf"/api/v1/{plural}/(?P<ns>[^/]+)/", SettingHandler) for plural in ("setting", "settings")
] + [
    (rf"/api/v1/{plural}/(?P<ns>[^/]+)/(?P<env>[^/]+)/", SettingHandler) for plural in ("setting", "settings")
]
