"""JupyterHub tokens as credentials: the CLI and the Lab extension need no setup inside a hub.

Inside a single-user server the hub exports ``JUPYTERHUB_API_TOKEN``; the ``conda-store`` CLI
sends it as ``Authorization: token <t>`` to ``/services/conda-store/``. This module checks such
a token with the hub and turns its owner into an :class:`~.rbac.Identity`, exactly as a
password login would (:meth:`AuthenticationBackend.identity_for_user`): primary namespace = the
user's name, hub groups → ``group_role_bindings``, hub admins → ``admin_role_bindings``.

How a token is checked (what ``jupyterhub.services.auth.HubAuth.user_for_token`` does):
``GET {api_url}/user`` *authenticated with the token itself*. The hub answers with the owner's
model and the token's expanded scopes, or 403 for an unknown, expired or revoked token. We then
require the service access scope (``access:services!service=<service_name>``, or the unfiltered
``access:services``) among those scopes: a token the user created for something else (say, only
``read:users:name``) must not act on their environments.

Why not call ``HubAuth.user_for_token`` itself: its synchronous path blocks on a
single-threaded executor with no way to bound the wait (the underlying aiohttp call defaults to
a 5-minute timeout), and it raises tornado ``HTTPError`` on hub trouble. We make the same request
with httpx, a short ``timeout`` and our own cache; and we need no jupyterhub installed (an
external service may talk to a hub elsewhere).

Blocking trade-off: ``AuthenticationBackend.authenticate_request`` is synchronous (handlers
call it from ``prepare``), so a cache miss holds the event loop for one round trip to the hub —
normally a few milliseconds (same host or cluster), never more than ``timeout``. Results are
cached for ``cache_ttl`` seconds (failures for ``negative_cache_ttl``), so a client making many
calls pays once. The price of the cache: a token revoked on the hub keeps working here for up to
``cache_ttl`` seconds, as with HubAuth's ``cache_max_age``. If the hub is down, hub tokens are
anonymous (401) until it is back; our own tokens keep working.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..exceptions import ValidationError
from .rbac import Identity, normalize_bindings

if TYPE_CHECKING:
    from .backend import AuthenticationBackend

__all__ = ["HubAuthentication", "has_access_scope", "running_as_hub_service"]


def running_as_hub_service(environ: Mapping[str, str] | None = None) -> bool:
    """Does this process look like a JupyterHub service (managed, or external with hub env)?

    The hub gives services ``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_API_TOKEN``. A *single-user
    server* (a notebook terminal) has both too, plus ``JUPYTERHUB_USER``: a conda-store-server
    started there for development is not the hub's service and should not consult the hub.
    """
    env = os.environ if environ is None else environ
    return bool(env.get("JUPYTERHUB_API_URL") and env.get("JUPYTERHUB_API_TOKEN")) and not env.get("JUPYTERHUB_USER")


def has_access_scope(scopes: set[str], service_name: str) -> bool:
    """Does a token's *expanded* scope list (as ``/hub/api/user`` returns it) grant access to us?

    ``access:services`` only takes the ``service=`` filter, so for this one scope JupyterHub's
    general ``check_scopes`` reduces to: the unfiltered scope, or the filter naming us. (Not
    importing jupyterhub also keeps its ~0.5 s import off the first request, and lets an
    external service run without jupyterhub installed.)
    """
    return "access:services" in scopes or f"access:services!service={service_name}" in scopes


class HubAuthentication(LoggingConfigurable):
    """Accept JupyterHub API tokens (``c.HubAuthentication.*``); used by ``AuthenticationBackend``."""

    enabled = Bool(
        help="""Check ``Authorization: token|Bearer <t>`` credentials that are not ours (no
        ``cst_`` prefix, not predefined) with JupyterHub. Default: on when this process runs as a
        hub service, i.e. ``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_API_TOKEN`` are set (and
        ``JUPYTERHUB_USER`` is not, which marks a single-user server's environment).""",
    ).tag(config=True)

    @default("enabled")
    def _default_enabled(self) -> bool:
        return running_as_hub_service()

    api_url = Unicode(
        help="""The hub's API URL, e.g. ``http://127.0.0.1:8081/hub/api`` (the hub process, not
        the proxy). Default: ``$JUPYTERHUB_API_URL``, which the hub sets for managed services.""",
    ).tag(config=True)

    @default("api_url")
    def _default_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "")

    @validate("api_url")
    def _strip_slash(self, proposal) -> str:
        return proposal.value.rstrip("/")

    api_token = Unicode(
        help="""This service's own hub API token. Default: ``$JUPYTERHUB_API_TOKEN``. Checking a
        user's token does not need it (the hub identifies a token with the token itself); it
        marks this process as a registered service and is what a hub OAuth login uses.""",
    ).tag(config=True)

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    service_name = Unicode(
        help="""This service's name in ``c.JupyterHub.services``. Tokens must carry
        ``access:services!service=<service_name>`` (or ``access:services``). Default:
        ``$JUPYTERHUB_SERVICE_NAME`` (set by the hub for managed services), else ``conda-store``.""",
    ).tag(config=True)

    @default("service_name")
    def _default_service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME") or "conda-store"

    cache_ttl = Float(
        60.0,
        help="""Seconds a hub answer for a valid token is reused before asking the hub again. A
        token revoked on the hub keeps working here for at most this long; 0 asks every time
        (each request then waits for the hub).""",
    ).tag(config=True)

    negative_cache_ttl = Float(
        10.0,
        help="""Seconds a rejected token (unknown, expired, revoked, or missing the access scope)
        stays rejected without asking the hub again, so a client retrying with a bad token does
        not load the hub. Hub errors (unreachable, 5xx) are never cached.""",
    ).tag(config=True)

    cache_size = Integer(
        10_000,
        help="""Most cached token answers kept; expired ones are dropped first, then the oldest.
        0 disables the cache (every request with a hub token asks the hub).""",
    ).tag(config=True)

    timeout = Float(
        5.0,
        help="""Seconds to wait for the hub on a cache miss. The request handler (and the event
        loop) waits this long at most; on timeout the token counts as no credential (401).""",
    ).tag(config=True)

    admin_role_bindings = Dict(
        {"*/*": ["admin"]},
        help="""Role bindings of JupyterHub admins (``admin: true`` in the hub's user model).
        Default ``*/*`` admin: hub admins administer conda-store too. ``{}`` makes them ordinary
        users; e.g. ``{"*/*": ["viewer"]}`` lets them read everything but change only their own
        namespace.""",
    ).tag(config=True)

    @validate("admin_role_bindings")
    def _check_admin_bindings(self, proposal) -> dict:
        normalize_bindings(proposal.value)  # raises ValidationError on a bad glob or role
        return proposal.value

    @validate("cache_ttl", "negative_cache_ttl", "timeout")
    def _non_negative(self, proposal) -> float:
        if proposal.value < 0:
            raise ValidationError(f"HubAuthentication.{proposal.trait.name} must be >= 0")
        return proposal.value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache: dict[str, tuple[float, dict | None]] = {}
        self._lock = threading.Lock()
        self._client = None

    # -- public ------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.enabled and self.api_url)

    @property
    def required_access_scope(self) -> str:
        return f"access:services!service={self.service_name}"

    def user_model(self, token: str) -> dict | None:
        """The hub's user model for ``token`` if it may use this service, else None. Never raises."""
        if not self.active or not token or len(token) > 4096:
            return None
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            model = self._ask_hub(token)
        except Exception as exc:  # noqa: BLE001 - a hub problem must never become a 500 here
            self.log.warning("JupyterHub token check failed (%s: %s); treating the request as anonymous",
                             type(exc).__name__, exc)
            return None
        model = self._accept(model)
        ttl = self.cache_ttl if model is not None else self.negative_cache_ttl
        if ttl > 0:
            self._remember(key, now + ttl, model)
        return model

    def identity_for_token(self, token: str, backend: "AuthenticationBackend") -> Identity | None:
        """The identity of a hub user's token, or None (not a hub token / no access / hub down)."""
        model = self.user_model(token)
        if model is None:
            return None
        try:
            identity = backend.identity_for_user(model["name"], admin=False, groups=model.get("groups") or ())
        except ValidationError as exc:  # a hub name that cannot be a namespace
            self.log.warning("JupyterHub user %r cannot use conda-store: %s", model["name"][:64], exc)
            return None
        if model.get("admin"):
            identity = self._with_admin_bindings(identity)
        return identity

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- pieces ------------------------------------------------------------------------------
    def _ask_hub(self, token: str) -> dict | None:
        """``GET {api_url}/user`` as the token's owner; None for 401/403/404 (not a live token)."""
        import httpx

        with self._lock:
            if self._client is None:
                # One client: keep-alive to the hub, so a cache miss costs a request, not a connect.
                self._client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        response = self._client.get(f"{self.api_url}/user", headers={"Authorization": f"token {token}"})
        if response.status_code in (401, 403, 404):
            return None
        response.raise_for_status()
        model = response.json()
        return model if isinstance(model, dict) else None

    def _accept(self, model: dict | None) -> dict | None:
        """Users only (not other services), holding this service's access scope."""
        if model is None:
            return None
        name = model.get("name")
        if model.get("kind", "user") != "user" or not isinstance(name, str) or not name:
            self.log.info("JupyterHub token of a %s, not a user: not accepted", model.get("kind"))
            return None
        scopes = set(model.get("scopes") or ())
        if not has_access_scope(scopes, self.service_name):
            self.log.info("JupyterHub token of %r lacks %s: not accepted", name[:64], self.required_access_scope)
            return None
        return model

    def _with_admin_bindings(self, identity: Identity) -> Identity:
        extra = normalize_bindings(self.admin_role_bindings)
        if not extra:
            return identity
        bindings = {glob: set(roles) for glob, roles in identity.role_bindings.items()}
        for glob, roles in extra.items():
            bindings.setdefault(glob, set()).update(roles)
        # ``admin`` (shown to clients, implies */* admin) only when that is what was configured.
        admin = identity.admin or "admin" in extra.get("*/*", ())
        return replace(identity, role_bindings=bindings, admin=admin)

    def _remember(self, key: str, expires: float, model: dict | None) -> None:
        if self.cache_size < 1:
            return
        with self._lock:
            if len(self._cache) >= self.cache_size:
                now = time.monotonic()
                for stale in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                    del self._cache[stale]
                while len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]  # dicts keep insertion order: oldest first
            self._cache[key] = (expires, model)
