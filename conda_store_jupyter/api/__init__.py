"""The service layer: every database operation the HTTP handlers (and the CLI/pages) perform.

Handlers parse, authorize, call one function here and serialize the result, so the rules about
what a namespace, environment or build may become live in one place and are testable without
HTTP. Functions take an open SQLAlchemy session and never commit: the caller owns the
transaction (``CondaStore.session()``) and enqueues worker jobs only *after* the commit, so a
worker never looks for a row that is not visible yet.

Listings filter, count, sort and page in SQL (never in Python loops), and visibility is an SQL
predicate derived from the caller's role bindings (:func:`visible_clause`).

Modules: ``namespaces`` (namespaces, role mappings), ``environments`` (specifications,
environments), ``builds`` (builds, submitting), ``packages`` (packages, channels, usage, metrics),
``kernels`` (environments as a Jupyter server offers them as kernels), ``_query`` (paging,
visibility, shared filters). Import from here; this list is the public surface.
"""

from ._query import Page, PageResult, paginate, visible_clause
from ._session import in_transaction
from .builds import (
    delete_build,
    get_build,
    list_builds,
    rebuild,
    submit,
    submit_dynamic_build,
)
from .environments import (
    delete_environment,
    get_environment,
    list_environments,
    prepare_specification,
    submit_specification,
    update_environment,
    upsert_specification,
)
from .namespaces import (
    create_namespace,
    delete_namespace,
    delete_namespace_role,
    find_namespace,
    get_namespace,
    get_namespace_role,
    list_namespace_roles,
    list_namespaces,
    set_namespace_role,
    update_namespace,
    user_namespace_owner,
    validate_role_bindings,
)
from .kernels import list_kernel_environments
from .packages import list_build_packages, list_channels, list_packages, metrics, usage

__all__ = [
    "Page", "PageResult", "create_namespace", "delete_build", "delete_environment", "delete_namespace",
    "delete_namespace_role", "find_namespace", "get_build", "get_environment", "get_namespace",
    "get_namespace_role", "in_transaction", "list_build_packages", "list_builds", "list_channels", "list_environments",
    "list_kernel_environments",
    "list_namespace_roles", "list_namespaces", "list_packages", "metrics",
    "paginate", "prepare_specification", "rebuild", "set_namespace_role", "submit",
    "submit_dynamic_build", "submit_specification", "update_environment", "update_namespace", "user_namespace_owner",
    "upsert_specification", "usage", "validate_role_bindings", "visible_clause",
]
