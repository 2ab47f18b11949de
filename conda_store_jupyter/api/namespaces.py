"""Namespaces and their role mappings."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import orm
from ..auth.rbac import (
    Identity,
    RoleBindings,
    canonical_role,
    normalize_bindings,
    validate_arn_glob,
)
from ..exceptions import (
    ConflictError,
    InvalidNameError,
    NotFoundError,
    ValidationError,
)
from ..naming import namespace_for_username, validate_name
from ._query import Page, PageResult, paginate, visible_clause

# -- namespaces ---------------------------------------------------------------------------------


def get_namespace(db: Session, name: str) -> orm.Namespace:
    ns = db.scalar(select(orm.Namespace).where(orm.Namespace.name == name, orm.Namespace.deleted_on.is_(None)))
    if ns is None:
        raise NotFoundError(f"namespace {name!r} does not exist")
    return ns


def find_namespace(db: Session, name: str) -> orm.Namespace | None:
    """The live namespace called ``name``, or None (used to decide if ``namespace::create`` applies)."""
    return db.scalar(select(orm.Namespace).where(orm.Namespace.name == name, orm.Namespace.deleted_on.is_(None)))


def create_namespace(db: Session, name: str, *, exist_ok: bool = False, owner: str | None = None) -> orm.Namespace:
    """Create ``name``; a soft-deleted namespace of that name is brought back empty.

    ``owner``: the identity whose own namespace ``name`` is (:func:`user_namespace_owner`). It is
    recorded on a new namespace, and on an existing one nobody owns yet (namespaces from before
    owners were recorded are claimed by their user on first write). An owned namespace never
    changes hands here: the authorization layer gives a second claimant no grant on it.
    """
    validate_name(name, "namespace")
    ns = db.scalar(select(orm.Namespace).where(orm.Namespace.name == name))
    if ns is not None and ns.deleted_on is None:
        if not exist_ok:
            raise ConflictError(f"namespace {name!r} already exists")
        if owner is not None and ns.owner is None:
            ns.owner = owner
            db.flush()
        return ns
    if ns is None:
        ns = orm.Namespace(name=name, metadata_={}, owner=owner)
        db.add(ns)
    else:
        ns.deleted_on = None
        ns.metadata_ = {}
        ns.role_mappings.clear()
        ns.owner = owner
    db.flush()
    return ns


def user_namespace_owner(identity: Identity, namespace: str) -> str | None:
    """``identity.username`` if ``namespace`` is that user's own namespace, else None (a shared
    namespace, or one a token merely names as its primary namespace)."""
    username = identity.username if identity.authenticated else None
    if not username:
        return None
    try:
        return username if namespace_for_username(username) == namespace else None
    except InvalidNameError:
        return None


def list_namespaces(db: Session, bindings: RoleBindings, page: Page) -> PageResult:
    stmt = select(orm.Namespace).where(
        orm.Namespace.deleted_on.is_(None), visible_clause(bindings, orm.Namespace.name)
    )
    return paginate(db, stmt, page, {"name": orm.Namespace.name}, ["name"], orm.Namespace.id)


def update_namespace(
    db: Session,
    ns: orm.Namespace,
    *,
    metadata: Mapping[str, Any] | None = None,
    role_mappings: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Replace metadata and/or the (v1) role mappings ``{entity glob: [roles]}``."""
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise ValidationError("metadata must be a JSON object")
        ns.metadata_ = dict(metadata)
    if role_mappings is not None:
        wanted = normalize_bindings(role_mappings)
        ns.role_mappings.clear()
        db.flush()
        for entity, roles in sorted(wanted.items()):
            for role in sorted(roles):
                ns.role_mappings.append(orm.NamespaceRoleMapping(entity=entity, role=role))
    db.flush()


def delete_namespace(db: Session, ns: orm.Namespace) -> None:
    """Soft-delete the namespace, its environments and their builds (the worker removes files)."""
    now = orm.utcnow()
    ns.deleted_on = now
    env_ids = select(orm.Environment.id).where(orm.Environment.namespace_id == ns.id)
    db.execute(
        orm.Environment.__table__.update()
        .where(orm.Environment.namespace_id == ns.id, orm.Environment.deleted_on.is_(None))
        .values(deleted_on=now)
    )
    db.execute(
        orm.Build.__table__.update()
        .where(orm.Build.environment_id.in_(env_ids), orm.Build.deleted_on.is_(None))
        .values(deleted_on=now)
    )
    db.flush()


# Role mappings in the upstream "v2" shape (``other_namespace`` gets ``role`` on this namespace)
# are v1 rows whose entity is exactly ``<other>/*``: one table, two views of it.


def _v2_entity(other: str) -> str:
    return f"{validate_name(other, 'other_namespace')}/*"


def list_namespace_roles(db: Session, ns: orm.Namespace) -> list[dict[str, Any]]:
    out = []
    for m in ns.role_mappings:
        other, _, rest = m.entity.partition("/")
        if rest == "*" and "*" not in other:
            out.append({"id": m.id, "namespace": ns.name, "other_namespace": other, "role": m.role})
    return out


def get_namespace_role(db: Session, ns: orm.Namespace, other: str) -> dict[str, Any]:
    for row in list_namespace_roles(db, ns):
        if row["other_namespace"] == other:
            return row
    raise NotFoundError(f"failed to find role for {other!r} in namespace {ns.name!r}")


def set_namespace_role(db: Session, ns: orm.Namespace, other: str, role: str) -> None:
    entity = _v2_entity(other)
    get_namespace(db, other)  # granting to a namespace that does not exist is a typo, not a grant
    role = canonical_role(role)
    ns.role_mappings[:] = [m for m in ns.role_mappings if m.entity != entity]
    ns.role_mappings.append(orm.NamespaceRoleMapping(entity=entity, role=role))
    db.flush()


def delete_namespace_role(db: Session, ns: orm.Namespace, other: str | None = None) -> None:
    """Remove the v2-shaped mapping for ``other`` (or all of them when ``other`` is None)."""
    if other is None:
        keep = lambda m: not (m.entity.endswith("/*") and "*" not in m.entity[:-2])  # noqa: E731
    else:
        entity = _v2_entity(other)
        keep = lambda m: m.entity != entity  # noqa: E731
    ns.role_mappings[:] = [m for m in ns.role_mappings if keep(m)]
    db.flush()



def validate_role_bindings(raw: object) -> RoleBindings:
    """``{arn glob: [roles]}`` from a request body, validated (400 on anything odd)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError("role_bindings must be an object of 'namespace/environment' to a list of roles")
    for arn in raw:
        validate_arn_glob(arn)
    return normalize_bindings(raw)
