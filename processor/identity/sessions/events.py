"""Request events, stored compactly: millions of them must fit in a few hundred MB.

A request event is a point in time, so per address it is kept as a start time
in one sorted list and a ``(user, model, trace id, kind)`` tuple in a parallel list. Users and
model names are interned: a user's thousand events share one ``User``. A FIFO of
``(start, address)`` gives the oldest-first eviction order and lets expiry trim
it from the front; events arrive roughly in time order, so both stay cheap.
"""

from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field

from processor.model import Session, SessionKind, User

# Interned users kept at most; past it the table starts over (references held by
# stored events stay valid, new events just stop sharing with old ones).
_USERS_LIMIT = 200_000


@dataclass(slots=True)
class _AddressEvents:
    starts: list[int] = field(default_factory=list)
    # user, model, trace, kind
    entries: list[tuple[User, str, str, SessionKind]] = field(default_factory=list)


class EventIndex:
    """Request events by address, then time."""

    __slots__ = ("_by_ip", "_count", "_order", "_users")

    def __init__(self) -> None:
        self._by_ip: dict[str, _AddressEvents] = {}
        self._order: deque[tuple[int, str]] = deque()
        self._users: dict[User, User] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, session: Session) -> None:
        """Store a request event (its ``start_ns`` is the request time)."""
        ip = session.source_ip
        entry = self._by_ip.get(ip)
        if entry is None:
            ip = sys.intern(ip)
            entry = self._by_ip[ip] = _AddressEvents()
        i = bisect_right(entry.starts, session.start_ns)
        entry.starts.insert(i, session.start_ns)
        trace = session.trace_id or ""
        user, model = self._intern(session.user), sys.intern(session.model)
        entry.entries.insert(i, (user, model, trace, session.kind))
        self._order.append((session.start_ns, ip))
        self._count += 1

    def near(self, ip: str, lo_ns: int, hi_ns: int) -> list[Session]:
        """Events on ``ip`` at times within [lo_ns, hi_ns], oldest first."""
        entry = self._by_ip.get(ip)
        if entry is None:
            return []
        lo = bisect_left(entry.starts, lo_ns)
        hi = bisect_right(entry.starts, hi_ns)
        return [
            Session(ip, user, start, start, model=model, trace_id=trace, kind=kind)
            for start, (user, model, trace, kind) in zip(
                entry.starts[lo:hi], entry.entries[lo:hi], strict=True
            )
        ]

    def has(self, ip: str) -> bool:
        """True when any event is held for ``ip``."""
        return ip in self._by_ip

    def evict_oldest(self) -> bool:
        """Drop the oldest-inserted event still held; False when there is none."""
        while self._order:
            start, ip = self._order.popleft()
            if self._remove(ip, start):
                return True
        return False

    def expire(self, before_ns: int) -> int:
        """Drop every event earlier than ``before_ns``; returns how many."""
        dropped = 0
        for ip in list(self._by_ip):
            entry = self._by_ip[ip]
            cut = bisect_left(entry.starts, before_ns)
            if cut:
                del entry.starts[:cut]
                del entry.entries[:cut]
                dropped += cut
            if not entry.starts:
                del self._by_ip[ip]
        self._count -= dropped
        while self._order and self._order[0][0] < before_ns:
            self._order.popleft()
        if len(self._order) > 2 * self._count + 1024:
            # Out-of-order arrivals can leave expired entries behind the front.
            self._order = deque(sorted((s, ip) for ip, e in self._by_ip.items() for s in e.starts))
        return dropped

    def _remove(self, ip: str, start: int) -> bool:
        entry = self._by_ip.get(ip)
        if entry is None:
            return False
        i = bisect_left(entry.starts, start)
        if i >= len(entry.starts) or entry.starts[i] != start:
            return False
        del entry.starts[i]
        del entry.entries[i]
        if not entry.starts:
            del self._by_ip[ip]
        self._count -= 1
        return True

    def _intern(self, user: User) -> User:
        known = self._users.get(user)
        if known is not None:
            return known
        if len(self._users) >= _USERS_LIMIT:
            self._users.clear()
        self._users[user] = user
        return user
