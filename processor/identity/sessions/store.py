"""Interfaces of the session store, so that a shared (Redis) store can stand in later."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from processor.model import Session, User

# Larger than any Unix-ns timestamp a span can carry (fixed64 max is 2**64 - 1).
NEVER = 2**64


class Match(NamedTuple):
    """Users covering a time, and the first later time at which the answer may change.

    The answer holds for every time in [queried time, ``until_ns``), which lets the
    span path reuse one lookup for a batch of spans close in time.
    """

    users: tuple[User, ...]
    until_ns: int


class SessionLookup(Protocol):
    """Read side used on the span path: must be cheap and must not do I/O."""

    def users_at(self, ip: str, t_ns: int) -> Match:
        """Distinct users whose session on ``ip`` covers ``t_ns``, and until when."""
        ...

    def events_near(self, ip: str, lo_ns: int, hi_ns: int) -> list[Session]:
        """Request events on ``ip`` at times within [lo_ns, hi_ns], oldest first."""
        ...

    def has_events(self, ip: str) -> bool:
        """True when any request event is held for ``ip``."""
        ...

    @property
    def generation(self) -> int:
        """A number that changes whenever anything stored changes."""
        ...

    def stamp(self, ip: str) -> int:
        """A number that changes whenever the long sessions on ``ip`` change, so an
        answer from :meth:`users_at` can be kept until then."""
        ...

    def __len__(self) -> int:
        """Number of sessions and request events held."""
        ...


class SessionStore(SessionLookup, Protocol):
    """Write side used by identity sources and the expiry sweeper."""

    def add(self, session: Session) -> None:
        """Store ``session``, merging it with the same user's overlapping one on that address."""
        ...

    def close(self, ip: str, user_key: str, at_ns: int) -> int:
        """End ``user_key``'s sessions on ``ip`` that are open at ``at_ns``; returns how many."""
        ...

    def expire(self, now_ns: int) -> int:
        """Drop sessions that ended before ``now_ns``; return how many were dropped."""
        ...
