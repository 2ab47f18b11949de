"""Typed records passed between the kernel steps (service answer -> spec -> launch -> running).

Parsed once from the service's ``GET /api/v1/kernels/`` items (see
:mod:`conda_store_jupyter.server.kernels` for the shape) so the rest never indexes dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class KernelPackage:
    name: str
    version: str
    build: str
    language: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> "KernelPackage":
        return cls(str(data["name"]), str(data["version"]), str(data["build"]), str(data["language"]))


@dataclass(frozen=True)
class BuildInfo:
    id: int
    environment_id: int
    status: str
    deleted: bool
    scheduled_on: str | None
    specification_sha256: str
    build_key: str
    prefix: str
    kernel: KernelPackage | None
    has_archive: bool
    lockfile_sha256: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any], environment_id: int) -> "BuildInfo":
        kernel = data.get("kernel")
        return cls(
            id=int(data["id"]), environment_id=environment_id, status=str(data["status"]),
            deleted=bool(data.get("deleted")), scheduled_on=data.get("scheduled_on"),
            specification_sha256=str(data.get("specification_sha256") or ""), build_key=str(data["build_key"]),
            prefix=str(data["prefix"]), kernel=KernelPackage.parse(kernel) if kernel else None,
            has_archive=bool(data.get("has_archive")), lockfile_sha256=data.get("lockfile_sha256"),
        )

    @property
    def usable(self) -> bool:
        return self.status == "COMPLETED" and not self.deleted

    def identity(self, environment: str) -> dict[str, Any]:
        """The cache identity ``conda-store run`` records (:func:`cli._run.build_identity`)."""
        fields = {"build_id": self.id, "environment_id": self.environment_id, "scheduled_on": self.scheduled_on,
                  "sha256": self.specification_sha256 or None, "environment": environment}
        return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class EnvironmentEntry:
    """One readable environment and its current (or asked-for) build."""

    namespace: str
    environment: str
    environment_id: int
    current_build_id: int | None
    build: BuildInfo | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> "EnvironmentEntry":
        env_id = int(data["environment_id"])
        build = data.get("build")
        return cls(str(data["namespace"]), str(data["environment"]), env_id,
                   data.get("current_build_id"), BuildInfo.parse(build, env_id) if build else None)

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.environment}"


@dataclass(frozen=True)
class LaunchPlan:
    """What a kernel start runs: argv (with ``{connection_file}``) and extra environment."""

    argv: list[str]
    env: dict[str, str]
    namespace: str
    environment: str
    build_id: int | None = None
    lockfile_sha256: str | None = None
    prefix: str | None = None
    source: str | None = None  # "store" | "cache"; None for the fallback kernel
    pinned: int | None = None
    error: str | None = None  # set for the fallback kernel: what went wrong and what to do


@dataclass
class RunningKernel:
    """What ``GET conda-store/kernels/running/<id>`` answers (without ``current_build_id``)."""

    kernel_id: str
    namespace: str
    environment: str
    build_id: int | None
    lockfile_sha256: str | None
    prefix: str | None
    source: str | None
    pinned: int | None
    started: str
    error: str | None = None

    def to_json(self, current_build_id: int | None) -> dict[str, Any]:
        return {"namespace": self.namespace, "environment": self.environment, "build_id": self.build_id,
                "lockfile_sha256": self.lockfile_sha256, "prefix": self.prefix, "source": self.source,
                "pinned": self.pinned, "current_build_id": current_build_id, "started": self.started,
                "error": self.error}
