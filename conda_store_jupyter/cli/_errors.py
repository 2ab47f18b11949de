"""The one exception type the CLI reports, and the wording of HTTP failures.

Everything the user can cause or fix (bad URI, 403, 404, server down, timeout) ends as a
:class:`CLIError`; ``main`` prints ``str(err)`` as one line and exits with ``err.exit_code``.
This module is imported on the fast ``run`` path, so it must stay free of heavy imports.
"""

from __future__ import annotations

import json


class CLIError(Exception):
    """A failure explained in one line; ``exit_code`` is the process exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ArtifactPending(CLIError):
    """The server answered 409: the artifact is still being made after its build COMPLETED."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def pending_artifact(status: int, body: bytes | str, retry_after: str | None) -> ArtifactPending | None:
    """The :class:`ArtifactPending` a 409 answer means (``data.artifact.status`` PENDING), else None."""
    if status != 409:
        return None
    try:
        doc = json.loads(body)
        artifact = doc["data"]["artifact"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(artifact, dict) or artifact.get("status") != "PENDING":
        return None
    try:
        wait = min(30.0, max(0.2, float(retry_after or 1)))
    except ValueError:
        wait = 1.0
    return ArtifactPending(server_message(body) or "the artifact is still being made", wait)


def server_message(body: bytes | str) -> str | None:
    """Extract the server's own explanation from an error body (envelope or FastAPI style)."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return None
    if not isinstance(doc, dict):
        return None
    msg = doc.get("message")
    if isinstance(msg, str) and msg:
        return msg
    detail = doc.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return str(detail[0].get("msg") or detail[0])
    return None


def http_error(status: int, method: str, url: str, body: bytes | str = b"", credentials: str | None = None) -> CLIError:
    """Turn an HTTP error response into a CLIError whose message says what to do next.

    ``credentials`` names where the credential sent came from (``CONDA_STORE_TOKEN``...), None
    if none was sent: a 401 then either asks for one, or says what is wrong with the one sent.
    """
    reason = server_message(body)
    where = f"{method} {url}"
    if status == 401 and credentials:
        # The server says what is wrong with it (unknown, expired, revoked...): say which one it was.
        hint = f"authentication failed with the credentials from {credentials}"
    elif status == 401:
        hint = "not authenticated: set CONDA_STORE_TOKEN (or --auth basic with CONDA_STORE_USERNAME/PASSWORD)"
    elif status == 403:
        hint = "permission denied"
    elif status == 404:
        hint = "not found"
    elif status == 410:
        hint = "not available"
    elif status in (400, 409, 422):
        hint = "refused by the server"
    elif status >= 500:
        hint = f"server error {status}"
    else:
        hint = f"HTTP {status}"
    text = f"{hint}: {reason}" if reason and reason.lower() not in hint else hint
    # Keep it on one line even if the server sent a multi-line message.
    return CLIError(" ".join(f"{text} ({where})".split()))


def connection_error(url: str, exc: BaseException) -> CLIError:
    """A server that cannot be reached: name the URL and how to point the CLI elsewhere."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return CLIError(
        f"cannot reach conda-store at {url} ({detail}); is the server running? "
        "Set --conda-store-url or CONDA_STORE_URL"
    )
