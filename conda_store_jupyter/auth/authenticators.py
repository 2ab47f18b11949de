"""Password authenticators for ``POST /login/`` (JupyterHub's pattern: subclass ``Authenticator``
and set ``c.AuthenticationBackend.authenticator_class``). Token-only is the default."""

from __future__ import annotations

import hmac

from traitlets import Set, Unicode
from traitlets.config import LoggingConfigurable


class Authenticator(LoggingConfigurable):
    """Checks a username and password (JupyterHub's pattern: subclass and configure
    ``c.AuthenticationBackend.authenticator_class``)."""

    login_enabled: bool = True
    """Whether ``POST /login/`` with a password is offered at all."""

    def authenticate(self, username: str, password: str) -> str | None:
        """Return the (possibly normalised) username if the password is right, else None."""
        raise NotImplementedError


class NoLoginAuthenticator(Authenticator):
    """Token-only deployments (the default): no password can log anyone in."""

    login_enabled = False

    def authenticate(self, username: str, password: str) -> str | None:
        return None


class DummyAuthenticator(Authenticator):
    """One shared password for every user: for tests and the upstream client's basic-auth mode.

    Not for production. Unlike upstream's ``DummyAuthentication`` it is off unless a password is
    configured, and logged-in users get ``authenticated_role_bindings``, not ``*/*`` admin.
    """

    password = Unicode(
        "",
        help="""The password every user logs in with. Empty (the default) disables password login,
        so forgetting to configure it never means "any password works".""",
    ).tag(config=True)

    allowed_users = Set(
        Unicode(),
        help="""Usernames allowed to log in. Empty means any username that is (or normalises to)
        a valid namespace name.""",
    ).tag(config=True)

    @property
    def login_enabled(self) -> bool:  # type: ignore[override]
        return bool(self.password)

    def authenticate(self, username: str, password: str) -> str | None:
        if not self.password:
            return None
        if not hmac.compare_digest(password.encode("utf-8"), self.password.encode("utf-8")):
            return None
        if self.allowed_users and username not in self.allowed_users:
            return None
        return username
