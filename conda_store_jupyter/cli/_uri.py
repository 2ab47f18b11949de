"""Build URIs: how ``download``, ``wait`` and ``run`` name a build.

    <build_id>                 17
    <namespace>/<environment>  alice/ml          (the environment's *current* build)
    <namespace>/<env>:<id>     alice/ml:17       (build 17, which must belong to alice/ml)

Parsing is strict (one grammar, the server's own, see :mod:`conda_store_jupyter.naming`) so a
typo fails here with a precise message instead of as a confusing 404 later.
"""

from __future__ import annotations

from ..exceptions import InvalidNameError
from ..naming import validate_name
from ._errors import CLIError
from ._record import Record

_FORMS = "use <build_id>, <namespace>/<environment> or <namespace>/<environment>:<build_id>"


class BuildURI(Record):
    """A parsed build URI. ``build_id`` is None for ``ns/env`` (resolved via the server)."""

    __slots__ = ("build_id", "namespace", "environment")
    _defaults = {"build_id": None, "namespace": None, "environment": None}

    build_id: int | None
    namespace: str | None
    environment: str | None

    @property
    def is_environment(self) -> bool:
        return self.namespace is not None

    def __str__(self) -> str:
        if self.namespace is None:
            return str(self.build_id)
        base = f"{self.namespace}/{self.environment}"
        return base if self.build_id is None else f"{base}:{self.build_id}"


def _parse_id(text: str, uri: str) -> int:
    # isdecimal() refuses "+1", " 1", "1_000" and non-ASCII digits that int() would accept.
    if not text.isascii() or not text.isdecimal() or int(text) <= 0:
        raise CLIError(f"invalid build URI {uri!r}: build id {text!r} is not a positive integer; {_FORMS}")
    return int(text)


def parse_uri(uri: str) -> BuildURI:
    """Parse a build URI or raise CLIError naming the problem."""
    if not uri or uri != uri.strip():
        raise CLIError(f"invalid build URI {uri!r}: {_FORMS}")
    if "/" not in uri:
        if ":" in uri:
            raise CLIError(f"invalid build URI {uri!r}: a ':<build_id>' needs <namespace>/<environment> before it")
        return BuildURI(build_id=_parse_id(uri, uri))
    path, sep, build = uri.partition(":")
    if sep and ":" in build:
        raise CLIError(f"invalid build URI {uri!r}: more than one ':'; {_FORMS}")
    parts = path.split("/")
    if len(parts) != 2:
        raise CLIError(f"invalid build URI {uri!r}: expected exactly one '/' between namespace and environment")
    namespace, environment = parts
    try:
        validate_name(namespace, "namespace")
        validate_name(environment, "environment name")
    except InvalidNameError as exc:
        raise CLIError(f"invalid build URI {uri!r}: {exc}") from None
    build_id = _parse_id(build, uri) if sep else None
    return BuildURI(build_id=build_id, namespace=namespace, environment=environment)
