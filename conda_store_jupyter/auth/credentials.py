"""What a request presents as its credential, parsed once; a malformed one is an error, not nothing.

A client that sends an ``Authorization`` header means to authenticate: if the header cannot be
understood, answering as if it had sent nothing would hide the mistake behind empty listings
and "not authenticated" hints. So only an absent (or blank) header means "no credential";
everything else is either a :class:`Credential` or an :class:`AuthenticationError` naming the
problem.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ..exceptions import AuthenticationError
from .tokens import TOKEN_PREFIX

SCHEMES = "'Bearer <token>', 'token <token>' or Basic with the token as password"


@dataclass(frozen=True)
class Credential:
    """A token and where it came from: ``cookie``, ``bearer``, ``token`` or ``basic``."""

    token: str
    source: str

    def __repr__(self) -> str:  # never print a secret by accident
        return f"Credential(source={self.source!r}, token='…')"

    @property
    def may_be_hub_token(self) -> bool:
        """JupyterHub tokens come only in the header's ``token``/``Bearer`` forms (never as our
        cookie or a ``docker login`` password), and never look like ours: a bad ``cst_`` token
        must not be sent to the hub."""
        return self.source in ("bearer", "token") and not self.token.startswith(TOKEN_PREFIX)


def parse_authorization(header: str | None) -> Credential | None:
    """The credential in an ``Authorization`` header; None if there is none (absent or blank).

    Raises AuthenticationError for a header that is present but unusable.
    """
    if header is None or not isinstance(header, str) or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    kind, value = scheme.lower(), value.strip()
    if kind in ("bearer", "token"):
        if not value:
            raise AuthenticationError(f"invalid Authorization header: '{scheme[:20]}' without a token")
        return Credential(value, kind)
    if kind == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise AuthenticationError(
                "invalid Authorization header: Basic credentials must be base64 of '<user>:<token>'") from None
        _user, sep, password = decoded.partition(":")
        if not sep or not password:
            raise AuthenticationError(
                "invalid Authorization header: Basic credentials need a conda-store token as the password "
                "(docker login -u <any name> -p <token>)")
        return Credential(password, "basic")
    shown = "".join(c if c.isprintable() else "?" for c in scheme[:20])
    raise AuthenticationError(f"unsupported Authorization scheme {shown!r}: use {SCHEMES}")


def presented(cookie: str | None, authorization: str | None) -> list[Credential | AuthenticationError]:
    """A request's credentials in the order they are tried (cookie, then header); a malformed
    header as its error, to be raised only if no other credential is valid."""
    out: list[Credential | AuthenticationError] = []
    if cookie:
        out.append(Credential(cookie, "cookie"))
    try:
        header = parse_authorization(authorization)
    except AuthenticationError as exc:
        out.append(exc)
    else:
        if header is not None:
            out.append(header)
    return out
