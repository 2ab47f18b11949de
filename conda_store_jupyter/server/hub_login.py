"""Browser login through JupyterHub (OAuth), when the server runs as a hub service.

``GET /oauth_login/?next=<page>`` sends the browser to the hub's authorize URL (with a state
cookie and PKCE, as ``jupyterhub.services.auth.HubOAuth`` does for its own handlers); the hub
sends it back to ``/oauth_callback`` with a code. We trade the code for a hub token, check it
like any hub token (the user must hold ``access:services!service=<name>``), and start an
ordinary browser session: one of *our* hashed, revocable tokens in the ``conda-store-auth``
cookie (``login.start_browser_session``). The hub token is not kept. Users who already have a
hub session see no second password prompt.
"""

from __future__ import annotations

import os
import re

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


def _oauth(handler: BaseHandler):
    """One ``HubOAuth`` per application (it keeps the pending OAuth states in memory)."""
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
        params["state"] = oauth.set_state_cookie(self, next_url=_next_url(self, self.get_argument("next", "")),
                                                 code_verifier=verifier)
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
        cookie_state = self.get_secure_cookie(oauth.get_state_cookie_name(state))
        oauth.clear_oauth_state_cookies(self)
        if cookie_state is None or cookie_state.decode("ascii", "replace") != state:
            raise AuthenticationError("the OAuth state does not match this browser: start again at the login page")
        next_url, verifier = oauth.get_next_url(state), oauth.get_code_verifier(state)
        oauth.clear_oauth_state(state)
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
