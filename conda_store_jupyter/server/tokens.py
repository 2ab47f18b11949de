"""``/api/v1/token/``: issue (POST), list one's own (GET) and revoke (DELETE) API tokens.

Managing tokens is a power of the *user*, not of every credential they hold: a down-scoped
token (a CI viewer token, say) sees and revokes only itself and the tokens it issued, never its
owner's session or other tokens. Full management of a user's tokens needs a non-scoped
credential (a login session, a copy of one, a JupyterHub token, a predefined token).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .. import orm
from ..auth import tokens
from ..exceptions import NotFoundError, PermissionDeniedError, ValidationError
from . import serialize
from .base import BaseHandler, parse_id, run_sync


def parse_expiration(value: Any) -> dt.datetime | None:
    """ISO datetime (``T`` or space separated, optional offset) or unix seconds; naive = UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValidationError("expiration is out of range") from None
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
    raise ValidationError(f"expiration must be an ISO 8601 datetime or unix time, got {str(value)[:40]!r}")


def _within_scope(identity, row) -> bool:
    """May ``identity`` manage token ``row`` of its own user? Always, unless it is scoped; a
    scoped token manages only itself and the tokens it issued (direct children)."""
    if not getattr(identity, "scoped", False):
        return True
    return identity.token_id is not None and identity.token_id in (row.id, row.issuer_id)


def _token_row(row) -> dict[str, Any]:
    return {
        "id": row.id,
        "primary_namespace": row.primary_namespace,
        "role_bindings": row.role_bindings,
        "note": row.note,
        "created_on": serialize.timestamp(row.created_on),
        "expires_at": serialize.timestamp(row.expires_at),
        "last_used": serialize.timestamp(row.last_used),
        "scoped": bool(getattr(row, "scoped", False)),
    }


class TokenHandler(BaseHandler):
    async def post(self) -> None:
        """Body ``{primary_namespace?, expiration? (or exp), role_bindings?, note?}``.

        The upstream client sends ``exp`` where its server reads ``expiration``; both work here.
        Omitted fields are inherited from the caller; the result never exceeds the caller. A
        caller without credentials gets a short-lived token with the anonymous bindings (as
        upstream, whose client asks for one): it can do nothing a request without it could not.
        """
        body = self.json_body(required=False)
        expiration = body.get("expiration", body.get("exp"))
        issued = await run_sync(
            self.auth.issue_token_for,
            self.identity,
            primary_namespace=body.get("primary_namespace") or None,
            role_bindings=body.get("role_bindings"),
            expiration=parse_expiration(expiration),
            note=body.get("note"),
        )
        self.ok({"token": issued.token, "id": issued.id, "expiration": serialize.timestamp(issued.expires_at),
                 "primary_namespace": issued.primary_namespace, "role_bindings": issued.role_bindings})

    async def get(self) -> None:
        """The caller's live tokens (never their secrets); a scoped token's own family only."""
        self.require_authenticated()
        username = self.identity.username

        def work(db) -> list[dict[str, Any]]:
            rows = tokens.list_tokens(db, username=username) if username else []
            return [_token_row(r) for r in rows if _within_scope(self.identity, r)]

        self.ok(await self.in_db(work))

    async def delete(self) -> None:
        """Revoke the token this request was made with (log out a script)."""
        self.require_authenticated()
        if self.identity.token_id is None:
            raise ValidationError("this credential is not a revocable token (predefined tokens live in the config)")
        await self.in_db(tokens.revoke_token, self.identity.token_id)
        self.ok(message="token revoked")


class TokenByIdHandler(BaseHandler):
    async def delete(self, token_id: str) -> None:
        """Revoke one of one's own tokens (admins: anyone's; scoped tokens: see module doc)."""
        self.require_authenticated()
        wanted = parse_id(token_id, "token id")
        await self.in_db(self._revoke, wanted)
        self.ok(message=f"token {wanted} revoked")

    def _revoke(self, db, wanted: int) -> None:
        """Look up, check and revoke in one transaction."""
        row = db.get(orm.Token, wanted)
        mine = row is not None and row.username is not None and row.username == self.identity.username
        if row is None or not (mine or self.identity.admin):
            raise NotFoundError(f"token {wanted} does not exist")
        if not _within_scope(self.identity, row):
            raise PermissionDeniedError(
                f"a scoped token may revoke only itself and the tokens it issued, not token {wanted}; "
                "use a login session or an unscoped token")
        tokens.revoke_token(db, wanted)


HANDLERS = [
    (r"/api/v1/token/", TokenHandler),
    (r"/api/v1/token/([^/]+)/", TokenByIdHandler),
]
