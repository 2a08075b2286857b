"""Trace identities: which user a trace belongs to, learned from any of its spans."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from itertools import chain, compress, islice, repeat
from operator import is_not
from types import MappingProxyType
from typing import cast

from processor.model import User


class TraceIdentities:
    """Bounded map trace id -> user, oldest first out, entries expiring after a TTL.

    Reads are plain dict look-ups (they run once per span); expiry happens in
    :meth:`expire`, called by the sweeper. A TTL cache that checks its timer on
    every read costs twenty times as much per span. Expiries are kept per batch
    learned, so a busy gateway's traces (a new one per span) come and go a
    batch at a time, in C.
    """

    __slots__ = ("_entries", "_expiries", "_max", "_ttl_ns", "_view")

    def __init__(self, ttl_ns: int, max_traces: int) -> None:
        self._ttl_ns = ttl_ns
        self._max = max_traces
        self._entries: dict[bytes, User] = {}
        self._view = MappingProxyType(self._entries)
        # (expiry, trace ids learned together), oldest first. Every entry has the
        # same TTL and is never re-inserted, so insertion order is expiry order,
        # and every entry is listed exactly once.
        self._expiries: deque[tuple[int, list[bytes]]] = deque()

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
        self._expiries.append((now_ns + self._ttl_ns, [trace_id]))
        self._bound()
        return True

    def learn(
        self, trace_ids: Sequence[bytes], users: Sequence[User | None], now_ns: int
    ) -> dict[bytes, User]:
        """:meth:`put` for each span's (trace id, user) where both are set; returns the
        traces newly known (each once), in span order, with their users."""
        named = list(map(is_not, users, repeat(None)))
        if not all(named):  # some spans name no one
            trace_ids, users = list(compress(trace_ids, named)), list(compress(users, named))
        someone = cast("Sequence[User]", users)  # every span left names a user
        new = cast("dict[bytes, User]", dict.fromkeys(trace_ids))  # in span order
        # The first user named for a trace wins.
        new.update(zip(reversed(trace_ids), reversed(someone), strict=True))
        new.pop(b"", None)
        entries = self._entries
        known = entries.keys() & new.keys()  # spans of traces learned before
        for trace_id in known:
            del new[trace_id]
        if self._evicts_own(new, known):  # one at a time, as put() would
            put = self.put
            return {
                t: u for t, u in zip(trace_ids, someone, strict=True) if t and put(t, u, now_ns)
            }
        if new:
            entries.update(new)
            self._expiries.append((now_ns + self._ttl_ns, list(new)))
            self._bound()
        return new

    def _evicts_own(self, new: dict[bytes, User], known: set[bytes]) -> bool:
        """Whether learning ``new`` pushes out a trace the same batch names again:
        more new traces than the bound, or a known one among the oldest to go."""
        excess = len(self._entries) + len(new) - self._max
        if len(new) > self._max:
            return True
        if not known or excess <= 0:
            return False
        listed = chain.from_iterable(ids for _, ids in self._expiries)
        return not known.isdisjoint(islice(listed, excess))

    def expire(self, now_ns: int) -> int:
        """Forget traces whose TTL ran out; returns how many."""
        before = len(self._entries)
        expiries = self._expiries
        while expiries and expiries[0][0] < now_ns:
            self._forget(expiries.popleft()[1])
        return before - len(self._entries)

    def _bound(self) -> None:
        """Forget the oldest traces past the bound, as if they had come one at a time."""
        expiries = self._expiries
        while (excess := len(self._entries) - self._max) > 0:
            oldest = expiries[0][1]
            if len(oldest) <= excess:
                expiries.popleft()
                self._forget(oldest)
            else:
                self._forget(oldest[:excess])
                del oldest[:excess]

    def _forget(self, trace_ids: list[bytes]) -> None:
        deque(map(self._entries.__delitem__, trace_ids), maxlen=0)  # in C
