"""ORM rows → the JSON shapes of upstream conda-store's v1 API (one function per object).

Shapes follow upstream field for field so its UI and client work unchanged; a few fields are
added (``deleted_on`` and ``image_status``, and ``build_key``/``environment`` in the detail, on
builds; ``build``/``subdir`` on build packages), never removed.
Timestamps are naive-UTC ISO strings without ``Z``, as upstream emits them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .. import orm


def timestamp(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def namespace(ns: orm.Namespace, *, full: bool = False) -> dict[str, Any]:
    """The list endpoint sends ``{id, name}``; the detail adds metadata and role mappings."""
    out: dict[str, Any] = {"id": ns.id, "name": ns.name}
    if full:
        out["metadata_"] = ns.metadata_ or {}
        out["role_mappings"] = [{"id": m.id, "entity": m.entity, "role": m.role} for m in ns.role_mappings]
    return out


def environment(env: orm.Environment, *, current_build: orm.Build | None = None) -> dict[str, Any]:
    return {
        "id": env.id,
        "namespace": namespace(env.namespace),
        "name": env.name,
        "current_build_id": env.current_build_id,
        "current_build": build(current_build) if current_build is not None else None,
        "description": env.description,
    }


def specification(spec: orm.Specification) -> dict[str, Any]:
    return {
        "id": spec.id,
        "name": spec.name,
        "spec": spec.spec,
        "sha256": spec.sha256,
        "created_on": timestamp(spec.created_on),
        "is_lockfile": bool(spec.is_lockfile),  # spec is {"name", "description", "lockfile"} then
    }


def artifact(a: orm.BuildArtifact) -> dict[str, Any]:
    return {"id": a.id, "artifact_type": a.artifact_type.value, "key": a.key}


def build(b: orm.Build, *, full: bool = False) -> dict[str, Any]:
    """Listings leave specification/artifacts null (as upstream); the detail fills them."""
    return {
        "id": b.id,
        "environment_id": b.environment_id,
        "specification": specification(b.specification) if full else None,
        "packages": None,
        "status": b.status.value,
        "status_info": b.status_info,
        "image_status": b.image_status.value if b.image_status is not None else None,
        "size": b.size or 0,
        "scheduled_on": timestamp(b.scheduled_on),
        "started_on": timestamp(b.started_on),
        "ended_on": timestamp(b.ended_on),
        "deleted_on": timestamp(b.deleted_on),
        "build_artifacts": [artifact(a) for a in b.artifacts] if full else None,
        **(_build_detail(b) if full else {}),
    }


def _build_detail(b: orm.Build) -> dict[str, Any]:
    """Added to the detail only (one row, so no N+1): what the build page shows and links."""
    env = b.environment
    return {"build_key": b.build_key, "environment": {"namespace": env.namespace.name, "name": env.name}}


def channel(c: orm.CondaChannel) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "last_update": timestamp(c.last_update)}


def package(p: orm.CondaPackage) -> dict[str, Any]:
    return {
        "id": p.id,
        "channel": {"id": p.channel.id, "name": p.channel.name},
        "license": p.license,
        "name": p.name,
        "version": p.version,
        "summary": p.summary,
    }


def package_build(pb: orm.CondaPackageBuild) -> dict[str, Any]:
    """A package installed in a build: upstream's CondaPackage shape plus the exact build."""
    out = package(pb.package)
    out.update(build=pb.build, build_number=pb.build_number, subdir=pb.subdir, sha256=pb.sha256, size=pb.size)
    return out
