"""Call events a span has already claimed (pure, bounded).

A ``call`` event (Open WebUI's filter ``request`` hook) is sent right before one
model call, so it explains exactly one gateway span. Once the likelihood rule has
named a span's user through such an event, the event stops competing for the
spans that come after it: another user's span whose own event was lost, or a
later call of a busy address, can no longer be explained by it. ``request``
events (a chat message, which may cause several calls) are never claimed.

Claims live on this replica only: replicas sharing sessions through Redis each
claim for the spans they decide, which only leaves a shared event competing a
little longer, never makes a span take one it would not have taken.
"""

from __future__ import annotations

from collections import deque

from processor.model import Session

# Claims remembered at most (oldest forgotten first): far more than the calls
# inside any match window, a few MB.
CLAIMS_LIMIT = 100_000


class Claims:
    """The set of claimed call events, oldest forgotten first past the limit.

    Kept by address and start time, so that checking a span's candidates costs an
    integer lookup per event; the user is compared only when a start time matches.
    """

    __slots__ = ("_by_ip", "_limit", "_order")

    def __init__(self, limit: int = CLAIMS_LIMIT) -> None:
        self._by_ip: dict[str, dict[int, set[str]]] = {}
        self._order: deque[tuple[str, int, str]] = deque()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._order)

    def claim(self, event: Session) -> None:
        """Mark ``event`` as explained, when it is a ``call`` event."""
        if event.kind != "call":
            return
        users = self._by_ip.setdefault(event.source_ip, {}).setdefault(event.start_ns, set())
        if event.user.key in users:
            return
        users.add(event.user.key)
        self._order.append((event.source_ip, event.start_ns, event.user.key))
        if len(self._order) > self._limit:
            self._forget(*self._order.popleft())

    def open(self, events: list[Session]) -> list[Session]:
        """``events`` (all at one address, as a span's candidates are) without the claimed."""
        if not events:
            return events
        starts = self._by_ip.get(events[0].source_ip)
        if not starts:
            return events
        return [
            e
            for e in events
            if e.start_ns not in starts or e.kind != "call" or e.user.key not in starts[e.start_ns]
        ]

    def _forget(self, ip: str, start_ns: int, user_key: str) -> None:
        starts = self._by_ip[ip]
        users = starts[start_ns]
        users.discard(user_key)
        if not users:
            del starts[start_ns]
            if not starts:
                del self._by_ip[ip]
