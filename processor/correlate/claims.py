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

from collections import OrderedDict

from processor.model import Session

# Claims remembered at most (oldest forgotten first): far more than the calls
# inside any match window, a few MB.
CLAIMS_LIMIT = 100_000


class Claims:
    """The set of claimed call events, oldest forgotten first past the limit."""

    __slots__ = ("_claimed", "_limit")

    def __init__(self, limit: int = CLAIMS_LIMIT) -> None:
        self._claimed: OrderedDict[tuple[str, int, str], None] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._claimed)

    def claim(self, event: Session) -> None:
        """Mark ``event`` as explained, when it is a ``call`` event."""
        if event.kind != "call":
            return
        self._claimed[_key(event)] = None
        if len(self._claimed) > self._limit:
            self._claimed.popitem(last=False)

    def open(self, events: list[Session]) -> list[Session]:
        """``events`` without the claimed ones."""
        if not self._claimed:
            return events
        return [e for e in events if e.kind != "call" or _key(e) not in self._claimed]


def _key(event: Session) -> tuple[str, int, str]:
    return event.source_ip, event.start_ns, event.user.key
