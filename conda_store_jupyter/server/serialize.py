"""ORM rows → the JSON shapes of upstream conda-store's v1 API (one function per object).

Shapes follow upstream field for field so its UI and client work unchanged; a few fields are
added (``deleted_on``, ``image_status`` and ``artifacts`` — each artifact's state — and
``build_key``/``environment`` in the detail, on builds; ``build``/``subdir`` on build packages),
never removed. ``build_artifacts`` lists only artifacts that exist (READY), as upstream's does.
Timestamps are naive-UTC ISO strings without ``Z``, as upstream emits them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .. import orm
from ..schema import ArtifactStatus, BuildArtifactType

_SHOWN_ARTIFACTS = (BuildArtifactType.LOCKFILE, BuildArtifactType.YAML, BuildArtifactType.LOGS,
                    BuildArtifactType.CONDA_PACK, BuildArtifactType.DOCKER_MANIFEST)
"""Artifacts whose state ``artifacts`` shows, in this order (DIRECTORY is a server path, blobs are
parts of the image)."""


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


def ready_artifacts(b: orm.Build) -> list[dict[str, Any]]:
    """Upstream's ``build_artifacts``: the artifacts that exist (a PENDING/FAILED one has no file)."""
    return [artifact(a) for a in b.artifacts if a.status is ArtifactStatus.READY]


def artifact_states(b: orm.Build) -> list[dict[str, Any]]:
    """``[{type, status, reason}]``: every artifact the build has or will have, with its state."""
    rows = {a.artifact_type: a for a in b.artifacts}
    return [{"type": kind.value, "status": rows[kind].status.value, "reason": rows[kind].reason}
            for kind in _SHOWN_ARTIFACTS if kind in rows]


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
        "build_artifacts": ready_artifacts(b) if full else None,
        "artifacts": artifact_states(b),
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
