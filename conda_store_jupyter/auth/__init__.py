"""Authentication (who is calling) and authorization (may they), see :mod:`.backend`.

- :mod:`.rbac` roles, permissions, ARN globs and the :class:`Identity` of a request;
- :mod:`.tokens` issued API tokens: hashed, expiring, revocable;
- :mod:`.backend` the configurable ``AuthenticationBackend`` and password ``Authenticator``s.
"""

from .backend import (
    AuthenticationBackend,
    Authenticator,
    DummyAuthenticator,
    NoLoginAuthenticator,
    TokenIdentity,
    namespace_for_username,
)
from .rbac import Identity, Permission, RoleBindings
from .tokens import IssuedToken, issue_token, list_tokens, revoke_token, verify_token

__all__ = [
    "AuthenticationBackend",
    "Authenticator",
    "DummyAuthenticator",
    "Identity",
    "IssuedToken",
    "NoLoginAuthenticator",
    "Permission",
    "RoleBindings",
    "TokenIdentity",
    "issue_token",
    "list_tokens",
    "namespace_for_username",
    "revoke_token",
    "verify_token",
]
