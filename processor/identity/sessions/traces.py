"""Trace identities: which user a trace belongs to, learned from any of its spans."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from processor.model import User


class TraceIdentities:
    """Bounded map trace id -> user, oldest first out, entries expiring after a TTL.

    Reads are plain dict look-ups (they run once per span); expiry happens in
    :meth:`expire`, called by the sweeper. A TTL cache that checks its timer on
    every read costs twenty times as much per span.
    """

    __slots__ = ("_entries", "_expiries", "_max", "_ttl_ns", "_view")

    def __init__(self, ttl_ns: int, max_traces: int) -> None:
        self._ttl_ns = ttl_ns
        self._max = max_traces
        self._entries: dict[bytes, User] = {}
        self._view = MappingProxyType(self._entries)
        # Every entry has the same TTL and is never re-inserted, so insertion
        # order is expiry order.
        self._expiries: deque[tuple[int, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> Mapping[bytes, User]:
        """Read-only live view for the span walk, which reads it once per span."""
        return self._view

    def get(self, trace_id: bytes) -> User | None:
        """The user of ``trace_id``, if known."""
        return self._entries.get(trace_id)

    def put(self, trace_id: bytes, user: User, now_ns: int) -> bool:
        """Remember ``user`` for ``trace_id``; True when the trace was not known before.

        The first identity learned for a trace wins: a later, different one does
        not replace it (spans of one trace belong to one request).
        """
        if trace_id in self._entries:
            return False
        self._entries[trace_id] = user
        self._expiries.append((now_ns + self._ttl_ns, trace_id))
        if len(self._expiries) > self._max:
            del self._entries[self._expiries.popleft()[1]]
        return True

    def learn(
        self, trace_ids: Sequence[bytes], users: Sequence[User | None], now_ns: int
    ) -> list[bytes]:
        """:meth:`put` for each span's (trace id, user) where both are set; returns the
        traces newly known, in span order."""
        entries, expiries, most = self._entries, self._expiries, self._max
        expires = now_ns + self._ttl_ns
        learned: list[bytes] = []
        for trace_id, user in zip(trace_ids, users, strict=True):
            if user is None or not trace_id or trace_id in entries:
                continue
            entries[trace_id] = user
            expiries.append((expires, trace_id))
            learned.append(trace_id)
            if len(expiries) > most:  # as put() does, one at a time
                del entries[expiries.popleft()[1]]
        return learned

    def expire(self, now_ns: int) -> int:
        """Forget traces whose TTL ran out; returns how many."""
        dropped = 0
        while self._expiries and self._expiries[0][0] < now_ns:
            del self._entries[self._expiries.popleft()[1]]
            dropped += 1
        return dropped
