"""Query building blocks: paging, visibility by role bindings, shared filters — all in SQL."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from sqlalchemy import and_, exists, false, func, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement, Select

from .. import orm
from ..auth.rbac import RoleBindings
from ..exceptions import ValidationError
from ..schema import ArtifactStatus, BuildArtifactType

# -- paging -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Page:
    """What a v1 listing asked for. ``size=None`` means "everything" (see :func:`paginate`)."""

    page: int = 1
    size: int | None = None
    sort_by: tuple[str, ...] = ()
    order: str = "asc"
    max_size: int = 100
    """The server's page size cap; reported as ``size`` when everything fits in one answer."""


@dataclasses.dataclass
class PageResult:
    items: list[Any]
    count: int
    page: int
    size: int


def paginate(
    db: Session,
    stmt: Select,
    page: Page,
    sortable: Mapping[str, ColumnElement],
    default_sort: Sequence[str],
    tiebreak: ColumnElement,
) -> PageResult:
    """Count, sort and slice ``stmt`` in SQL.

    An unknown ``sort_by`` key is a 400 listing the allowed ones (upstream drops it silently, so a
    typo sorted by something else without a word). Without an explicit page size every row is
    returned: the upstream ``conda-store list`` client re-requests the same URL until
    ``len(data) == count`` and would otherwise loop forever. ``size`` is then the page size that
    answer stands for (at least ``max_size``, as upstream reports it; never 0, which clients
    divide by).
    """
    unknown = [k for k in page.sort_by if k not in sortable]
    if unknown:
        raise ValidationError(f"sort_by {unknown[0][:40]!r} is not supported here; "
                              f"use one of: {', '.join(sortable)}")
    count = db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    keys = list(page.sort_by) or list(default_sort)
    desc = page.order == "desc"
    order = [sortable[k].desc() if desc else sortable[k].asc() for k in keys]
    order.append(tiebreak.desc() if desc else tiebreak.asc())
    stmt = stmt.order_by(*order)
    size = page.size if page.size is not None else max(count, page.max_size, 1)
    if page.size is not None or page.page > 1:
        stmt = stmt.offset((page.page - 1) * size).limit(size)
    items = list(db.scalars(stmt).unique())
    return PageResult(items=items, count=count, page=page.page, size=size)


# -- visibility ---------------------------------------------------------------------------------


def _like(column: ColumnElement, glob: str) -> ColumnElement:
    """SQL twin of one side of an ARN glob: ``*`` → ``%``; ``_``/``%`` in names are literal."""
    if glob == "*":
        return true()
    if "*" not in glob:
        return column == glob
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
    return column.like(escaped, escape="\\")


def visible_clause(
    bindings: RoleBindings, namespace_col: ColumnElement, name_col: ColumnElement | None = None
) -> ColumnElement:
    """Rows matched by any binding, whatever its role (every role can read).

    For namespace listings (``name_col=None``) a binding on ``ns/env`` makes ``ns`` visible too,
    so a user granted one environment can see where it lives.
    """
    clauses = []
    for glob in bindings:
        ns_glob, _, name_glob = glob.partition("/")
        clause = _like(namespace_col, ns_glob)
        if name_col is not None and name_glob not in ("", "*"):
            clause = and_(clause, _like(name_col, name_glob))
        clauses.append(clause)
    if not clauses:
        return false()
    return or_(*clauses)

def has_artifact(build_id_col: ColumnElement, artifact: BuildArtifactType) -> ColumnElement:
    return exists(
        select(1).where(orm.BuildArtifact.build_id == build_id_col, orm.BuildArtifact.artifact_type == artifact,
                        orm.BuildArtifact.status == ArtifactStatus.READY)
    )
