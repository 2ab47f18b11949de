"""Pydantic models: the environment specification (environment.yaml) and shared enums.

``parse_specification`` is the single entry point for user-supplied environment files: it returns
a normalised :class:`Specification` or raises :class:`~conda_store_jupyter.exceptions.SpecificationError`
whose message names the problem and where it is (``dependencies[2]: ...``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

import pydantic
import yaml
from packaging.requirements import InvalidRequirement, Requirement

from .exceptions import InvalidNameError, SpecificationError
from .naming import validate_name

SPECIFICATION_MAX_BYTES = 256 * 1024
"""Largest environment file accepted; real ones are a few KB."""

_PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_CONDA_PIN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*=[^=\s]+=[^=\s]+$")


class BuildStatus(str, enum.Enum):
    QUEUED = "QUEUED"
    BUILDING = "BUILDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def finished(self) -> bool:
        return self in (BuildStatus.COMPLETED, BuildStatus.FAILED, BuildStatus.CANCELED)


class ArtifactStatus(str, enum.Enum):
    """State of one artifact of a build: ``BuildArtifact.status``.

    Artifacts written by the build itself (lockfile, YAML, log) are READY when their row appears.
    Those made after COMPLETED by artifact jobs (conda-pack archive, image: ``POST_BUILD_ARTIFACTS``)
    are PENDING from the build's COMPLETED commit on, then READY or FAILED (with a reason).
    """

    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


class BuildArtifactType(str, enum.Enum):
    DIRECTORY = "DIRECTORY"
    LOCKFILE = "LOCKFILE"
    LOGS = "LOGS"
    YAML = "YAML"
    CONDA_PACK = "CONDA_PACK"
    DOCKER_MANIFEST = "DOCKER_MANIFEST"
    DOCKER_BLOB = "DOCKER_BLOB"
    CONSTRUCTOR_INSTALLER = "CONSTRUCTOR_INSTALLER"
    CONTAINER_REGISTRY = "CONTAINER_REGISTRY"


POST_BUILD_ARTIFACTS: tuple[BuildArtifactType, ...] = (BuildArtifactType.CONDA_PACK, BuildArtifactType.DOCKER_MANIFEST)
"""Artifacts produced by jobs on the artifacts queue *after* a build is COMPLETED (and usable), in
the order they are queued: a build never waits for them, and each has its own state."""


class Specification(pydantic.BaseModel):
    """A validated, normalised environment.yaml.

    ``dependencies`` holds conda match specs; the ``pip:`` sub-list is split out into ``pip``.
    ``prefix`` from exported files is accepted (upstream accepts it) but ignored, and said so in
    ``warnings``: what the submitter should know, shown in the API answer and the build log. The
    warnings are not part of the specification (not in its dict, YAML or sha256).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str
    channels: list[str] = []
    dependencies: list[str] = []
    pip: list[str] = []
    variables: dict[str, str] = {}
    description: str | None = None
    warnings: list[str] = pydantic.Field(default_factory=list, exclude=True)

    # -- identity ---------------------------------------------------------------------------
    def to_environment_dict(self) -> dict[str, Any]:
        """The environment.yaml form (``pip`` folded back into ``dependencies``)."""
        deps: list[Any] = list(self.dependencies)
        if self.pip:
            deps.append({"pip": list(self.pip)})
        out: dict[str, Any] = {"name": self.name, "channels": list(self.channels), "dependencies": deps}
        if self.variables:
            out["variables"] = dict(self.variables)
        if self.description:
            out["description"] = self.description
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_environment_dict(), sort_keys=False)

    @property
    def sha256(self) -> str:
        """sha256 of the key-sorted JSON of the normalised environment dict."""
        blob = json.dumps(self.to_environment_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def conda_names(self) -> set[str]:
        from rattler import MatchSpec

        return {MatchSpec(d).name.normalized for d in self.dependencies}

    def with_packages(self, included: Iterable[str]) -> "Specification":
        """A copy with each of ``included`` added unless a dependency of that name is present."""
        from rattler import MatchSpec

        have = self.conda_names
        extra = [s for s in included if MatchSpec(s).name.normalized not in have]
        return self.model_copy(update={"dependencies": [*self.dependencies, *extra]}) if extra else self


def invalid_unicode_at(data: Any) -> str | None:
    """Where in parsed JSON/YAML a string (or key) holds a lone surrogate, e.g. ``note`` or
    ``role_bindings.x/*[0]``; None if every string is valid Unicode.

    JSON (``"\\udfff"``) and YAML (``"\\ud800"``) can both spell one, no database can store
    it, and it would only fail when written. Iterative: nesting depth is the parser's business.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return where or "value"
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not _encodable(key):
                    return f"{where + '.' if where else ''}<a key>"
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "specification"


def _check_match_spec(text: str, where: str) -> str:
    from rattler import MatchSpec

    spec = " ".join(text.split())
    if not spec:
        raise SpecificationError(f"{where}: empty dependency")
    try:
        # strict: reject what the solver would reject later (``pkg 1.0`` lacks a range operator),
        # so the user gets a 400 with rattler's "did you mean" hint instead of a failed build.
        # conda's exact pin form ``name=version=build`` (what exports contain) is only lenient-valid.
        ms = MatchSpec(spec, strict=not _CONDA_PIN_RE.match(spec))
    except Exception as exc:  # rattler raises InvalidMatchSpecError; message is good
        first = str(exc).splitlines()[0]
        raise SpecificationError(f"{where}: {spec!r} is not a valid conda match spec: {first}") from None
    name = ms.name.normalized if ms.name else ""
    if not _PACKAGE_NAME_RE.match(name) or ".." in name:
        raise SpecificationError(f"{where}: {name!r} is not a valid conda package name")
    return spec


def _check_pip(text: object, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise SpecificationError(f"{where}: pip requirement must be a non-empty string")
    if text.strip().startswith("-"):
        # pip options (-e, --index-url, -r ...) could point the build anywhere; refuse them.
        raise SpecificationError(f"{where}: pip options like {text.split()[0]!r} are not allowed")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise SpecificationError(f"{where}: {text!r} is not a valid pip requirement: {exc}") from None
    if requirement.url:
        # ``name @ https://…`` / ``file:///…`` would bypass the configured index (fetch anything,
        # build local directories with arbitrary code): packages come from the index only.
        raise SpecificationError(
            f"{where}: direct URL requirements ({requirement.name} @ …) are not allowed; "
            "use a name and version available from the configured package index"
        )
    return text.strip()


# -- the channel policy (conda_allowed_channels) ------------------------------------------------
DEFAULT_CHANNEL_ALIAS = "https://conda.anaconda.org"
"""Where bare channel names live unless ``CondaStore.conda_channel_alias`` says otherwise."""


def channel_url(channel: str, channel_alias: str = DEFAULT_CHANNEL_ALIAS) -> str:
    """The URL a channel name, path or URL stands for: what the solver fetches.

    ``conda-forge`` -> ``<alias>/conda-forge``; ``/srv/channel`` -> ``file:///srv/channel``; URLs as
    given; never a trailing slash. Two spellings of one channel normalise to the same URL.
    """
    channel = channel.strip().rstrip("/")
    if "://" in channel:
        return channel
    if channel.startswith("/"):
        return Path(channel).as_uri()
    return f"{channel_alias.rstrip('/')}/{channel}"


def channel_allowed(channel: str, allowed: Iterable[str], channel_alias: str = DEFAULT_CHANNEL_ALIAS) -> bool:
    """THE channel policy: is ``channel`` one of ``allowed``, compared as normalised URLs?

    Applied when a specification is submitted (:func:`specification_from_dict`) and again when a
    build runs (the pipeline checks its settings' channels), so a channel removed from
    ``conda_allowed_channels`` since the submission is refused by its rebuild too.
    """
    url = channel_url(channel, channel_alias)
    return any(url == channel_url(a, channel_alias) for a in allowed)


def specification_from_dict(
    data: object, *, allowed_channels: Iterable[str] | None = None, channel_alias: str = DEFAULT_CHANNEL_ALIAS
) -> Specification:
    """Validate an already-parsed environment mapping (see :func:`parse_specification`).

    ``allowed_channels`` (names or URLs; None: no policy) is checked with :func:`channel_allowed`,
    bare names resolved under ``channel_alias``.
    """
    if not isinstance(data, dict):
        raise SpecificationError(
            f"specification must be a mapping with name/channels/dependencies, got {type(data).__name__}"
        )
    where = invalid_unicode_at(data)
    if where is not None:
        raise SpecificationError(f"{where}: not valid Unicode (a lone surrogate such as \\udfff)")
    unknown = set(data) - {"name", "channels", "dependencies", "variables", "description", "prefix"}
    if unknown:
        raise SpecificationError(f"unknown key(s) in specification: {', '.join(sorted(map(str, unknown)))}")
    if "name" not in data:
        raise SpecificationError("specification: 'name' is required")
    try:
        name = validate_name(data["name"], "environment name")
    except InvalidNameError as exc:
        raise SpecificationError(f"name: {exc}") from None

    channels = data.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) and c.strip() for c in channels):
        raise SpecificationError("channels: must be a list of channel names or URLs")
    channels = list(dict.fromkeys(c.strip().rstrip("/") for c in channels))
    if allowed_channels is not None:
        allowed = sorted({c.rstrip("/") for c in allowed_channels})
        for i, c in enumerate(channels):
            if not channel_allowed(c, allowed, channel_alias):
                raise SpecificationError(
                    f"channels[{i}]: channel {c!r} is not allowed; allowed: {', '.join(allowed)}"
                )

    raw_deps = data.get("dependencies") or []
    if not isinstance(raw_deps, list):
        raise SpecificationError("dependencies: must be a list")
    deps: list[str] = []
    pip: list[str] = []
    for i, dep in enumerate(raw_deps):
        where = f"dependencies[{i}]"
        if isinstance(dep, str):
            deps.append(_check_match_spec(dep, where))
        elif isinstance(dep, (int, float)) and not isinstance(dep, bool):
            deps.append(_check_match_spec(str(dep), where))
        elif isinstance(dep, dict) and set(dep) == {"pip"} and isinstance(dep["pip"], list):
            pip.extend(_check_pip(p, f"{where}.pip[{j}]") for j, p in enumerate(dep["pip"]))
        else:
            raise SpecificationError(f"{where}: expected a match spec string or {{pip: [...]}}, got {dep!r}")

    variables = data.get("variables") or {}
    if not isinstance(variables, dict) or not all(isinstance(k, str) for k in variables):
        raise SpecificationError("variables: must be a mapping of names to strings")
    for key, value in variables.items():
        if not isinstance(value, (str, int, float, bool)):
            raise SpecificationError(f"variables.{key}: must be a string or number, got {type(value).__name__}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise SpecificationError("description: must be a string")
    warnings = []
    if "prefix" in data:  # exported by `conda env export`; the store decides where builds live
        warnings.append(f"prefix: {str(data['prefix'])[:80]!r} is ignored; conda-store chooses where "
                        "environments are installed")
    try:
        return Specification(
            name=name,
            channels=channels,
            dependencies=deps,
            pip=pip,
            variables={k: str(v) for k, v in variables.items()},
            description=description,
            warnings=warnings,
        )
    except pydantic.ValidationError as exc:  # pragma: no cover - guarded above
        err = exc.errors()[0]
        raise SpecificationError(f"{_where(err['loc'])}: {err['msg']}") from None


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: environment files never need them, and aliases let a
    few hundred bytes expand into gigabytes ("billion laughs") once the document is used."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in environment files", event.start_mark
            )
        return super().compose_node(parent, index)


def load_untrusted_yaml(text: str, *, nested: str, invalid: str) -> Any:
    """``text`` (YAML or JSON from a user) as Python data, without aliases; any failure is a
    SpecificationError: ``nested`` when it is too deep to parse, else ``invalid`` followed by
    where and what the YAML error is (each caller names its own document in these messages)."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise SpecificationError(nested) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecificationError(f"{invalid}{at}: {problem}") from None


def parse_specification(
    text: str | bytes, *, allowed_channels: Iterable[str] | None = None, channel_alias: str = DEFAULT_CHANNEL_ALIAS
) -> Specification:
    """Parse environment.yaml (or JSON) text into a :class:`Specification`.

    Raises SpecificationError naming the problem: bad YAML (with line/column), a bad match spec,
    a disallowed channel, a bad name, an oversized file.
    """
    if isinstance(text, bytes):
        if len(text) > SPECIFICATION_MAX_BYTES:
            raise SpecificationError(f"specification is {len(text)} bytes; the limit is {SPECIFICATION_MAX_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecificationError("specification is not valid UTF-8") from None
    if len(text) > SPECIFICATION_MAX_BYTES:
        raise SpecificationError(f"specification is {len(text)} characters; the limit is {SPECIFICATION_MAX_BYTES}")
    data = load_untrusted_yaml(text, nested="specification is nested too deeply", invalid="invalid YAML")
    return specification_from_dict(data, allowed_channels=allowed_channels, channel_alias=channel_alias)
