"""Session intake: validation and storage shared by every session front end."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.identity.intake.validate import to_sessions
from processor.identity.sessions.store import SessionStore
from processor.metrics import Metrics
from processor.model import Session


class SessionIntake:
    """Validates pushed sessions and stores them, all or nothing."""

    def __init__(
        self,
        store: SessionStore,
        metrics: Metrics,
        *,
        default_ttl_s: float,
        clock_ns: Callable[[], int],
        on_stored: Callable[[Session], None] | None = None,
        on_closed: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._ttl = default_ttl_s
        self._clock_ns = clock_ns
        self._on_stored = on_stored
        self._on_closed = on_closed

    @property
    def default_ttl_s(self) -> float:
        """Length of a session pushed with neither end nor TTL."""
        return self._ttl

    def now_ns(self) -> int:
        """The service's clock, for sources that stamp events on receipt."""
        return self._clock_ns()

    def push(self, message: pb.PushSessionsRequest | pb.Session, *, via: str) -> int:
        """Store the sessions in ``message``; raises InvalidInput naming every bad field."""
        sessions = to_sessions(message, now_ns=self._clock_ns(), default_ttl_s=self._ttl)
        return self.store(sessions, via=via)

    def store(self, sessions: Sequence[Session], *, via: str) -> int:
        """Store already-validated sessions and release the held spans they explain."""
        for session in sessions:
            self._store.add(session)
        if self._on_stored is not None:
            for session in sessions:
                self._on_stored(session)
        self._metrics.sessions_pushed.add((via,), len(sessions))
        return len(sessions)

    def close(self, ip: str, user_key: str, at_ns: int) -> int:
        """End a user's open sessions on ``ip`` (sign-out)."""
        closed = self._store.close(ip, user_key, at_ns)
        if self._on_closed is not None:
            self._on_closed(ip, user_key, at_ns)
        return closed
