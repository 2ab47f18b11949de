"""Roles, permissions and ARN globs: who may do what to which namespace/environment.

Vocabulary (one place, like JupyterHub's ``scopes``):

- **ARN** ``<namespace>/<environment>``, the thing acted on. A namespace-level action uses
  ``<namespace>/*``-matching bindings against the ARN ``<namespace>/``.
- **ARN glob** ``ns/name`` where either side may contain ``*`` (``alice/*``, ``*/*``, ``team-*/ml``).
- **role** ``viewer`` < ``developer`` (alias ``editor``) < ``admin``; each is a set of permissions.
- **role bindings** ``{arn glob: [roles]}`` carried by an identity (token, predefined token, hub user).
- **namespace role mappings** rows in the DB that grant a role inside one namespace to identities
  whose *primary namespace* matches the mapping's ``entity`` glob.

A permission is granted on an ARN if any binding's glob matches the ARN and one of its roles
includes the permission. Nothing is granted by default: the configured defaults decide what
anonymous and authenticated users get (see ``AuthenticationBackend``).
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping

from ..exceptions import ValidationError


class Permission(str, enum.Enum):
    NAMESPACE_READ = "namespace::read"
    NAMESPACE_CREATE = "namespace::create"
    NAMESPACE_UPDATE = "namespace::update"
    NAMESPACE_DELETE = "namespace::delete"
    ROLE_MAPPING_READ = "namespace-role-mapping::read"
    ROLE_MAPPING_CREATE = "namespace-role-mapping::create"
    ROLE_MAPPING_UPDATE = "namespace-role-mapping::update"
    ROLE_MAPPING_DELETE = "namespace-role-mapping::delete"
    ENVIRONMENT_READ = "environment::read"
    # upstream's spelling, single colon included: clients compare these strings
    ENVIRONMENT_CREATE = "environment:create"
    ENVIRONMENT_UPDATE = "environment::update"
    ENVIRONMENT_DELETE = "environment::delete"
    ENVIRONMENT_SOLVE = "environment::solve"
    BUILD_CANCEL = "build::cancel"
    BUILD_DELETE = "build::delete"
    SETTING_READ = "setting::read"
    SETTING_UPDATE = "setting::update"


P = Permission
# The same permissions per role as upstream conda-store reports (``GET /api/v1/permission/``),
# so clients that decide what to offer from those strings see what they expect.
_VIEWER = frozenset({P.NAMESPACE_READ, P.ROLE_MAPPING_READ, P.ENVIRONMENT_READ})
_DEVELOPER = _VIEWER | {P.ENVIRONMENT_CREATE, P.ENVIRONMENT_UPDATE, P.ENVIRONMENT_SOLVE, P.BUILD_CANCEL,
                        P.SETTING_READ}
_ADMIN = frozenset(Permission)

ROLES: Mapping[str, frozenset[Permission]] = {"viewer": _VIEWER, "developer": _DEVELOPER, "admin": _ADMIN}
"""Role name → permissions. Roles are ordered: each includes the previous one."""

PERMISSION_ALIASES = {"environment::create": P.ENVIRONMENT_CREATE}
"""Spellings accepted where a permission is named in input (the regular double-colon form)."""

ROLE_ALIASES = {"editor": "developer"}
"""Accepted synonyms (upstream stores ``editor`` as ``developer``)."""

_GLOB_PART = re.compile(r"^[a-z0-9*][a-z0-9._*-]*$|^\*$")


def canonical_role(role: str) -> str:
    role = ROLE_ALIASES.get(role, role)
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r}; roles are viewer, editor/developer, admin")
    return role


def validate_arn_glob(arn: str) -> str:
    """``ns/name`` with optional ``*`` wildcards; raises ValidationError otherwise."""
    if not isinstance(arn, str) or arn.count("/") != 1:
        raise ValidationError(f"role binding {arn!r} must look like 'namespace/environment' (use * as a wildcard)")
    ns, name = arn.split("/")
    for part in (ns, name):
        if not _GLOB_PART.match(part):
            raise ValidationError(f"role binding {arn!r}: {part!r} is not a name or glob")
    return arn


def arn_matches(glob: str, arn: str) -> bool:
    """Does ARN glob ``glob`` cover ARN ``ns/name``? ``*`` never crosses the ``/``."""
    g_ns, _, g_name = glob.partition("/")
    ns, _, name = arn.partition("/")
    return fnmatch.fnmatchcase(ns, g_ns) and fnmatch.fnmatchcase(name, g_name or "*")


def glob_covers(outer: str, inner: str) -> bool:
    """Is every ARN matched by glob ``inner`` also matched by glob ``outer``? (conservative)"""
    o_ns, _, o_name = outer.partition("/")
    i_ns, _, i_name = inner.partition("/")

    def part(o: str, i: str) -> bool:
        if o == "*":
            return True
        if "*" in i:  # a wildcard inner part is covered only by an identical or broader pattern
            return o == i or (o.endswith("*") and i.startswith(o[:-1]))
        return fnmatch.fnmatchcase(i, o)

    return part(o_ns, i_ns) and part(o_name, i_name)


RoleBindings = dict[str, set[str]]


def normalize_bindings(raw: Mapping[str, Iterable[str]] | None) -> RoleBindings:
    """Validate and canonicalise ``{arn glob: [roles]}`` (``editor`` → ``developer``)."""
    out: RoleBindings = {}
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        raise ValidationError("role_bindings must be a mapping of 'namespace/environment' to a list of roles")
    for arn, roles in raw.items():
        validate_arn_glob(arn)
        if isinstance(roles, str) or not isinstance(roles, Iterable):
            raise ValidationError(f"role_bindings[{arn!r}] must be a list of roles")
        out.setdefault(arn, set()).update(canonical_role(r) for r in roles)
    return out


@dataclass
class Identity:
    """Who is making a request, after authentication.

    ``role_bindings`` are what the credential carries; namespace role mappings from the DB are
    added by :func:`effective_bindings` at authorization time (so revoking a mapping applies at once).
    """

    username: str | None
    primary_namespace: str
    role_bindings: RoleBindings = field(default_factory=dict)
    authenticated: bool = False
    admin: bool = False
    expiration: datetime | None = None
    token_id: int | None = None

    @property
    def anonymous(self) -> bool:
        return not self.authenticated


def effective_bindings(identity: Identity, role_mappings: Iterable[tuple[str, str, str]] = ()) -> RoleBindings:
    """The identity's bindings plus DB namespace role mappings ``(namespace, entity glob, role)``.

    A mapping applies when its entity glob matches the identity's ``<primary namespace>/*`` ARN
    (upstream v1 semantics: ``entity`` is an ARN glob naming who gets the role).
    """
    out: RoleBindings = {arn: set(roles) for arn, roles in identity.role_bindings.items()}
    if identity.admin:
        out.setdefault("*/*", set()).add("admin")
    if identity.authenticated:
        me = f"{identity.primary_namespace}/*"
        for namespace, entity, role in role_mappings:
            if arn_matches(entity, me) or glob_covers(entity, me):
                out.setdefault(f"{namespace}/*", set()).add(canonical_role(role))
    return out


def permissions_on(bindings: RoleBindings, arn: str) -> set[Permission]:
    """All permissions ``bindings`` grant on ARN ``ns/name`` (``ns/`` for the namespace itself)."""
    granted: set[Permission] = set()
    for glob, roles in bindings.items():
        if arn_matches(glob, arn):
            for role in roles:
                granted |= ROLES[canonical_role(role)]
    return granted


def is_allowed(bindings: RoleBindings, permission: Permission, arn: str) -> bool:
    return permission in permissions_on(bindings, arn)


def is_subset(requested: RoleBindings, held: RoleBindings) -> bool:
    """Is every permission ``requested`` could grant already granted by ``held``?

    Used for token down-scoping: a new token may never exceed its issuer.
    """
    for glob, roles in requested.items():
        wanted: set[Permission] = set()
        for role in roles:
            wanted |= ROLES[canonical_role(role)]
        have: set[Permission] = set()
        for h_glob, h_roles in held.items():
            if glob_covers(h_glob, glob):
                for role in h_roles:
                    have |= ROLES[canonical_role(role)]
        if not wanted <= have:
            return False
    return True


def visible_namespace_globs(bindings: RoleBindings) -> list[str]:
    """Namespace-part globs the identity can read anything in (used to filter listings in SQL)."""
    return sorted({glob.partition("/")[0] for glob, roles in bindings.items()
                   if any(P.ENVIRONMENT_READ in ROLES[canonical_role(r)] for r in roles)})
