"""Credentials never leave the process: redact them from URLs before anything is persisted.

Channel and index URLs may carry secrets (``https://user:password@host/…`` or anaconda-style
``…/t/<token>/…``). Lockfiles, pinned YAML files, build logs and database rows are shared with
every reader of an environment, so they record the redacted form; the running build keeps using
the configured (secret) URLs, and a lockfile is re-installed by matching redacted forms.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
"""What a secret is replaced with (stable, so redacted URLs still compare equal)."""

_TOKEN_SEGMENT = re.compile(r"/t/[^/]+(?=/|$)")


def redact_url(url: str) -> str:
    """``url`` without a password or ``/t/<token>`` segment; other URLs unchanged."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        # "user:password" keeps the user; a lone "TOKEN@" is itself the secret.
        netloc = f"{user}:{REDACTED}@{host}" if has_password and user else f"{REDACTED}@{host}"
    path = _TOKEN_SEGMENT.sub(f"/t/{REDACTED}", parts.path)
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """Redact every URL-looking token in free text (log lines, error messages)."""
    return re.sub(r"[a-z][a-z0-9+.-]*://\S+", lambda m: redact_url(m.group(0)), text)
