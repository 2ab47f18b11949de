"""Every error conda-store-jupyter raises on purpose, in one place.

    CondaStoreError                 base of everything below
    ├── ValidationError             user input is wrong; message names the problem and where (HTTP 400)
    │   ├── NameError_              a namespace/environment/tag name breaks the name grammar
    │   └── SpecificationError      an environment.yaml is invalid (YAML, match spec, channel, ...)
    ├── NotFoundError               an id or name does not exist (HTTP 404)
    ├── ConflictError               the request contradicts current state (HTTP 409)
    ├── PermissionDeniedError       authenticated but not allowed (HTTP 403)
    ├── AuthenticationError         not (or no longer) authenticated (HTTP 401)
    ├── ServiceUnavailableError     a backing service (Redis queue) is unreachable (HTTP 503)
    └── BuildError                  a build step failed; ``str(err)`` is the one-paragraph reason
        ├── SolveError              the solver could not satisfy the specification (HTTP 422
        │                           when it answers a request, e.g. a remote solve)
        ├── InstallError            linking packages or the ``pip:`` section failed
        ├── ArtifactError           an artifact (lockfile, pack, image) could not be produced
        └── BuildTimeoutError       the build ran past ``CondaStore.build_timeout``

Handlers map these to HTTP statuses through ``status_code``; the CLI prints ``str(err)``.
"""

from __future__ import annotations


class CondaStoreError(Exception):
    """Base class of all errors raised on purpose by conda-store-jupyter."""

    status_code = 500


class ValidationError(CondaStoreError, ValueError):
    """User input is invalid. The message says what is wrong and where."""

    status_code = 400


class InvalidNameError(ValidationError):
    """A name does not follow the grammar in :mod:`conda_store_jupyter.naming`."""


class SpecificationError(ValidationError):
    """An environment specification is invalid (bad YAML, bad match spec, channel not allowed...)."""


class NotFoundError(CondaStoreError, LookupError):
    status_code = 404


class ConflictError(CondaStoreError):
    status_code = 409


class ArtifactPendingError(ConflictError):
    """An artifact made after COMPLETED (archive, image) is still being made: try again later.

    409, never an empty or partial file, with ``Retry-After`` and the artifact's state in ``data``
    so a client can wait (``conda-store download``/``run``, the kernel provisioner, the UI)."""

    def __init__(self, message: str, *, artifact: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after))}
        self.data = {"artifact": {"type": artifact, "status": "PENDING", "reason": None}}


class ArtifactFailedError(CondaStoreError):
    """An artifact made after COMPLETED failed and will not come (410 Gone, the reason in ``data``);
    the build itself stays COMPLETED and usable."""

    status_code = 410

    def __init__(self, message: str, *, artifact: str, reason: str | None) -> None:
        super().__init__(message)
        self.data = {"artifact": {"type": artifact, "status": "FAILED", "reason": reason}}


class AuthenticationError(CondaStoreError):
    status_code = 401


class PermissionDeniedError(CondaStoreError):
    status_code = 403


class ServiceUnavailableError(CondaStoreError):
    """A service we depend on (Redis, the build queue) cannot be reached right now."""

    status_code = 503


class BuildError(CondaStoreError):
    """A build failed. ``str(err)`` is a one-paragraph, user-facing reason."""


class SolveError(BuildError):
    """The solver could not satisfy the specification (its explanation is the message)."""

    status_code = 422  # the request was understood but the packages asked for cannot be combined


class InstallError(BuildError):
    """Linking conda packages or installing the ``pip:`` section failed."""


class ArtifactError(BuildError):
    """An artifact (lockfile, pinned YAML, conda-pack archive, image) could not be produced."""


class BuildTimeoutError(BuildError):
    """The build ran longer than ``CondaStore.build_timeout``."""
