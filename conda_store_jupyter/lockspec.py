"""Lockfiles as specifications: a conda-lock v1 document submitted with ``is_lockfile: true``.

:func:`parse_lockfile_specification` is the single entry point for a submitted lockfile. It
validates everything that can be checked without the channels, so a bad lockfile is a 400 naming
the exact problem instead of a failed build: that it is a conda-lock file at all, its version,
that it locks this service's platform, that every file of that platform is pinned by hash, that
its channels are allowed (``schema.channel_allowed``) and every package comes from one of them,
and the environment's name. What needs the channels (the files still exist, their hashes match)
is checked by the build (``builder.from_lock``).

The result, :class:`LockSpecification`, is what is stored as the build's specification
(``is_lockfile`` set): ``{"name", "description", "lockfile": <the document as submitted>}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .exceptions import InvalidNameError, SpecificationError
from .naming import validate_name
from .schema import (DEFAULT_CHANNEL_ALIAS, channel_allowed, channel_url, invalid_unicode_at,
                     load_untrusted_yaml)
from .urls import redact_url

LOCKFILE_MAX_BYTES = 8 * 1024 * 1024
"""Largest lockfile accepted (the HTTP body limit, ``CondaStoreServer.max_body_size``, usually
comes first). A lockfile of several hundred packages on three platforms is well under 1 MB."""

LOCKFILE_VERSION = 1
"""The on-disk conda-lock format accepted (what conda-lock writes, and what our builds record)."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_PIP_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class LockedFile:
    """One package of the installed platform, as the lockfile pins it."""

    manager: str  # "conda" or "pip"
    name: str
    version: str
    build: str
    url: str
    sha256: str
    md5: str | None

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}" if self.manager == "pip" else f"{self.name}={self.version}={self.build}"


@dataclass(frozen=True)
class LockSpecification:
    """A validated lockfile specification (see module docstring); stored with ``is_lockfile``."""

    name: str
    lockfile: dict[str, Any]
    description: str | None = None
    warnings: list[str] = field(default_factory=list, compare=False)

    is_lockfile = True

    # -- what is stored ---------------------------------------------------------------------
    def to_stored_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "lockfile": self.lockfile}
        if self.description:
            out["description"] = self.description
        return out

    @property
    def sha256(self) -> str:
        """The identity of the stored form: the same lockfile under the same name shares one row."""
        blob = json.dumps(self.to_stored_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> "LockSpecification":
        return cls(name=str(data["name"]), lockfile=dict(data["lockfile"]), description=data.get("description"))

    # -- the document, read ---------------------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        """The lockfile's channel URLs (``metadata.channels[].url``; names expanded later)."""
        return [_channel_of(c) for c in self.lockfile.get("metadata", {}).get("channels") or []]

    @property
    def platforms(self) -> list[str]:
        return list(self.lockfile.get("metadata", {}).get("platforms") or [])

    def files(self, platform: str) -> list[LockedFile]:
        """The conda packages, then the pip packages, locked for ``platform`` and installed.

        As ``conda-lock install`` does by default: the main and dev categories, not the optional
        extras (``optional: true`` in another category).
        """
        out = [_locked_file(p) for p in self.lockfile.get("package") or []
               if p.get("platform") == platform
               and (not p.get("optional") or p.get("category", "main") in ("main", "dev"))]
        return sorted(out, key=lambda f: f.manager != "conda")


def _channel_of(entry: Any) -> str:
    return str(entry.get("url") if isinstance(entry, dict) else entry).strip().rstrip("/")


def _locked_file(p: Mapping[str, Any]) -> LockedFile:
    hashes = p.get("hash") or {}
    return LockedFile(
        manager=str(p.get("manager")), name=str(p.get("name")), version=str(p.get("version")),
        build=str(p.get("build") or ""), url=str(p.get("url") or ""), sha256=str(hashes.get("sha256") or ""),
        md5=hashes.get("md5") or None,
    )


# -- parsing and validation -------------------------------------------------------------------------
def _load(text: str | bytes | Mapping[str, Any]) -> Any:
    if isinstance(text, Mapping):
        return dict(text)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecificationError("the lockfile is not valid UTF-8") from None
    if len(text.encode("utf-8", "surrogatepass")) > LOCKFILE_MAX_BYTES:
        raise SpecificationError(f"the lockfile is larger than the limit of {LOCKFILE_MAX_BYTES} bytes")
    # JSON (what upstream serves) is YAML; aliases are refused as in environment files
    return load_untrusted_yaml(text, nested="the lockfile is nested too deeply",
                               invalid="the lockfile is not valid YAML or JSON")


def _plain_json(value: Any) -> Any:
    """The document with YAML-only scalars (unquoted timestamps) as strings, so it stores as JSON."""
    def default(obj: Any) -> str:
        if isinstance(obj, (dt.date, dt.datetime)):
            return obj.isoformat()
        raise SpecificationError(f"the lockfile holds a value JSON cannot store: {type(obj).__name__}")

    return json.loads(json.dumps(value, default=default))


def _where(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "lockfile"


def _validate_model(doc: dict[str, Any]) -> None:
    """conda-lock's own v1 model decides what a well-formed lockfile is (fields, types)."""
    import pydantic
    from conda_lock.lockfile.v1.models import Lockfile as LockfileV1

    packages = doc.get("package")
    if not isinstance(packages, list):
        raise SpecificationError("not a valid conda-lock file: package: must be a list")
    for i, p in enumerate(packages):  # conda-lock's validators assume these (a KeyError otherwise)
        if not isinstance(p, dict):
            raise SpecificationError(f"not a valid conda-lock file: package[{i}]: must be a mapping")
        for key in ("name", "version", "manager", "platform"):
            if not isinstance(p.get(key), str) or not p[key]:
                problem = "Field required" if key not in p else "must be a non-empty string"
                raise SpecificationError(f"not a valid conda-lock file: package[{i}].{key}: {problem}")
        if p["manager"] not in ("conda", "pip"):
            raise SpecificationError(f"not a valid conda-lock file: package[{i}].manager: must be conda or pip, "
                                     f"not {p['manager'][:40]!r}")
    try:
        LockfileV1.model_validate(doc)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]  # drop union tags
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise SpecificationError(f"not a valid conda-lock file: {_where(loc)}: {msg}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a validator tripping on odd input
        raise SpecificationError(f"not a valid conda-lock file: {type(exc).__name__}: {exc}") from None


def _describe(i: int, p: Mapping[str, Any]) -> str:
    return f"package[{i}] ({p.get('name')} {p.get('version')}, {p.get('manager')})"


def _under(url: str, channels: Iterable[str]) -> bool:
    return any(url.startswith(c + "/") for c in channels)


def parse_lockfile_specification(
    text: str | bytes | Mapping[str, Any],
    *,
    name: object,
    description: object = None,
    platform: str,
    allowed_channels: Iterable[str] | None = None,
    channel_alias: str = DEFAULT_CHANNEL_ALIAS,
    required_packages: Iterable[str] = (),
) -> LockSpecification:
    """Validate a submitted conda-lock v1 document for installing on ``platform``.

    Raises SpecificationError naming the problem (see module docstring). ``allowed_channels``
    None means no channel policy; package URLs must lie under the lockfile's channels either way
    (a lockfile cannot fetch from where its channels do not say).
    """
    if name is None or name == "":
        raise SpecificationError("environment_name is required with is_lockfile: a lockfile does not name "
                                 "its environment")
    try:
        name = validate_name(name, "environment_name")
    except InvalidNameError as exc:
        raise SpecificationError(str(exc)) from None
    if description is not None and not isinstance(description, str):
        raise SpecificationError("environment_description must be a string")

    doc = _load(text)
    if not isinstance(doc, dict):
        raise SpecificationError(f"not a conda-lock file: expected a mapping with version, metadata and "
                                 f"package, got {type(doc).__name__}")
    where = invalid_unicode_at(doc)
    if where is not None:
        raise SpecificationError(f"{where}: not valid Unicode (a lone surrogate such as \\udfff)")
    if "version" not in doc or "package" not in doc:
        if "dependencies" in doc:
            raise SpecificationError("not a conda-lock file: this is an environment.yaml; submit it without "
                                     "is_lockfile")
        raise SpecificationError("not a conda-lock file: expected a mapping with version, metadata and package")
    if doc["version"] != LOCKFILE_VERSION:
        raise SpecificationError(f"unsupported lockfile version {doc['version']!r}: conda-lock files of version "
                                 f"{LOCKFILE_VERSION} are accepted")
    doc = _plain_json(doc)
    _validate_model(doc)

    lock = LockSpecification(name=name, lockfile=doc, description=description)
    platforms = lock.platforms
    if platform not in platforms:
        raise SpecificationError(f"metadata.platforms: the lockfile is for {', '.join(platforms) or 'no platform'}; "
                                 f"this conda-store installs {platform} environments")
    channels = [channel_url(c, channel_alias) for c in lock.channels]
    if allowed_channels is not None:
        allowed = sorted({c.rstrip("/") for c in allowed_channels})
        # Lockfiles record channels with their credentials redacted (``urls.redact_url``): such a
        # channel is the allowed one it was redacted from (the build uses that one's URL).
        shown = sorted({redact_url(channel_url(c, channel_alias)) for c in allowed})
        for i, c in enumerate(lock.channels):
            if not channel_allowed(c, allowed, channel_alias) and not channel_allowed(c, shown, channel_alias):
                raise SpecificationError(
                    f"metadata.channels[{i}]: channel {c!r} is not allowed; allowed: {', '.join(shown) or 'none'}")

    conda_names: set[str] = set()
    for i, p in enumerate(doc["package"]):
        if p.get("platform") != platform:
            continue  # other platforms are recorded, never installed here
        what = _describe(i, p)
        hashes = p.get("hash") or {}
        sha256, md5 = hashes.get("sha256"), hashes.get("md5")
        if not sha256:
            raise SpecificationError(f"{what}: no sha256 hash; every file installed from a lockfile must be "
                                     "pinned by its sha256")
        if not _SHA256_RE.match(str(sha256)):
            raise SpecificationError(f"{what}: hash.sha256 {str(sha256)[:80]!r} is not 64 hex digits")
        if md5 and not _MD5_RE.match(str(md5)):
            raise SpecificationError(f"{what}: hash.md5 {str(md5)[:80]!r} is not 32 hex digits")
        if p.get("manager") == "conda":
            if not p.get("url") or not _under(str(p["url"]).strip(), channels):
                raise SpecificationError(f"{what}: url {str(p.get('url'))[:200]!r} is not in one of the lockfile's "
                                         f"channels ({', '.join(channels) or 'none'})")
            if not p.get("build"):
                raise SpecificationError(f"{what}: no build string")
            conda_names.add(str(p["name"]))
        elif not _PIP_NAME_RE.match(str(p.get("name"))):
            raise SpecificationError(f"{what}: {str(p.get('name'))!r} is not a valid pip package name")
    if not conda_names:
        raise SpecificationError(f"the lockfile has no conda packages for {platform}")
    missing = sorted({r.split()[0].split("=")[0] for r in required_packages} - conda_names)
    if missing:
        raise SpecificationError(f"the lockfile lacks package(s) required for every environment by this "
                                 f"conda-store: {', '.join(missing)}")
    return lock
