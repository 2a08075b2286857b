"""Turning users into metric labels without letting label cardinality run away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from processor.correlate.identity import EmailHasher
from processor.model import User
from processor.wire.memo import Computed

UNKNOWN = "unknown"  # spans nobody could be attributed to
OTHER = "other"  # users past the cap
NO_TEAM = "none"
NO_ID = "no-id"  # user_label id, for a user known only by email and no hash key
_HASHED_LIMIT = 65_536
LabelMode = Literal["email", "id", "hash"]


class UserLabels:
    """Gives the first ``max_users`` distinct users their own label, the rest ``other``.

    ``mode`` is ``usage.user_label``: ``email`` (the email, else the id), ``id``
    (the id; a user without one gets the email's hash, or ``no-id`` without a
    ``hasher``) or ``hash`` (the email's keyed hash, else the id). An email never
    becomes a label in ``id`` or ``hash`` mode, nor in ``email`` mode when
    ``hide_emails`` (identity.hash_emails keeps emails out of everything).
    """

    def __init__(
        self,
        max_users: int,
        *,
        mode: LabelMode = "email",
        hasher: EmailHasher | None = None,
        hide_emails: bool = False,
        team_of: Callable[[User], str] | None = None,
    ) -> None:
        self._max = max_users
        self._mode: LabelMode = "hash" if mode == "email" and hide_emails else mode
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
        if self._mode == "email":
            return user.email or user.id
        if self._mode == "id" and user.id:
            return user.id
        if self._hashed is not None and user.email:
            return self._hashed[user.email]
        return user.id or NO_ID
