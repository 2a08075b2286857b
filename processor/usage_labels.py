"""Turning users into metric labels without letting label cardinality run away."""

from __future__ import annotations

from collections.abc import Callable

from processor.correlate.identity import EmailHasher
from processor.correlate.memo import Computed
from processor.model import User

UNKNOWN = "unknown"  # spans nobody could be attributed to
OTHER = "other"  # users past the cap
NO_TEAM = "none"
_HASHED_LIMIT = 65_536


class UserLabels:
    """Gives the first ``max_users`` distinct users their own label, the rest ``other``.

    With ``hasher`` (identity.hash_emails) the label is the email's hash, or the id,
    so no address reaches the metrics either.
    """

    def __init__(
        self,
        max_users: int,
        *,
        hasher: EmailHasher | None = None,
        team_of: Callable[[User], str] | None = None,
    ) -> None:
        self._max = max_users
        self._team_of = team_of or (lambda user: user.team)
        self._known: dict[str, str] = {}
        # email -> its keyed hash (one HMAC per user)
        self._hashed = Computed(hasher, _HASHED_LIMIT) if hasher is not None else None

    def __call__(self, user: User | None) -> tuple[str, str]:
        """(user label, team label) for ``user``."""
        if user is None:
            return UNKNOWN, NO_TEAM
        label = self._label(user)
        team = self._team_of(user) or NO_TEAM
        known = self._known.get(label)
        if known is not None:
            return known, team
        if len(self._known) >= self._max:
            return OTHER, team
        self._known[label] = label
        return label, team

    def _label(self, user: User) -> str:
        if self._hashed is not None:
            return self._hashed[user.email] if user.email else user.id
        return user.email or user.id
