"""Lockfile downloads in the form each client reads: JSON by default, YAML when asked.

Upstream conda-store serves a build's lockfile (``build/{id}/lockfile/``, ``conda-lock.yml``,
``conda-lock.yaml`` and the environment's equivalents) as the JSON of the conda-lock document,
and its clients parse the answer as JSON. JSON is also valid YAML, so ``conda-lock install``
reads the downloaded file either way. People opening the link in a browser get the readable YAML
instead by asking for it:

- ``?format=yaml`` (what our pages link), or
- an ``Accept`` header that prefers a YAML type (``text/yaml``, ``application/yaml``...) to JSON.

The stored artifact is whatever the build wrote (YAML from conda-lock's writer, or the JSON of a
submitted lockfile); it is converted on the way out. Lockfiles are small (kilobytes to a few MB),
so both forms are read through the server even when the storage could redirect.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from .. import orm
from ..exceptions import NotFoundError, ValidationError
from ..schema import BuildArtifactType
from .artifacts import artifact_storage_key
from .base import BaseHandler, run_sync

FORMATS = ("json", "yaml")
"""Values of the ``format`` query parameter."""

_YAML_TYPES = {"text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml"}
_JSON_TYPES = {"application/json", "*/*", "application/*"}


def _accept_quality(accept: str, types: set[str]) -> float:
    """The highest ``q`` the Accept header gives any of ``types`` (0 if none)."""
    best = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in types:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


def wants_yaml(format_arg: str | None, accept: str | None) -> bool:
    """Does the request ask for the YAML form? ``format`` wins over ``Accept``."""
    if format_arg is not None:
        if format_arg not in FORMATS:
            raise ValidationError(f"format must be one of {', '.join(FORMATS)}, not {format_arg[:20]!r}")
        return format_arg == "yaml"
    accept = accept or ""
    return _accept_quality(accept, _YAML_TYPES) > _accept_quality(accept, _JSON_TYPES)


class _Core12Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """libyaml's parser with the YAML 1.2 core schema's implicit types.

    conda-lock writes its file with ruamel (YAML 1.2); PyYAML's default resolvers are YAML 1.1's,
    which would read an unquoted ``on`` or ``no`` as a boolean and ``2024-01-01`` as a date.
    ruamel's own (pure Python) loader reads a 300-package lockfile in seconds; this in
    milliseconds (benchmarks/lockfile_json.py).
    """

    yaml_implicit_resolvers: dict = {}


for _tag, _pattern, _first in [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
]:
    _Core12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _int_core12(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_scalar(node)
    if value.startswith("0o"):
        return int(value[2:], 8)
    if value.startswith("0x"):
        return int(value[2:], 16)
    return int(value, 10)  # YAML 1.2: a leading zero is still decimal


_Core12Loader.add_constructor("tag:yaml.org,2002:int", _int_core12)


def _load(text: bytes) -> Any:
    return yaml.load(text, Loader=_Core12Loader)  # noqa: S506 - a safe loader (SafeConstructor)


def to_json(stored: bytes) -> bytes:
    """The stored lockfile as JSON (already JSON: unchanged, once checked; a client parses it)."""
    if stored.lstrip()[:1] == b"{":
        json.loads(stored)  # ValueError if it is not (milliseconds: no reason to skip it)
        return stored
    return json.dumps(_load(stored), indent=2).encode()


def to_yaml(stored: bytes) -> bytes | None:
    """A stored JSON lockfile as block YAML; None when it is YAML already (serve it as stored)."""
    if stored.lstrip()[:1] != b"{":
        return None
    dumper = yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper
    # PyYAML quotes every string a YAML 1.1 reader could take for something else: a superset of
    # what 1.2 readers (conda-lock) need.
    return yaml.dump(json.loads(stored), Dumper=dumper, default_flow_style=False, sort_keys=False).encode()


async def send_lockfile(handler: BaseHandler, build: orm.Build) -> None:
    """Answer with ``build``'s lockfile in the form the request asks for (see module doc)."""
    as_yaml = wants_yaml(handler.get_query_argument("format", None), handler.request.headers.get("Accept"))
    handler.set_header("Vary", "Accept")
    key = artifact_storage_key(build, BuildArtifactType.LOCKFILE)
    storage = handler.store.storage
    if key is None or not await run_sync(storage.exists, key):
        raise NotFoundError(f"build {build.id} ({build.status.value.lower()}) has no lockfile artifact")
    stored = await run_sync(storage.get_bytes, key)
    try:
        if as_yaml:
            body, content_type = await run_sync(to_yaml, stored) or stored, "text/yaml; charset=utf-8"
        else:
            body, content_type = await run_sync(to_json, stored), "application/json"
    except (ValueError, TypeError, yaml.YAMLError) as exc:  # not what a build writes: say so, no 500
        raise ValidationError(f"build {build.id}'s lockfile cannot be read: {exc}") from None
    handler.set_header("Content-Type", content_type)
    # The same file name either way: conda-lock finds ``conda-lock.yml`` and JSON is YAML.
    handler.set_header("Content-Disposition", f'attachment; filename="{build.build_key}.conda-lock.yml"')
    handler.finish(body)
