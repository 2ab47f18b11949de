"""On-demand image names: ``conda-store-dynamic/<segment>/<segment>/…`` → match specs.

Each segment is one package, optionally with a version constraint spelled with letters because
image names cannot hold ``<``, ``>`` or ``=``: ``python.lt.3.12`` is ``python <3.12``,
``hello.ge.2.0`` is ``hello >=2.0``. Decoding is strict (one grammar, length-capped), so a typo
gets a clear registry error instead of a build of something else. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import re

from ..exceptions import InvalidNameError
from ..naming import DYNAMIC_NAMESPACE, validate_name  # noqa: F401 - re-exported

DYNAMIC_PREFIX = "dyn-"
"""Prefix of hashed on-demand environment names; readable names never start with it."""

JOINER = "--"
"""Separates segments in environment names. No segment may contain it (no conda package name
does), so distinct sets of segments never share an environment: ``python-six`` is one package,
``python--six`` the environment of ``python`` and ``six``."""

_OPERATORS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}
_SEGMENT_RE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*?)"
    r"(?:\.(?P<op>lt|le|gt|ge|eq)\.(?P<version>[0-9][0-9a-z]*(?:\.[0-9a-z]+)*))?$"
)


def decode_dynamic_segment(segment: str) -> str:
    """``python.lt.3.12`` → ``python <3.12``; ``six`` → ``six``. Raises InvalidNameError on junk."""
    m = _SEGMENT_RE.match(segment)
    if not m or len(segment) > 100 or JOINER in segment:
        raise InvalidNameError(
            f"image name segment {segment!r} is not '<package>' or '<package>.<lt|le|gt|ge|eq>.<version>'"
        )
    if m.group("op") is None:
        return m.group("name")
    return f"{m.group('name')} {_OPERATORS[m.group('op')]}{m.group('version')}"


def dynamic_environment_name(segments: list[str]) -> str:
    """A stable environment name for a set of segments: order does not matter, and different sets
    never get the same name (readable when it fits the name grammar, else a hash).

    A readable form starting with ``dyn-`` (the single package ``dyn-<16 hex>``, say) is hashed too:
    otherwise it could equal another set's hashed name and the two would share one environment.
    """
    canonical = sorted(set(segments))
    readable = JOINER.join(canonical)
    if len(readable) <= 64 and not readable.startswith(DYNAMIC_PREFIX):
        try:
            return validate_name(readable)
        except InvalidNameError:
            pass
    return DYNAMIC_PREFIX + hashlib.sha256("/".join(canonical).encode()).hexdigest()[:16]
