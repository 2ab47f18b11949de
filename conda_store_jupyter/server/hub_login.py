"""Browser login through JupyterHub (OAuth), when the server runs as a hub service.

``GET /oauth_login/?next=<page>`` sends the browser to the hub's authorize URL (with a state
cookie and PKCE, as ``jupyterhub.services.auth.HubOAuth`` does for its own handlers); the hub
sends it back to ``/oauth_callback`` with a code. We trade the code for a hub token, check it
like any hub token (the user must hold ``access:services!service=<name>``), and start an
ordinary browser session: one of *our* hashed, revocable tokens in the ``conda-store-auth``
cookie (``login.start_browser_session``). The hub token is not kept. Users who already have a
hub session see no second password prompt.

The pending login (state, page to return to, PKCE verifier) travels in a cookie signed with the
server's cookie secret, not in ``HubOAuth``'s memory: with several server processes
(``CondaStoreServer.processes``) the callback often reaches another process than the login.
"""

from __future__ import annotations

import json
import os
import re
import secrets

from tornado import web
from tornado.httputil import url_concat

from ..exceptions import AuthenticationError, ValidationError
from .base import BaseHandler
from .login import start_browser_session

_SAFE_NEXT = re.compile(r"[A-Za-z0-9_\-./?=&%+~]*")
"""``next`` is a page path relative to our prefix; anything else is dropped (no open redirect)."""


def hub_oauth_configured(auth) -> bool:
    """Hub token checks are on and the hub gave us an OAuth client (managed services get one)."""
    return auth.hub is not None and bool(os.environ.get("JUPYTERHUB_CLIENT_ID")) and bool(auth.hub.api_token)


STATE_COOKIE = "conda-store-oauth-"
"""Prefix of the signed cookie holding one pending login (its name ends with the state)."""

STATE_MAX_AGE_DAYS = 10 / (24 * 60)
"""A pending login is honoured for 10 minutes (as JupyterHub's own state cookies)."""


def _oauth(handler: BaseHandler):
    """One ``HubOAuth`` per application: login URL, PKCE and the code exchange (no state kept)."""
    oauth = handler.settings.get("conda_store_hub_oauth")
    if oauth is None:
        from jupyterhub.services.auth import HubOAuth

        hub = handler.auth.hub
        oauth = HubOAuth(api_url=hub.api_url, api_token=hub.api_token, base_url=handler.server.base_url,
                         cache_max_age=0)
        handler.settings["conda_store_hub_oauth"] = oauth
    return oauth


def _next_url(handler: BaseHandler, value: str | None) -> str:
    prefix = handler.server.base_url
    value = value or ""
    if not _SAFE_NEXT.fullmatch(value) or ".." in value or value.startswith(("/", "login/", "oauth_")):
        value = ""
    return prefix + value


class HubLoginHandler(BaseHandler):
    invalid_credentials_ok = True  # logging in again is the way out of an expired session

    def get(self) -> None:
        if not hub_oauth_configured(self.auth):
            raise ValidationError("JupyterHub login is not available: this server is not running as a hub service")
        oauth = _oauth(self)
        params: dict[str, str] = {}
        verifier = None
        if oauth.pkce_enabled:
            verifier, challenge, method = oauth.generate_pkce_code_challenge()
            params.update(code_challenge=challenge, code_challenge_method=method)
        state = secrets.token_urlsafe(16)
        pending = {"next": _next_url(self, self.get_argument("next", "")), "verifier": verifier}
        # A cookie per state: two tabs logging in at once do not overwrite each other's.
        self.set_secure_cookie(STATE_COOKIE + state, json.dumps(pending), expires_days=STATE_MAX_AGE_DAYS,
                               path=self.server.base_url + "oauth_callback", httponly=True, samesite="Lax",
                               secure=self.request.protocol == "https")
        params["state"] = state
        self.redirect(url_concat(oauth.login_url, params))


class HubCallbackHandler(BaseHandler):
    invalid_credentials_ok = True  # the end of a new login, whatever the old session's state

    async def get(self) -> None:
        if not hub_oauth_configured(self.auth):
            raise ValidationError("JupyterHub login is not available: this server is not running as a hub service")
        oauth = _oauth(self)
        error = self.get_argument("error", None)
        if error:
            raise AuthenticationError(f"JupyterHub login failed: {self.get_argument('error_description', error)}")
        code, state = self.get_argument("code", None), self.get_argument("state", None)
        if not code or not state:
            raise ValidationError("the OAuth callback needs 'code' and 'state': start again at the login page")
        pending = None
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", state):  # ours are; anything else names no cookie
            cookie = STATE_COOKIE + state
            pending = self.get_secure_cookie(cookie, max_age_days=STATE_MAX_AGE_DAYS)
            self.clear_cookie(cookie, path=self.server.base_url + "oauth_callback")
        if pending is None:
            raise AuthenticationError("the OAuth state does not match this browser: start again at the login page")
        pending = json.loads(pending)
        next_url, verifier = pending["next"], pending["verifier"]
        try:
            hub_token = await oauth.token_for_code(code, sync=False, code_verifier=verifier)
        except web.HTTPError as exc:
            raise AuthenticationError(f"JupyterHub refused the login code: {exc.log_message or exc}") from None
        identity = await self.auth.authenticate_request_async(cookie=None, authorization=f"token {hub_token}")
        if not identity.authenticated:
            raise AuthenticationError(
                f"JupyterHub says you may not use this service (you need {self.auth.hub.required_access_scope})")
        await start_browser_session(self, identity, note="JupyterHub login")
        self.redirect(next_url or self.server.base_url)


HANDLERS = [
    (r"/oauth_login/", HubLoginHandler),
    (r"/oauth_callback/", HubCallbackHandler),
]
