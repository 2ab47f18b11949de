"""One unit of work in one transaction, re-run when it lost a race for a unique row.

Get-or-create (a new namespace, specification or environment) reads, finds nothing and inserts.
Two requests doing that at once both insert, and the database refuses the second with an
IntegrityError: the UI and the on-demand registry do exactly this. The loser's transaction is
rolled back and the whole unit of work is run again; the second run *reads* the row the winner
committed, so the request succeeds (or, for a create that must not exist yet, answers 409 like a
sequential duplicate would). A unit of work must therefore only touch the database.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, TypeVar

from sqlalchemy.exc import IntegrityError
from ..exceptions import ConflictError

if TYPE_CHECKING:
    from ..app import CondaStore

log = logging.getLogger(__name__)

R = TypeVar("R")

ATTEMPTS = 3
"""Runs of a unit of work before a repeated IntegrityError is reported as a 409. One re-run is
enough for a lost insert race (the winner's row is committed by then); the third covers a unit
that creates two rows and loses both races to different requests."""


def in_transaction(store: "CondaStore", fn: Callable[..., R], *args: object) -> R:
    """``fn(db, *args)`` in one committed transaction, re-run after a unique-constraint race."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with store.session() as db:
                return fn(db, *args)
        except IntegrityError as exc:
            if attempt == ATTEMPTS:
                log.warning("giving up after %d conflicting attempts: %s", attempt, exc.orig)
                raise ConflictError(
                    "the request conflicted with concurrent changes to the same rows; try again") from None
            log.debug("attempt %d lost a race (%s); running it again", attempt, exc.orig)
    raise AssertionError("unreachable")  # pragma: no cover

