"""Identity value objects shared by every layer: who a user is and where they were."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# "session": a stretch of time; "request": a point in time that may explain several
# model calls (a chat message); "call": a point in time that explains exactly one.
SessionKind = Literal["session", "request", "call"]
EVENT_KINDS: frozenset[str] = frozenset({"request", "call"})


@dataclass(frozen=True, slots=True)
class User:
    """A person as identity sources describe them; ``id`` or ``email`` is always set."""

    id: str = ""
    email: str = ""
    name: str = ""
    roles: tuple[str, ...] = ()
    team: str = ""

    @property
    def key(self) -> str:
        """Stable identity used to tell two users apart (id first, else email)."""
        return self.id or self.email


@dataclass(frozen=True, slots=True)
class Session:
    """User ``user`` was at ``source_ip`` from ``start_ns`` until ``end_ns`` (Unix ns).

    A ``request`` session is a point event: the user sent one request through
    ``source_ip`` at ``start_ns`` (``end_ns`` equals it), optionally naming the model.
    """

    source_ip: str
    user: User
    start_ns: int
    end_ns: int
    model: str = ""
    trace_id: str = ""
    kind: SessionKind = "session"

    def covers(self, t_ns: int) -> bool:
        """True when ``t_ns`` falls inside the session, both ends included."""
        return self.start_ns <= t_ns <= self.end_ns


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a span belongs to and how we know; ``user`` is None when nobody was attached."""

    user: User | None
    method: str  # span | trace | session | directory
    confidence: str  # exact | high | ambiguous
    candidate_count: int = 0  # when ambiguous: how many users matched
    candidates: tuple[User, ...] = ()  # listed only under the "candidates" policy
    # With a learned lag: how many times likelier the best user was than the
    # next or a lost event (capped); 0 when window membership decided.
    margin: int = 0


_NONE = id(None)


def unset(items: Sequence[object]) -> int:
    """How many of ``items`` are None, by identity: ``list.count(None)`` would call the
    generated ``__eq__`` of every dataclass above, in Python, for each other item."""
    return list(map(id, items)).count(_NONE)
