"""JupyterHub tokens as credentials: the CLI and the Lab extension need no setup inside a hub.

Inside a single-user server the hub exports ``JUPYTERHUB_API_TOKEN``; the ``conda-store`` CLI
sends it as ``Authorization: token <t>`` to ``/services/conda-store/``. This module checks such
a token with the hub; ``AuthenticationBackend`` turns its owner into an identity exactly as a
password login would (``identity_for_user``): primary namespace = the user's name, hub groups →
``group_role_bindings``, hub admins → ``admin_role_bindings`` (configured here).

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

Not blocking the server: request handlers await :meth:`HubAuthentication.check_async`
(``AuthenticationBackend.authenticate_request_async``), so a slow hub holds only the requests
that carry hub tokens, never the event loop. The synchronous :meth:`~HubAuthentication.check`
remains for callers already on a worker thread (the registry runs authentication in an executor).

What a hub lookup costs, and why it is bounded:

- Answers are cached for ``cache_ttl`` seconds, rejections for ``negative_cache_ttl``, in two
  separate bounded caches: a flood of junk tokens fills only the negative one and never evicts
  the answers of real users. The price: a token revoked on the hub keeps working here for up to
  ``cache_ttl`` seconds, as with HubAuth's ``cache_max_age``.
- Each lookup waits at most ``timeout`` seconds in total.
- A circuit breaker: after a hub *error* (unreachable, timeout, 5xx) uncached hub tokens get
  503 for ``failure_backoff`` seconds without asking the hub, so an unresponsive hub costs one
  ``timeout`` per ``failure_backoff``, not one per request. Our own tokens keep working.

What a caller sees: a token the hub rejects (or one without the access scope) is an invalid
credential, :class:`AuthenticationError` (401) saying which; a hub that cannot answer is
:class:`ServiceUnavailableError` (503): the token may well be fine, so the client should retry,
not ask its user for another token. This module only says *who* the hub vouches for
(:class:`HubUser`); ``AuthenticationBackend`` turns that into an identity, so this module never
imports the backend.

Hub identities expire (``Identity.expiration`` = now + ``AuthenticationBackend.default_token_lifetime``;
JupyterHub's ``/user`` answer does not tell a token's own expiry), so a token minted from one
cannot outlive that; and a session-like copy keeps only the user's own bindings, not the grants
that hold only while the hub says so (hub admin, hub groups): see :class:`HubIdentity`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..exceptions import AuthenticationError, ServiceUnavailableError, ValidationError
from . import tokens as _tokens
from .rbac import Identity, RoleBindings, normalize_bindings

__all__ = ["HubAuthentication", "HubIdentity", "HubUser", "has_access_scope", "running_as_hub_service"]

REJECTED_BY_HUB = "invalid token: JupyterHub does not accept it (unknown, expired or revoked)"
"""Why a token the hub answers 401/403/404 for is refused."""


@dataclass(frozen=True)
class HubUser:
    """What the hub vouches for about a token's owner; ``AuthenticationBackend`` makes the identity."""

    name: str
    admin: bool = False
    groups: tuple[str, ...] = ()


@dataclass
class HubIdentity(Identity):
    """A user authenticated by a JupyterHub token.

    ``role_bindings`` include the grants the hub vouches for right now (hub admin, hub groups);
    ``persistent_role_bindings`` are the user's own (``authenticated_role_bindings``), the only
    ones a session-like token copied from this identity may store: the hub grants are re-derived
    each time the user comes back with a hub token, so a hub-side revocation applies here too.
    """

    persistent_role_bindings: RoleBindings = field(default_factory=dict)


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
        not load the hub. Hub errors are not cached per token; see ``failure_backoff``.""",
    ).tag(config=True)

    cache_size = Integer(
        10_000,
        help="""Most accepted tokens whose hub answer is kept; expired ones are dropped first,
        then the oldest. 0 disables the cache (every request with a hub token asks the hub).""",
    ).tag(config=True)

    negative_cache_size = Integer(
        10_000,
        help="""Most rejected tokens remembered (separately from accepted ones, so a flood of
        junk tokens never pushes out real users' answers). 0 disables the negative cache.""",
    ).tag(config=True)

    timeout = Float(
        5.0,
        help="""Seconds a cache miss waits for the hub, in total. Only the request carrying the
        token waits; on timeout the request gets 503 (the hub could not be asked).""",
    ).tag(config=True)

    failure_backoff = Float(
        30.0,
        help="""After a hub error (unreachable, timeout, 5xx), seconds during which tokens not
        already cached get 503 without asking the hub: an unresponsive hub then costs one
        ``timeout`` per this many seconds instead of one per request. 0 asks every time.""",
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

    @validate("cache_ttl", "negative_cache_ttl", "timeout", "failure_backoff")
    def _non_negative(self, proposal) -> float:
        if proposal.value < 0:
            raise ValidationError(f"HubAuthentication.{proposal.trait.name} must be >= 0")
        return proposal.value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache: dict[str, tuple[float, dict]] = {}  # token digest -> (expires, accepted model)
        self._rejected: dict[str, float] = {}  # token digest -> expires
        self._lock = threading.Lock()  # the sync path runs on executor threads too
        self._down_until = 0.0  # circuit breaker: monotonic time before which the hub is not asked
        self._client = None  # httpx.Client, for the synchronous path
        self._async_client = None  # httpx.AsyncClient, bound to ``_async_loop``
        self._async_loop: asyncio.AbstractEventLoop | None = None

    # -- public ------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.enabled and self.api_url)

    @property
    def required_access_scope(self) -> str:
        return f"access:services!service={self.service_name}"

    def check(self, token: str) -> HubUser:
        """Who the hub says owns ``token``, if it may use this service.

        Raises :class:`AuthenticationError` for a token the hub rejects or that lacks the access
        scope, :class:`ServiceUnavailableError` when the hub cannot answer. Blocks for up to
        ``timeout`` on a cache miss: for worker threads only; on the event loop use
        :meth:`check_async`.
        """
        key = self._key_to_ask(token)
        if key is None:
            return self._known(token)
        try:
            model = self._ask_hub(token)
        except Exception as exc:  # noqa: BLE001 - a hub problem must never become a 500 here
            raise self._hub_failed(exc) from None
        return self._settle(key, model)

    async def check_async(self, token: str) -> HubUser:
        """:meth:`check` without blocking the event loop: only this coroutine waits."""
        key = self._key_to_ask(token)
        if key is None:
            return self._known(token)
        try:
            model = await asyncio.wait_for(self._ask_hub_async(token), self.timeout)
        except Exception as exc:  # noqa: BLE001 - incl. TimeoutError; never a 500
            raise self._hub_failed(exc) from None
        return self._settle(key, model)

    def user_model(self, token: str) -> dict | None:
        """The hub's (accepted) user model for ``token``, or None whatever the reason. Never raises."""
        try:
            self.check(token)
        except (AuthenticationError, ServiceUnavailableError):
            return None
        return self._cached(token)

    async def user_model_async(self, token: str) -> dict | None:
        """:meth:`user_model` on the event loop."""
        try:
            await self.check_async(token)
        except (AuthenticationError, ServiceUnavailableError):
            return None
        return self._cached(token)

    def close(self) -> None:
        """Close the synchronous client; the async one is dropped (see :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._async_client = self._async_loop = None

    async def aclose(self) -> None:
        """Close both clients; call on the loop that used the async one."""
        client, loop = self._async_client, self._async_loop
        self.close()
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    # -- cache and circuit breaker -------------------------------------------------------------
    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def _cached(self, token: str) -> dict | None:
        """The cached model of an accepted token, else None (rejected, unknown, or hub down)."""
        if not self.active or not token or len(token) > 4096:
            return None
        with self._lock:
            hit = self._cache.get(self._digest(token))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _known(self, token: str) -> HubUser:
        """The answer when the hub is not to be asked (see :meth:`_key_to_ask`), as :meth:`check`."""
        if not self.active:
            raise AuthenticationError("invalid token: JupyterHub tokens are not accepted by this server")
        if not token or len(token) > 4096:
            raise AuthenticationError(REJECTED_BY_HUB)
        key, now = self._digest(token), time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            rejected = self._rejected.get(key)
            down_for = self._down_until - now
        if hit is not None and hit[0] > now:
            return _user_of(hit[1])
        if rejected is not None and rejected[0] > now:
            raise AuthenticationError(rejected[1])
        raise ServiceUnavailableError(
            f"JupyterHub at {self.api_url} cannot check tokens right now (it failed a moment ago); "
            f"retry in {max(1, round(down_for))} s")

    def _key_to_ask(self, token: str) -> str | None:
        """The cache key if the hub must be asked about ``token``; None if the answer is known
        (cached either way), the token cannot be one, or the circuit breaker is open."""
        if not self.active or not token or len(token) > 4096:
            return None
        key, now = self._digest(token), time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return None
            rejected = self._rejected.get(key)
            if rejected is not None and rejected[0] > now:
                return None
            if now < self._down_until:
                return None
        return key

    def _hub_failed(self, exc: BaseException) -> ServiceUnavailableError:
        """Open the circuit breaker (log once per opening) and return the error for the caller."""
        now = time.monotonic()
        detail = f"{type(exc).__name__}: {str(exc)[:200] or 'timeout'}"
        with self._lock:
            was_down = now < self._down_until
            self._down_until = max(self._down_until, now + self.failure_backoff)
        if not was_down:
            self.log.warning(
                "JupyterHub token check failed (%s); hub tokens not already checked get 503 for the "
                "next %g s", detail, self.failure_backoff)
        return ServiceUnavailableError(f"JupyterHub at {self.api_url} could not check the token ({detail}); "
                                       "retry later")

    def _settle(self, key: str, model: dict | None) -> HubUser:
        """Filter the hub's answer (:meth:`_accept`) and remember it in the matching cache."""
        reason = self._refusal(model)
        now = time.monotonic()
        if reason is None:
            assert model is not None
            if self.cache_ttl > 0:
                self._remember(self._cache, self.cache_size, key, (now + self.cache_ttl, model))
            return _user_of(model)
        if self.negative_cache_ttl > 0:
            self._remember(self._rejected, self.negative_cache_size, key, (now + self.negative_cache_ttl, reason))
        raise AuthenticationError(reason)

    def _remember(self, cache: dict, size: int, key: str, entry: Any) -> None:
        if size < 1:
            return
        with self._lock:
            cache.pop(key, None)  # re-insert at the end: the newest
            if len(cache) >= size:
                now = time.monotonic()
                for stale in [k for k, v in cache.items() if v[0] <= now]:
                    del cache[stale]
                while len(cache) >= size:
                    del cache[next(iter(cache))]  # dicts keep insertion order: oldest first
            cache[key] = entry

    # -- pieces ------------------------------------------------------------------------------
    def _request_args(self, token: str) -> tuple[str, dict[str, str]]:
        return f"{self.api_url}/user", {"Authorization": f"token {token}"}

    @staticmethod
    def _model_of(response) -> dict | None:
        """None for 401/403/404 (not a live token); raises on hub errors (5xx, bad JSON)."""
        if response.status_code in (401, 403, 404):
            return None
        response.raise_for_status()
        model = response.json()
        return model if isinstance(model, dict) else None

    def _ask_hub(self, token: str) -> dict | None:
        """``GET {api_url}/user`` as the token's owner (blocking)."""
        import httpx

        with self._lock:
            if self._client is None:
                # One client: keep-alive to the hub, so a cache miss costs a request, not a connect.
                self._client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        url, headers = self._request_args(token)
        return self._model_of(self._client.get(url, headers=headers))

    async def _ask_hub_async(self, token: str) -> dict | None:
        """``GET {api_url}/user`` as the token's owner, on the running loop.

        One shared AsyncClient (keep-alive) per event loop: an httpx async client belongs to the
        loop it was first used on, so a new loop (tests, a restarted server) gets a new one.
        """
        import httpx

        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_loop is not loop:
            self._async_client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
            self._async_loop = loop
        url, headers = self._request_args(token)
        return self._model_of(await self._async_client.get(url, headers=headers))

    def _refusal(self, model: dict | None) -> str | None:
        """Why the hub's answer does not let the token in (None: accepted).

        Users only (not other services), holding this service's access scope.
        """
        if model is None:
            return REJECTED_BY_HUB
        name = model.get("name")
        if model.get("kind", "user") != "user" or not isinstance(name, str) or not name:
            self.log.info("JupyterHub token of a %s, not a user: not accepted", model.get("kind"))
            return f"invalid token: it is a JupyterHub token of a {model.get('kind')}, not of a user"
        scopes = set(model.get("scopes") or ())
        if not has_access_scope(scopes, self.service_name):
            self.log.info("JupyterHub token of %r lacks %s: not accepted", name[:64], self.required_access_scope)
            return (f"invalid token: this JupyterHub token lacks the {self.required_access_scope} scope "
                    "(give it that scope, e.g. through c.Spawner.server_token_scopes)")
        return None


def _user_of(model: dict) -> HubUser:
    groups = model.get("groups") or ()
    return HubUser(name=model["name"], admin=bool(model.get("admin")),
                   groups=tuple(g for g in groups if isinstance(g, str)))
