"""API tokens we issue: opaque, stored hashed, expiring, revocable (JupyterHub-style, not JWTs).

Plaintext form (shown once, at creation)::

    cst_<prefix:8><secret:43>

- ``cst_`` makes leaked tokens recognisable (secret scanners, logs) and lets :func:`verify_token`
  reject anything else without touching the database.
- ``prefix`` (48 random bits) is stored in clear and indexed: it narrows the lookup to (almost
  always) one row, so verification costs one indexed query and one hash.
- ``secret`` is ``secrets.token_urlsafe(32)`` (256 random bits). Only a salted SHA-512 of the whole
  token is stored.

Why a fast hash and not scrypt/bcrypt: slow hashes protect *low-entropy* secrets (passwords) from
offline guessing. A 256-bit random secret cannot be guessed either way, so key stretching would
only add latency to every API request (JupyterHub makes the same choice for generated tokens).
The salt keeps equal tokens from having equal hashes and defeats precomputed tables.

A stolen database therefore yields no usable token; revocation (``revoked_on``) and expiry
(``expires_at``) take effect on the next request because every request verifies against the DB.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from sqlalchemy import func, select

from .. import orm
from ..exceptions import AuthenticationError, NotFoundError, ValidationError
from ..naming import validate_name
from .rbac import RoleBindings, normalize_bindings

TOKEN_PREFIX = "cst_"
"""Every token we issue starts with this (recognisable in logs and by secret scanners)."""

LOOKUP_PREFIX_LENGTH = 8
"""Characters after ``cst_`` stored in clear to find the row (``token_urlsafe(6)``: 48 bits)."""

SECRET_BYTES = 32
"""Random bytes in the secret part (256 bits)."""

_MAX_TOKEN_LENGTH = 256
"""Longer strings are rejected before hashing (no CPU spent on garbage headers)."""

_HASH_ALGORITHM = "sha512"
_SALT_BYTES = 16

UNKNOWN_TOKEN = ("invalid token: this server does not know it (mistyped or truncated, issued by another "
                 "server, or its database was reset)")
"""Why a presented token that matches no row (or no token format) is refused."""

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
"""``last_used`` is written at most this often per token, so reads do not turn into writes."""


def utcnow() -> dt.datetime:
    return orm.utcnow()


def to_naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC (how the DB stores times): aware values are converted, naive ones kept as UTC."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise ValidationError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except OverflowError:
            raise ValidationError(f"datetime {value.isoformat()} is out of range") from None
    return value


def bindings_to_json(bindings: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """``{glob: {roles}}`` → ``{glob: [sorted roles]}`` (JSON-storable, stable for comparisons)."""
    return {glob: sorted(roles) for glob, roles in sorted(bindings.items())}


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token. ``token`` is the only copy of the plaintext: show it once."""

    token: str
    id: int
    expires_at: Optional[dt.datetime]
    primary_namespace: str
    role_bindings: dict[str, list[str]]

    def __repr__(self) -> str:  # never print the secret by accident (logs, tracebacks)
        return (f"IssuedToken(id={self.id}, expires_at={self.expires_at!r}, "
                f"primary_namespace={self.primary_namespace!r}, token='cst_…')")


def _hash(token: str, salt: str) -> str:
    digest = hashlib.new(_HASH_ALGORITHM, (salt + token).encode("utf-8")).hexdigest()
    return f"{_HASH_ALGORITHM}:{salt}:{digest}"


def _matches(token: str, stored: str) -> bool:
    """Constant-time comparison of ``token`` against a stored ``algo:salt:digest``."""
    algorithm, _, rest = stored.partition(":")
    salt, _, _digest = rest.partition(":")
    if algorithm != _HASH_ALGORITHM:
        return False
    return hmac.compare_digest(_hash(token, salt).encode(), stored.encode())


def split_token(token: object) -> tuple[str, str] | None:
    """``(lookup prefix, secret)`` of a plausible token string, else None (never raises)."""
    if (not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX)
            or not token.isascii()):  # ours are ASCII; anything else could not even be hashed
        return None
    body = token[len(TOKEN_PREFIX):]
    if len(body) <= LOOKUP_PREFIX_LENGTH:
        return None
    return body[:LOOKUP_PREFIX_LENGTH], body[LOOKUP_PREFIX_LENGTH:]


def issue_token(
    db,
    *,
    username: str | None,
    primary_namespace: str,
    role_bindings: RoleBindings | Mapping[str, Iterable[str]],
    expires_at: dt.datetime | None,
    note: str | None = None,
    issuer_id: int | None = None,
    scoped: bool = False,
) -> IssuedToken:
    """Create a token row and return the plaintext (the only time it exists outside the client).

    No permission checks happen here: callers (``AuthenticationBackend.issue_token_for``) decide
    what may be issued. ``scoped=True`` marks a down-scoped token: its ``role_bindings`` are all
    it may ever do (no admin flag, no namespace role mappings added at use time).
    """
    validate_name(primary_namespace, "primary_namespace")
    bindings = normalize_bindings(role_bindings)
    expires_at = to_naive_utc(expires_at)
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationError("token expiration must be in the future")
    if note is not None and not isinstance(note, str):
        raise ValidationError("token note must be a string")

    # A prefix collision is harmless (verification checks every candidate) but make it rare anyway.
    prefix = secrets.token_urlsafe(6)[:LOOKUP_PREFIX_LENGTH]
    token = f"{TOKEN_PREFIX}{prefix}{secrets.token_urlsafe(SECRET_BYTES)}"
    row = orm.Token(
        prefix=prefix,
        hashed=_hash(token, secrets.token_hex(_SALT_BYTES)),
        username=username,
        primary_namespace=primary_namespace,
        role_bindings=bindings_to_json(bindings),
        note=note,
        created_on=utcnow(),
        expires_at=expires_at,
        issuer_id=issuer_id,
        scoped=scoped,
    )
    db.add(row)
    db.flush()
    return IssuedToken(
        token=token,
        id=row.id,
        expires_at=expires_at,
        primary_namespace=primary_namespace,
        role_bindings=bindings_to_json(bindings),
    )


def _when(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def check_token(db, token: str) -> orm.Token:
    """The live token row for plaintext ``token``, else :class:`AuthenticationError` saying why.

    The message tells the holder of the token what is wrong with it: unknown (mistyped, from
    another server, or its database was reset), revoked (when) or expired (when). It reveals
    nothing to anyone else: only someone who has the whole token can learn its state.
    """
    parts = split_token(token)
    if parts is None:
        raise AuthenticationError(UNKNOWN_TOKEN)
    prefix, _secret = parts
    now = utcnow()
    # Revoked rows too, so a revoked token is reported as revoked, not as unknown.
    candidates = db.scalars(select(orm.Token).where(orm.Token.prefix == prefix)).all()
    found = None
    for row in candidates:  # check all candidates so timing does not depend on which one matched
        if _matches(token, row.hashed) and found is None:
            found = row
    if found is None:
        raise AuthenticationError(UNKNOWN_TOKEN)
    if found.revoked_on is not None:
        raise AuthenticationError(f"invalid token: it was revoked on {_when(found.revoked_on)}")
    if found.expires_at is not None and found.expires_at <= now:
        raise AuthenticationError(f"invalid token: it expired on {_when(found.expires_at)}")
    if found.last_used is None or now - found.last_used >= LAST_USED_RESOLUTION:
        found.last_used = now
        db.flush()
    return found


def verify_token(db, token: str) -> orm.Token | None:
    """:func:`check_token`, but None instead of the reason (unknown, revoked, expired, malformed)."""
    try:
        return check_token(db, token)
    except AuthenticationError:
        return None


def revoke_token(db, token_id: int) -> None:
    """Revoke a token now (idempotent). Tokens it issued stay valid: they are separate grants.

    Raises NotFoundError if there is no such token.
    """
    row = db.get(orm.Token, token_id)
    if row is None:
        raise NotFoundError(f"token {token_id} does not exist")
    if row.revoked_on is None:
        row.revoked_on = utcnow()
        db.flush()


def purge_expired(db, *, note: str, before: dt.datetime) -> int:
    """Delete user-less tokens with ``note`` that expired before ``before``; how many went.

    For tokens anyone can mint (anonymous ones): their rows must not pile up.
    """
    result = db.execute(
        orm.Token.__table__.delete().where(
            orm.Token.username.is_(None), orm.Token.issuer_id.is_(None), orm.Token.note == note,
            orm.Token.expires_at.is_not(None), orm.Token.expires_at < to_naive_utc(before))
    )
    return result.rowcount or 0


def count_live(db, *, note: str) -> int:
    """How many user-less tokens with ``note`` are still valid (not expired, not revoked)."""
    now = utcnow()
    return db.scalar(select(func.count(orm.Token.id)).where(
        orm.Token.username.is_(None), orm.Token.issuer_id.is_(None), orm.Token.note == note,
        orm.Token.revoked_on.is_(None), orm.Token.expires_at > now)) or 0


def list_tokens(db, *, username: str | None = None, include_inactive: bool = False) -> list[orm.Token]:
    """Tokens of ``username`` (all users if None), newest first; live ones unless ``include_inactive``."""
    query = select(orm.Token).order_by(orm.Token.id.desc())
    if username is not None:
        query = query.where(orm.Token.username == username)
    if not include_inactive:
        now = utcnow()
        query = query.where(orm.Token.revoked_on.is_(None)).where(
            (orm.Token.expires_at.is_(None)) | (orm.Token.expires_at > now)
        )
    return list(db.scalars(query).all())
