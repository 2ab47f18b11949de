"""``POST /login/`` and ``POST /logout/``: password sessions for browsers and the upstream client.

A successful login issues one of our ordinary tokens (hashed, expiring, revocable) and puts it
in the ``conda-store-auth`` cookie (HttpOnly, SameSite=Strict); the xsrf cookie is set at the
same time so pages can send ``X-XSRFToken`` on writes. Only offered when the configured
authenticator has password login enabled; under JupyterHub users log in through the hub.
"""

from __future__ import annotations

from ..auth import tokens
from ..exceptions import AuthenticationError, ValidationError
from . import serialize
from .base import BaseHandler, run_sync


class LoginHandler(BaseHandler):
    invalid_credentials_ok = True  # logging in again is the way out of an expired session

    def check_xsrf_cookie(self) -> None:
        """Logging in creates the session; there is no cookie session to protect yet."""

    async def post(self) -> None:
        if not self.auth.authenticator.login_enabled:  # before reading fields it would never use
            raise AuthenticationError("password login is disabled on this server; use an API token")
        content_type = self.request.headers.get("Content-Type", "")
        form = self.form_body() if content_type.startswith(("application/x-www-form", "multipart/")) else None
        data = form if form is not None else self.json_body()
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise ValidationError("username and password are required")
        # The authenticator may ask a slow system (PAM, LDAP); issuing writes the database.
        identity = await run_sync(self.auth.login, username, password)
        expiration = await start_browser_session(self, identity, note="login session")
        self.ok({"username": identity.username, "primary_namespace": identity.primary_namespace,
                 "expiration": expiration})


async def start_browser_session(handler: BaseHandler, identity, note: str = "browser session") -> str | None:
    """Issue a session token for ``identity`` and put it in the ``conda-store-auth`` cookie.

    Shared by every way of logging in (password, pasted token, JupyterHub OAuth): the browser
    always holds one of our ordinary tokens, so ``POST /logout/`` can revoke it. Returns the
    session's expiration (ISO) for the answer.
    """
    auth = handler.auth
    issued = await run_sync(auth.issue_token_for, identity, primary_namespace=None, role_bindings=None,
                            expiration=None, note=note)  # a database write: off the event loop
    handler.set_cookie(
        auth.cookie_name, issued.token, path=handler.server.base_url, expires=issued.expires_at,
        httponly=True, samesite="Strict", secure=handler.request.protocol == "https",
    )
    handler.xsrf_token  # noqa: B018 - property access sets the _xsrf cookie for later writes
    return serialize.timestamp(issued.expires_at)


class LogoutHandler(BaseHandler):
    invalid_credentials_ok = True  # an expired session can always be ended (its cookie is cleared)

    def check_xsrf_cookie(self) -> None:
        """Ending a session is harmless even if a third party triggers it."""

    async def post(self) -> None:
        if self.cookie_authenticated and self.identity.token_id is not None:
            await self.in_db(tokens.revoke_token, self.identity.token_id)
        self.clear_cookie(self.auth.cookie_name, path=self.server.base_url)
        self.ok(message="logged out")


HANDLERS = [
    (r"/login/", LoginHandler),
    (r"/logout/", LogoutHandler),
]
