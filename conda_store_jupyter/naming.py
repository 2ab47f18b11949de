"""The one name grammar for namespaces, environments and image tags, and build keys.

Names follow the OCI distribution-spec *path component* grammar (lowercase alphanumerics separated
by ``.``, ``_``, ``__`` or runs of ``-``), so every environment is also a valid image repository
``<namespace>/<environment>`` and no name can be ``..``, contain ``/`` or start with a dot.
Filesystem paths are never built from names alone (see :func:`build_key`), but the grammar makes
that a second line of defence rather than the only one.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone

from .exceptions import InvalidNameError

NAME_MAX_LENGTH = 64
"""Longest namespace or environment name; keeps ``ns/env:tag`` far below OCI's 255 limit."""

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}$")
"""A namespace or environment name (one OCI path component)."""

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
"""An image tag (OCI distribution-spec)."""

BUILD_KEY_RE = re.compile(r"^(?P<hash>[0-9a-f]{8})-(?P<ts>[0-9]+)-(?P<id>[0-9]+)-(?P<name>.+)$")
"""A v2 build key: ``<spec sha256[:8]>-<unix ts scheduled>-<build id>-<environment name>``."""


DYNAMIC_NAMESPACE = "conda-store-dynamic"
"""The namespace of on-demand image environments (``Registry.dynamic_namespace``'s default). It is
reserved: its environments are built from image names alone and served to every user, so no user
may get it as a primary namespace (:func:`namespace_for_username`) and only store-wide admins may
write into it through the REST API (``AuthenticationBackend.authorize``)."""


def validate_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a valid namespace/environment name, else raise InvalidNameError.

    ``what`` names the field in the error message (``"namespace"``, ``"environment name"``...).
    """
    if not isinstance(value, str):
        raise InvalidNameError(f"{what} must be a string, got {_kind(value)}"
                               + (f" ({value!r}; quote it in YAML)" if isinstance(value, (int, float)) else ""))
    if not value:
        raise InvalidNameError(f"{what} must not be empty")
    if len(value) > NAME_MAX_LENGTH:
        raise InvalidNameError(
            f"{what} {value[:20]!r}... is {len(value)} characters long; the limit is {NAME_MAX_LENGTH}"
        )
    if not NAME_RE.match(value):
        raise InvalidNameError(
            f"{what} {value!r} is not allowed: use lowercase letters and digits, separated by single "
            "'.', '_' or '-' (no leading/trailing separator, no '/', no '..')"
        )
    return value


def _kind(value: object) -> str:
    """How a JSON/YAML user would call the type of ``value``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def is_valid_name(value: object) -> bool:
    try:
        validate_name(value)
    except InvalidNameError:
        return False
    return True


def validate_tag(value: str) -> str:
    if not TAG_RE.match(value or ""):
        raise InvalidNameError(f"tag {value!r} is not a valid image tag")
    return value


def build_key(spec_sha256: str, scheduled_on: datetime, build_id: int, environment_name: str) -> str:
    """The upstream v2 build key (also our image tag and artifact file stem)."""
    if scheduled_on.tzinfo is None:
        scheduled_on = scheduled_on.replace(tzinfo=timezone.utc)
    return f"{spec_sha256[:8]}-{int(scheduled_on.timestamp())}-{build_id}-{environment_name}"


def parse_build_key(key: str) -> int:
    """Return the build id inside a v2 build key; raise InvalidNameError if it is not one."""
    m = BUILD_KEY_RE.match(key)
    if not m:
        raise InvalidNameError(f"{key!r} is not a build key")
    return int(m.group("id"))


_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")

USER_SUFFIX_SEPARATOR = "--"
USER_SUFFIX_HEX = 8
_USER_SUFFIX_RE = re.compile(rf"{USER_SUFFIX_SEPARATOR}[0-9a-f]{{{USER_SUFFIX_HEX}}}$")
"""The suffix :func:`namespace_for_username` appends to a name it had to change."""


def namespace_for_username(username: str) -> str:
    """The primary namespace of a user: the name itself, or a normalisation of it that no other
    user name can map to.

    JupyterHub (and other identity providers) allow names our grammar does not: ``Alice``,
    ``alice@example.org``. A name that is already valid is its own namespace. Any other name is
    lowercased, each run of other characters becomes ``-``, and ``--`` plus the first 8 hex of
    the sha256 of the *original* name is appended: ``bob@x.org`` → ``bob-x-org--1b7f…``, never
    ``bob-x-org``, which is the user ``bob-x-org``'s. (Like JupyterHub's escaping, the mapping is
    injective: a valid name that happens to end in ``--<8 hex>`` is suffixed too, so the two kinds
    of result never meet.) Raises InvalidNameError when nothing usable remains.

    Which identity owns a namespace is also recorded (``Namespace.owner``), so even a collision
    of the suffix could not hand one user another's namespace.
    """
    if not isinstance(username, str) or not username.strip():
        raise InvalidNameError("user name must be a non-empty string")
    if is_valid_name(username) and not _USER_SUFFIX_RE.search(username):
        candidate = username
    else:
        # NFKD + dropping non-ASCII keeps "Émile" recognisable as "emile" rather than "mile".
        ascii_name = unicodedata.normalize("NFKD", username).encode("ascii", "ignore").decode()
        readable = _NOT_NAME_CHARS.sub("-", ascii_name.strip().lower()).strip("-")
        room = NAME_MAX_LENGTH - len(USER_SUFFIX_SEPARATOR) - USER_SUFFIX_HEX
        readable = readable[:room].rstrip("-")
        if not is_valid_name(readable):
            raise InvalidNameError(
                f"user name {username[:80]!r} cannot be used as a namespace (normalised to {readable!r}, "
                f"which is not a valid name: lowercase letters and digits separated by '.', '_' or '-')"
            )
        import hashlib  # lazily: `conda-store run` imports this module on its fast path

        digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:USER_SUFFIX_HEX]
        candidate = f"{readable}{USER_SUFFIX_SEPARATOR}{digest}"
    # Reserved (security): the owner of the on-demand image namespace could plant images that the
    # registry serves to everyone pulling conda-store-dynamic/... (see DYNAMIC_NAMESPACE).
    if candidate == DYNAMIC_NAMESPACE:
        raise InvalidNameError(
            f"user name {username!r} cannot be used as a namespace: {candidate!r} is reserved for "
            "on-demand images; give this user another name or an explicit token"
        )
    return candidate
