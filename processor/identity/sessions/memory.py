"""Embedded in-memory session store, indexed by address then start time."""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from itertools import count

from processor.identity.sessions.events import EventIndex
from processor.identity.sessions.store import NEVER, Match
from processor.model import EVENT_KINDS, Session, User

_NOBODY = Match((), NEVER)
_CHANGES = count(1)  # one clock for every store: a stamp is never reused


@dataclass(slots=True)
class _AddressSessions:
    """Sessions of one address; ``starts`` is sorted and parallel to ``seqs``."""

    starts: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    # Longest session ever stored here: bounds how far back a lookup scans.
    max_span_ns: int = 0
    # The last answer (valid from, valid until, answer), until the sessions change:
    # a busy address is looked up once, not once per span or per batch.
    answer: tuple[int, int, Match] | None = None
    # When the sessions here last changed (see MemorySessionStore.stamp).
    changed: int = 0

    def insert(self, start_ns: int, seq: int) -> None:
        self.answer = None
        self.changed = next(_CHANGES)
        i = bisect_right(self.starts, start_ns)
        self.starts.insert(i, start_ns)
        self.seqs.insert(i, seq)

    def remove(self, start_ns: int, seq: int) -> None:
        self.answer = None
        self.changed = next(_CHANGES)
        i = bisect_left(self.starts, start_ns)
        while self.seqs[i] != seq:
            i += 1
        del self.starts[i]
        del self.seqs[i]


class MemorySessionStore:
    """Bounded store: past ``max_sessions`` the oldest-inserted entry is evicted.

    Long sessions and request events are indexed separately per address, each by
    start time. Lookups bisect and scan back at most the longest session length,
    so their cost depends on how many sessions overlap, not on the store's size.
    """

    def __init__(self, max_sessions: int) -> None:
        self._max = max_sessions
        self._by_seq: dict[int, Session] = {}
        self._by_ip: dict[str, _AddressSessions] = {}
        self._events = EventIndex()
        self._ends: list[tuple[int, int]] = []  # lazy heap of (end_ns, seq)
        self._seq = count()
        self.evicted = 0
        # Changes with every add, close, expiry or eviction of anything stored: an
        # answer kept at one generation still holds at the same generation.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._by_seq) + len(self._events)

    def add(self, session: Session) -> None:
        """Store ``session``; a push that overlaps the same user's session extends it."""
        self.generation += 1
        if session.kind in EVENT_KINDS:
            self._events.add(session)
            self._evict()
            return
        entry = self._by_ip.setdefault(session.source_ip, _AddressSessions())
        for seq in self._same_user_overlapping(entry, session):
            old = self._pop(seq)
            session = replace(
                session,
                start_ns=min(old.start_ns, session.start_ns),
                end_ns=max(old.end_ns, session.end_ns),
                model=session.model or old.model,
                trace_id=session.trace_id or old.trace_id,
            )
            entry = self._by_ip.setdefault(session.source_ip, _AddressSessions())
        self._put(entry, session)
        self._evict()

    def close(self, ip: str, user_key: str, at_ns: int) -> int:
        """End ``user_key``'s sessions on ``ip`` that are open at ``at_ns``; returns how many."""
        self.generation += 1
        entry = self._by_ip.get(ip)
        if entry is None:
            return 0
        open_now = [
            seq
            for seq in self._started_in(entry, at_ns - entry.max_span_ns, at_ns)
            if self._by_seq[seq].user.key == user_key and self._by_seq[seq].end_ns > at_ns
        ]
        for seq in open_now:
            session = self._pop(seq)
            self._put(
                self._by_ip.setdefault(ip, _AddressSessions()), replace(session, end_ns=at_ns)
            )
        return len(open_now)

    def events_near(self, ip: str, lo_ns: int, hi_ns: int) -> list[Session]:
        """Request events on ``ip`` at times within [lo_ns, hi_ns], oldest first."""
        return self._events.near(ip, lo_ns, hi_ns)

    def has_events(self, ip: str) -> bool:
        """True when any request event is held for ``ip``."""
        return self._events.has(ip)

    def stamp(self, ip: str) -> int:
        """A number that changes whenever the long sessions on ``ip`` change (0: none)."""
        entry = self._by_ip.get(ip)
        return entry.changed if entry is not None else 0

    def users_at(self, ip: str, t_ns: int) -> Match:
        """Distinct users whose session on ``ip`` covers ``t_ns``, and until when that holds."""
        entry = self._by_ip.get(ip)
        if entry is None:
            return _NOBODY
        answer = entry.answer
        if answer is not None and answer[0] <= t_ns < answer[1]:
            return answer[2]
        found: tuple[User, ...] = ()
        after = bisect_right(entry.starts, t_ns)
        until = entry.starts[after] if after < len(entry.starts) else NEVER
        for seq in entry.seqs[bisect_left(entry.starts, t_ns - entry.max_span_ns) : after]:
            s = self._by_seq[seq]
            if s.end_ns >= t_ns:
                until = min(until, s.end_ns + 1)
                if all(u.key != s.user.key for u in found):
                    found += (s.user,)
        match = Match(found, until)
        entry.answer = (t_ns, until, match)
        return match

    def expire(self, now_ns: int) -> int:
        """Drop every session and event whose end is before ``now_ns``."""
        dropped = self._events.expire(now_ns)
        while self._ends and self._ends[0][0] < now_ns:
            end_ns, seq = heapq.heappop(self._ends)
            current = self._by_seq.get(seq)
            if current is not None and current.end_ns == end_ns:
                self._pop(seq)
                dropped += 1
        if dropped:
            self.generation += 1
        return dropped

    def _started_in(self, entry: _AddressSessions, lo_ns: int, hi_ns: int) -> list[int]:
        """Sequence numbers of sessions on ``entry`` that start within [lo, hi]."""
        return entry.seqs[bisect_left(entry.starts, lo_ns) : bisect_right(entry.starts, hi_ns)]

    def _same_user_overlapping(self, entry: _AddressSessions, new: Session) -> list[int]:
        seqs = self._started_in(entry, new.start_ns - entry.max_span_ns, new.end_ns)
        return [
            seq
            for seq in seqs
            if self._by_seq[seq].user.key == new.user.key
            and self._by_seq[seq].end_ns >= new.start_ns
        ]

    def _put(self, entry: _AddressSessions, session: Session) -> None:
        seq = next(self._seq)
        self._by_seq[seq] = session
        entry.insert(session.start_ns, seq)
        entry.max_span_ns = max(entry.max_span_ns, session.end_ns - session.start_ns)
        heapq.heappush(self._ends, (session.end_ns, seq))
        if len(self._ends) > 2 * len(self._by_seq) + 1024:
            # Merged and evicted sessions leave stale heap entries; rebuild
            # so the heap stays proportional to the live sessions.
            self._ends = [(s.end_ns, q) for q, s in self._by_seq.items()]
            heapq.heapify(self._ends)

    def _evict(self) -> None:
        """Past the bound, drop request events first (oldest first), then sessions."""
        while len(self) > self._max:
            if not self._events.evict_oldest():
                self._pop(next(iter(self._by_seq)))
            self.evicted += 1

    def _pop(self, seq: int) -> Session:
        session = self._by_seq.pop(seq)
        entry = self._by_ip[session.source_ip]
        entry.remove(session.start_ns, seq)
        if not entry.seqs:
            del self._by_ip[session.source_ip]
        return session
