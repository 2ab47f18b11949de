"""Who is calling, and may they? Configurable authentication + authorization for the service.

``AuthenticationBackend`` turns request credentials into an :class:`~.rbac.Identity`, issues
down-scoped tokens, and answers authorization questions by combining the identity's role bindings
with the namespace role mappings stored in the database. It is configured from the same traitlets
config as ``CondaStore`` (``c.AuthenticationBackend.*``); trait names follow upstream conda-store
where the concept is the same (``predefined_tokens``, ``authenticated_role_bindings``...).

Password login is pluggable through :class:`Authenticator` (JupyterHub's pattern); the default,
:class:`NoLoginAuthenticator`, accepts tokens only. JupyterHub OAuth (in ``jupyter/``) ends in
:meth:`AuthenticationBackend.identity_for_user` like a password login does.

Two kinds of issued token (``orm.Token.scoped``):

- **session-like** (``scoped=False``): what a login yields, or a token copying its caller's
  namespace and bindings. At use time it also gets the user's *live* grants: ``admin_users``
  membership and namespace role mappings, so changing those applies at once.
- **scoped**: the caller asked for other bindings or another primary namespace. Its bindings
  (a subset of the caller's effective bindings at issue time) are all it may ever do — a read-only
  CI token stays read-only even if its user is an admin or later gains a role mapping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from sqlalchemy import select
from traitlets import Dict, Integer, Set, Type, Unicode, validate
from traitlets.config import LoggingConfigurable

from .. import orm
from ..exceptions import AuthenticationError, PermissionDeniedError, ServiceUnavailableError, ValidationError
from ..naming import DYNAMIC_NAMESPACE, namespace_for_username, validate_name  # noqa: F401 - re-exported
from . import tokens as _tokens
from .authenticators import Authenticator, DummyAuthenticator, NoLoginAuthenticator  # noqa: F401 - config paths
from .credentials import Credential, presented
from .hub import HubAuthentication, HubIdentity, HubUser
from .rbac import (
    PERMISSION_ALIASES,
    Identity,
    Permission,
    RoleBindings,
    canonical_role,
    effective_bindings,
    is_allowed,
    is_subset,
    normalize_bindings,
)

__all__ = [
    "AuthenticationBackend",
    "Authenticator",
    "DummyAuthenticator",
    "NoLoginAuthenticator",
    "TokenIdentity",
    "namespace_for_username",
]

NOT_SUBSET_MESSAGE = "Requested role_bindings are not a subset of the current token's permissions"
"""Upstream's wording for the 400 of ``POST /api/v1/token/`` (clients may match on it)."""

ANONYMOUS_TOKEN_NOTE = "anonymous"
"""The note of every token issued to a caller without credentials (how they are found to purge)."""

ANONYMOUS_TOKEN_KEEP = dt.timedelta(days=1)
"""How long an expired anonymous token's row is kept (so it is still reported as expired, not
unknown), before the next anonymous issue deletes it."""


@dataclass
class TokenIdentity(Identity):
    """An identity from an issued token. ``scoped`` tokens get no live grants (see module doc).

    ``anonymous_grant``: issued to a caller without credentials; it counts as authenticated (as
    upstream's does) but opens nothing that needs a login (:meth:`BaseHandler.require_authenticated`).
    """

    scoped: bool = False
    anonymous_grant: bool = False


def _is_scoped(identity: Identity) -> bool:
    return bool(getattr(identity, "scoped", False))


def _substitute(bindings: Mapping[str, Iterable[str]], **names: str) -> RoleBindings:
    """Replace ``{primary_namespace}``/``{default_namespace}`` in ARN globs, then validate."""
    out: dict[str, list[str]] = {}
    for glob, roles in bindings.items():
        for key, value in names.items():
            glob = glob.replace("{" + key + "}", value)
        out.setdefault(glob, []).extend(roles)
    return normalize_bindings(out)


# -- the backend ------------------------------------------------------------------------------
class AuthenticationBackend(LoggingConfigurable):
    """Credentials → identity, token issuing, and authorization checks."""

    predefined_tokens = Dict(
        help="""Service-account tokens written in the config, which never expire:
        ``{"<token>": {"primary_namespace": "ci", "role_bindings": {"ci/*": ["admin"]},
        "username": "ci-bot"}}`` (``username`` optional). Use long random strings (at least 16
        characters): anyone who knows one has its permissions. Prefer issued tokens, which are
        stored hashed and can be revoked.""",
    ).tag(config=True)

    authenticated_role_bindings = Dict(
        {"{primary_namespace}/*": ["admin"], "{default_namespace}/*": ["viewer"]},
        help="""Role bindings of a logged-in user (password or JupyterHub login), and so of the
        session tokens they get. ``{primary_namespace}`` is replaced by the user's namespace and
        ``{default_namespace}`` by ``CondaStore.default_namespace``. Default: admin of their own
        namespace, viewer of the default one.""",
    ).tag(config=True)

    unauthenticated_role_bindings = Dict(
        {},
        help="""Role bindings of anonymous requests, e.g. ``{"{default_namespace}/*": ["viewer"]}``
        to let anyone read the default namespace. Default: anonymous users see nothing.""",
    ).tag(config=True)

    group_role_bindings = Dict(
        {},
        help="""Extra role bindings per identity-provider group (JupyterHub groups):
        ``{"ml-team": {"ml/*": ["developer"]}}``. ``{primary_namespace}`` is substituted.""",
    ).tag(config=True)

    admin_users = Set(
        Unicode(),
        help="""Usernames that are administrators (``*/*`` admin). Applies at once to their logins
        and session tokens; not to tokens they down-scoped. JupyterHub admins are added by the
        hub integration.""",
    ).tag(config=True)

    cookie_name = Unicode(
        "conda-store-auth",
        help="Name of the cookie holding a browser session's token (upstream's name by default).",
    ).tag(config=True)

    token_max_lifetime = Integer(
        30 * 24 * 3600,
        help="""Longest lifetime, in seconds, of an issued token (JupyterHub's
        ``token_expires_in_max_seconds``). Requests for longer are refused. 0 disables the limit.""",
    ).tag(config=True)

    default_token_lifetime = Integer(
        24 * 3600,
        help="""Lifetime, in seconds, of a token issued without an expiration by a caller whose own
        credential does not expire (a fresh login or a predefined token); also the session length.""",
    ).tag(config=True)

    anonymous_token_lifetime = Integer(
        3600,
        help="""Lifetime, in seconds, of a token requested without credentials (``POST
        /api/v1/token/`` anonymously, e.g. upstream's ``conda-store token``). Such a token carries
        only ``unauthenticated_role_bindings`` as they are when it is issued: nothing anonymous
        requests could not already do. Short, because anyone can mint one (each is a row; expired
        ones are deleted a day later).""",
    ).tag(config=True)

    anonymous_token_limit = Integer(
        10000,
        help="""Most tokens issued without credentials that may be valid at once; beyond it such
        requests get a 503 until some expire. Anyone can ask for one, so this bounds the rows a
        flood of requests can add.""",
    ).tag(config=True)

    authenticator_class = Type(
        "conda_store_jupyter.auth.backend.NoLoginAuthenticator",
        klass=Authenticator,
        help="""Password checker behind ``POST /login/``. ``NoLoginAuthenticator`` (default) accepts
        tokens only; ``DummyAuthenticator`` uses one shared password (tests, upstream client's
        basic mode). Under JupyterHub, users log in through the hub instead.""",
    ).tag(config=True)

    def __init__(self, store, **kwargs: Any) -> None:
        kwargs.setdefault("parent", store)
        super().__init__(**kwargs)
        self.store = store
        self._authenticator: Authenticator | None = None
        self._hub: HubAuthentication | None = None  # created on first use (see ``hub``)

    # -- config validation (fail at start-up, not on the first request) ------------------------
    @validate("predefined_tokens")
    def _check_predefined(self, proposal) -> dict:
        checked: dict[str, dict] = {}
        for i, (token, spec) in enumerate(proposal.value.items()):
            where = f"predefined_tokens entry #{i + 1}"  # never echo the token itself
            if not isinstance(token, str) or len(token) < 8:
                raise ValidationError(f"{where}: the token must be a string of at least 8 characters")
            if not isinstance(spec, Mapping):
                raise ValidationError(
                    f"{where}: the value must be a dict with primary_namespace and role_bindings")
            unknown = set(spec) - {"primary_namespace", "role_bindings", "username"}
            if unknown:
                raise ValidationError(f"{where}: unknown key(s) {sorted(unknown)}")
            ns = validate_name(spec.get("primary_namespace"), f"{where}: primary_namespace")
            bindings = normalize_bindings(spec.get("role_bindings") or {})
            username = spec.get("username")
            if username is not None and (not isinstance(username, str) or not username):
                raise ValidationError(f"{where}: username must be a non-empty string")
            checked[token] = {"primary_namespace": ns, "role_bindings": bindings, "username": username}
        return checked

    @validate("authenticated_role_bindings", "unauthenticated_role_bindings")
    def _check_bindings(self, proposal) -> dict:
        _substitute(proposal.value, primary_namespace="x", default_namespace="x")
        return proposal.value

    @validate("group_role_bindings")
    def _check_group_bindings(self, proposal) -> dict:
        for group, bindings in proposal.value.items():
            if not isinstance(bindings, Mapping):
                raise ValidationError(f"group_role_bindings[{group!r}] must be a dict of role bindings")
            _substitute(bindings, primary_namespace="x", default_namespace="x")
        return proposal.value

    @validate("anonymous_token_lifetime")
    def _check_anonymous_lifetime(self, proposal) -> int:
        if proposal.value <= 0:
            raise ValidationError("anonymous_token_lifetime must be > 0 seconds")
        return proposal.value

    @validate("token_max_lifetime", "default_token_lifetime")
    def _check_lifetime(self, proposal) -> int:
        if proposal.value < 0:
            raise ValidationError(f"{proposal.trait.name} must be >= 0 seconds")
        return proposal.value

    # -- pieces --------------------------------------------------------------------------------
    @property
    def authenticator(self) -> Authenticator:
        if self._authenticator is None:
            self._authenticator = self.authenticator_class(parent=self)
        return self._authenticator

    @property
    def default_namespace(self) -> str:
        return self.store.default_namespace

    def anonymous_identity(self) -> Identity:
        """An unauthenticated caller: the default namespace and ``unauthenticated_role_bindings``."""
        ns = self.default_namespace
        return Identity(
            username=None,
            primary_namespace=ns,
            role_bindings=_substitute(self.unauthenticated_role_bindings, primary_namespace=ns,
                                      default_namespace=ns),
            authenticated=False,
        )

    def _is_admin(self, username: str | None) -> bool:
        return username is not None and username in self.admin_users

    # -- authentication ------------------------------------------------------------------------
    def authenticate_request(self, *, cookie: str | None, authorization: str | None) -> Identity:
        """The identity behind a request's credentials.

        No credential at all: anonymous (``unauthenticated_role_bindings``). A credential that
        is presented and not valid is never silently anonymous: :class:`AuthenticationError`
        (401) says what is wrong with it (unknown, revoked or expired token, malformed header,
        rejected by JupyterHub); a hub that cannot be asked is :class:`ServiceUnavailableError`.

        Accepted: the session cookie, ``Authorization: Bearer <t>``, ``token <t>`` (JupyterHub's
        form) or ``Basic base64(<anything>:<t>)`` (``docker login``); a header token that is not
        ours may be a JupyterHub token. With both a cookie and a header, a valid cookie wins and
        an invalid one leaves the decision to the header. May wait for the hub: on the event
        loop use :meth:`authenticate_request_async`.
        """
        error: AuthenticationError | None = None
        for credential in presented(cookie, authorization):
            try:
                if isinstance(credential, AuthenticationError):
                    raise credential
                identity = self._own_identity(credential)
                if identity is None:
                    identity = self._hub_identity(self._hub_checker().check(credential.token))
                return identity
            except AuthenticationError as exc:
                error = error or exc
        if error is not None:
            raise error
        return self.anonymous_identity()

    async def authenticate_request_async(self, *, cookie: str | None, authorization: str | None) -> Identity:
        """:meth:`authenticate_request` for request handlers: our own tokens are looked up on the
        executor (a database read, and a ``last_used`` write that may wait for SQLite's lock),
        only a JupyterHub token awaits the hub, so a slow database or an unresponsive hub delays
        just the requests that need them, never the whole server."""
        loop = asyncio.get_running_loop()
        error: AuthenticationError | None = None
        for credential in presented(cookie, authorization):
            try:
                if isinstance(credential, AuthenticationError):
                    raise credential
                identity = await loop.run_in_executor(None, self._own_identity, credential)
                if identity is None:
                    identity = self._hub_identity(await self._hub_checker().check_async(credential.token))
                return identity
            except AuthenticationError as exc:
                error = error or exc
        if error is not None:
            raise error
        return self.anonymous_identity()

    def _own_identity(self, credential: Credential) -> Identity | None:
        """A predefined or issued token's identity; None if it may be a JupyterHub token.

        Raises AuthenticationError for anything else: a ``cst_`` token that is unknown, revoked
        or expired, or any other string when it cannot be a hub token.
        """
        try:
            identity = self._check_own_token(credential.token)
            if identity is None and not credential.may_be_hub_token:
                raise AuthenticationError(_tokens.UNKNOWN_TOKEN)
        except AuthenticationError as exc:
            if credential.source == "cookie":
                raise AuthenticationError(f"{exc} (the {self.cookie_name} session cookie: log in again)") from None
            raise
        return identity

    def _hub_checker(self) -> HubAuthentication:
        """The hub checker for a token that is not ours, or AuthenticationError if hub auth is off."""
        if self.hub is None:
            raise AuthenticationError(_tokens.UNKNOWN_TOKEN)
        return self.hub

    @property
    def hub(self) -> HubAuthentication | None:
        """The JupyterHub token checker (:mod:`.hub`), or None when hub auth is off."""
        if self._hub is None:
            self._hub = HubAuthentication(parent=self)
        return self._hub if self._hub.active else None

    def _hub_identity(self, user: HubUser) -> HubIdentity:
        """A hub user's identity, as a login would make it (``identity_for_user``), plus the
        hub admin bindings. Expires after ``default_token_lifetime``: tokens issued from it
        cannot live longer (see :class:`~.hub.HubIdentity`)."""
        assert self._hub is not None
        try:
            own = self.identity_for_user(user.name)
            identity = self.identity_for_user(user.name, groups=user.groups)
        except ValidationError as exc:  # a hub name that cannot be a namespace
            self.log.warning("JupyterHub user %r cannot use conda-store: %s", user.name[:64], exc)
            raise PermissionDeniedError(f"JupyterHub user {user.name[:64]!r} cannot use conda-store: {exc}") from None
        bindings = {glob: set(roles) for glob, roles in identity.role_bindings.items()}
        admin = identity.admin
        if user.admin:
            extra = normalize_bindings(self._hub.admin_role_bindings)
            for glob, roles in extra.items():
                bindings.setdefault(glob, set()).update(roles)
            # ``admin`` (shown to clients, implies */* admin) only when that is what was configured.
            admin = admin or "admin" in extra.get("*/*", ())
        lifetime = dt.timedelta(seconds=self.default_token_lifetime or 24 * 3600)
        return HubIdentity(
            username=identity.username,
            primary_namespace=identity.primary_namespace,
            role_bindings=bindings,
            authenticated=True,
            admin=admin,
            expiration=_tokens.utcnow() + lifetime,
            persistent_role_bindings=own.role_bindings,
        )

    def _predefined(self, token: str) -> dict | None:
        """Constant-time lookup: compare digests against every entry, whatever matches."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for candidate_digest, spec in self._predefined_digests():
            if hmac.compare_digest(digest, candidate_digest) and found is None:
                found = spec
        return found

    def _predefined_digests(self) -> list[tuple[bytes, dict]]:
        """Digests of the predefined tokens, computed once per value of the trait (not per request)."""
        tokens = self.predefined_tokens
        cached = getattr(self, "_digest_cache", None)
        if cached is None or cached[0] is not tokens:
            digests = [(hashlib.sha256(c.encode("utf-8")).digest(), spec) for c, spec in tokens.items()]
            cached = self._digest_cache = (tokens, digests)
        return cached[1]

    def identity_for_token(self, token: str) -> Identity | None:
        """The identity of a predefined or issued token; None if it is not a live token."""
        try:
            return self._check_own_token(token)
        except AuthenticationError:
            return None

    def _check_own_token(self, token: str) -> Identity | None:
        """A predefined or issued (``cst_``) token's identity; None if it is neither.

        AuthenticationError for a ``cst_`` token that is unknown, revoked or expired (the
        message says which), or for a string no token of any kind can be.
        """
        if not isinstance(token, str) or len(token) > 4096:
            raise AuthenticationError("invalid token: longer than any token")
        spec = self._predefined(token)
        if spec is not None:
            username = spec["username"]
            return TokenIdentity(
                username=username,
                primary_namespace=spec["primary_namespace"],
                role_bindings={glob: set(roles) for glob, roles in spec["role_bindings"].items()},
                authenticated=True,
                admin=self._is_admin(username),
                expiration=None,
                token_id=None,
                scoped=False,
            )
        if not token.startswith(_tokens.TOKEN_PREFIX):
            return None
        with self.store.session() as db:
            row = _tokens.check_token(db, token)
            return TokenIdentity(
                username=row.username,
                primary_namespace=row.primary_namespace,
                role_bindings=normalize_bindings(row.role_bindings or {}),
                authenticated=True,
                admin=not row.scoped and self._is_admin(row.username),
                expiration=row.expires_at,
                token_id=row.id,
                scoped=bool(row.scoped),
                anonymous_grant=is_anonymous_grant(row),
            )

    def identity_for_user(self, username: str, *, admin: bool = False, groups: Iterable[str] = ()) -> Identity:
        """A logged-in user (password or JupyterHub): primary namespace = their (normalised) name."""
        namespace = namespace_for_username(username)
        bindings = _substitute(self.authenticated_role_bindings, primary_namespace=namespace,
                               default_namespace=self.default_namespace)
        for group in groups:
            extra = self.group_role_bindings.get(group)
            if extra:
                for glob, roles in _substitute(extra, primary_namespace=namespace,
                                               default_namespace=self.default_namespace).items():
                    bindings.setdefault(glob, set()).update(roles)
        return Identity(
            username=username,
            primary_namespace=namespace,
            role_bindings=bindings,
            authenticated=True,
            admin=bool(admin) or self._is_admin(username),
        )

    def login(self, username: str, password: str) -> Identity:
        """Check a password with the configured authenticator; AuthenticationError on failure."""
        if not isinstance(username, str) or not isinstance(password, str):
            raise ValidationError("username and password must be strings")
        if not self.authenticator.login_enabled:
            raise AuthenticationError("password login is disabled on this server; use an API token")
        if not username or len(username) > 255 or not password:
            raise AuthenticationError("invalid username or password")
        accepted = self.authenticator.authenticate(username, password)
        if not accepted:
            self.log.info("failed login for %r", username[:64])
            raise AuthenticationError("invalid username or password")
        return self.identity_for_user(accepted)

    # -- token issuing -------------------------------------------------------------------------
    def issue_token_for(
        self,
        identity: Identity,
        *,
        primary_namespace: str | None,
        role_bindings: Mapping[str, Iterable[str]] | None,
        expiration: dt.datetime | None,
        note: str | None = None,
    ) -> _tokens.IssuedToken:
        """Issue a token on behalf of ``identity`` (upstream ``POST /api/v1/token/`` semantics).

        Omitted fields are inherited from the caller. The new token can never do more than its
        caller: requested bindings must be a subset of the caller's effective bindings and the
        expiration no later than the caller's or ``now + token_max_lifetime``.
        """
        now = _tokens.utcnow()
        max_exp = now + dt.timedelta(seconds=self.token_max_lifetime) if self.token_max_lifetime else None
        if identity.anonymous:
            # Upstream issues tokens to anonymous callers (its client's ``conda-store token``
            # depends on it); ours are short-lived and hold the anonymous bindings at most.
            caller_ns = self.default_namespace
            caller_exp = now + dt.timedelta(seconds=self.anonymous_token_lifetime)
            inherited: RoleBindings = {}
        else:
            caller_ns, caller_exp = identity.primary_namespace, identity.expiration
            # A copy keeps only grants that outlive the request: a hub identity's hub-admin and
            # hub-group grants are re-derived each time the hub vouches (hub.HubIdentity).
            persistent = getattr(identity, "persistent_role_bindings", None)
            inherited = {glob: set(roles) for glob, roles in
                         (identity.role_bindings if persistent is None else persistent).items()}
        with self.store.session() as db:
            held = self.bindings_for(db, identity)

        namespace = validate_name(primary_namespace, "primary_namespace") if primary_namespace else caller_ns
        # Anything other than a copy of the caller becomes a scoped token (see module doc);
        # so does a copy of a scoped or anonymous caller.
        scoped = (identity.anonymous or _is_scoped(identity) or role_bindings is not None
                  or namespace != caller_ns)
        if role_bindings is not None:
            bindings = normalize_bindings(role_bindings)
            if not is_subset(bindings, held):
                raise ValidationError(NOT_SUBSET_MESSAGE)
        elif scoped:
            bindings = held  # a snapshot of everything the caller may do now, nothing more
        else:
            bindings = inherited

        if expiration is not None:
            expires_at = _tokens.to_naive_utc(expiration)
            if expires_at <= now:
                raise ValidationError("expiration must be in the future")
            if caller_exp is not None and expires_at > caller_exp:
                raise ValidationError(
                    f"expiration {expires_at.isoformat()} is later than the current token's "
                    f"({caller_exp.isoformat()}); a token cannot outlive its issuer"
                )
            if max_exp is not None and expires_at > max_exp:
                raise ValidationError(
                    f"expiration {expires_at.isoformat()} is too far away: tokens live at most "
                    f"{self.token_max_lifetime} seconds (until {max_exp.isoformat()})"
                )
        else:
            expires_at = caller_exp or now + dt.timedelta(seconds=self.default_token_lifetime)
            if max_exp is not None:
                expires_at = min(expires_at, max_exp)

        # What an anonymous grant issues is an anonymous grant too: no way to more than anonymous.
        anonymous = identity.anonymous or getattr(identity, "anonymous_grant", False)
        with self.store.session() as db:
            if anonymous:
                _tokens.purge_expired(db, note=ANONYMOUS_TOKEN_NOTE, before=now - ANONYMOUS_TOKEN_KEEP)
                if _tokens.count_live(db, note=ANONYMOUS_TOKEN_NOTE) >= self.anonymous_token_limit:
                    raise ServiceUnavailableError(
                        f"{self.anonymous_token_limit} tokens issued without credentials are valid now, the "
                        "most allowed (AuthenticationBackend.anonymous_token_limit); log in, or retry later")
            return _tokens.issue_token(
                db,
                username=None if anonymous else identity.username,
                primary_namespace=namespace,
                role_bindings=bindings,
                expires_at=expires_at,
                note=ANONYMOUS_TOKEN_NOTE if anonymous else note,
                issuer_id=None if anonymous else identity.token_id,
                scoped=scoped,
            )

    # -- authorization -------------------------------------------------------------------------
    def role_mappings(self, db) -> list[tuple[str, str, str]]:
        """``(namespace, entity glob, role)`` of every non-deleted namespace's role mappings.

        Rows with an unknown role are skipped with a warning rather than failing every request.
        """
        rows = db.execute(
            select(orm.Namespace.name, orm.NamespaceRoleMapping.entity, orm.NamespaceRoleMapping.role)
            .join(orm.NamespaceRoleMapping.namespace)
            .where(orm.Namespace.deleted_on.is_(None))
            .order_by(orm.NamespaceRoleMapping.id)
        ).all()
        out = []
        for namespace, entity, role in rows:
            try:
                out.append((namespace, entity, canonical_role(role)))
            except ValidationError:
                self.log.warning("ignoring role mapping in %s with unknown role %r", namespace, role)
        return out

    def bindings_for(self, db, identity: Identity) -> RoleBindings:
        """Everything ``identity`` may do now: its bindings, admin flag and live DB mappings.

        Scoped tokens get neither the admin flag nor mappings: their bindings are the whole grant.
        """
        if identity.anonymous:
            return effective_bindings(identity)
        if _foreign_owner(db, identity) is not None:
            identity = _without_primary_namespace(identity)
        if _is_scoped(identity):
            return effective_bindings(replace(identity, admin=False))
        return effective_bindings(identity, self.role_mappings(db))

    def is_allowed(self, db, identity: Identity, permission: Permission | str, arn: str) -> bool:
        return is_allowed(self.bindings_for(db, identity), _permission(permission), arn)

    def authorize(self, db, identity: Identity, permission: Permission | str, arn: str) -> None:
        """Raise unless ``identity`` has ``permission`` on ``arn`` (``ns/name``, or ``ns/`` for a
        namespace): AuthenticationError (401) for anonymous callers, PermissionDeniedError (403)
        for authenticated ones."""
        permission = _permission(permission)
        held = self.bindings_for(db, identity)
        if is_allowed(held, permission, arn) and not _reserved_write(held, permission, arn):
            return
        if identity.anonymous:
            raise AuthenticationError(
                f"request not authenticated: {permission.value} on {arn!r} needs a login or token")
        if arn.partition("/")[0] == identity.primary_namespace and _foreign_owner(db, identity):
            raise PermissionDeniedError(
                f"request not authorized: namespace {identity.primary_namespace!r} belongs to another user, "
                "so being your primary namespace grants nothing there; ask an admin for access")
        raise PermissionDeniedError(f"request not authorized: {permission.value} on {arn!r} is not allowed")


def is_anonymous_grant(row: orm.Token) -> bool:
    """Was token ``row`` issued to a caller without credentials?"""
    return row.username is None and row.issuer_id is None and row.note == ANONYMOUS_TOKEN_NOTE


def _foreign_owner(db, identity: Identity) -> str | None:
    """The owner of ``identity``'s primary namespace if that is another user (else None).

    Security: two identities can name one primary namespace (a token from before user names
    were mapped injectively, a predefined token, a custom ``authenticated_role_bindings``); the
    default ``{primary_namespace}/*: admin`` must then not make the second one admin of the
    first one's environments. Identities without a user name (predefined service tokens) are
    configured by the admin and keep their grants.
    """
    if not identity.username:
        return None
    owner = db.scalar(select(orm.Namespace.owner).where(orm.Namespace.name == identity.primary_namespace,
                                                        orm.Namespace.deleted_on.is_(None)))
    return owner if owner is not None and owner != identity.username else None


def _without_primary_namespace(identity: Identity) -> Identity:
    """``identity`` minus its own bindings on its primary namespace (namespace role mappings and
    the admin flag still apply: those are grants made on purpose)."""
    ns = identity.primary_namespace
    kept = {glob: roles for glob, roles in identity.role_bindings.items() if glob.partition("/")[0] != ns}
    return replace(identity, role_bindings=kept)


def _reserved_write(held: RoleBindings, permission: Permission, arn: str) -> bool:
    """Is this a write into the reserved on-demand image namespace by anyone but a store-wide admin?

    Security: environments there are built from image names and served to every user; a namespace
    admin (a role mapping, a token binding) could otherwise post a spec under an image's name.
    The registry submits those builds itself, without :meth:`AuthenticationBackend.authorize`.
    """
    return (arn.partition("/")[0] == DYNAMIC_NAMESPACE and not permission.value.endswith("::read")
            and "admin" not in held.get("*/*", ()))


def _permission(value: Permission | str) -> Permission:
    try:
        return PERMISSION_ALIASES.get(value) or Permission(value)
    except ValueError:
        raise ValidationError(f"unknown permission {value!r}") from None
