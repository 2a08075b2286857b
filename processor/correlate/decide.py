"""Timing and directory decisions for many spans at once, by distinct key (pure).

The spans of a request, or the spans leaving the hold together, come as
columns: address, start time, model (and principals where the directory has
some). Work is done per distinct address and time range, not per span: one
long-session lookup answers every span at an address whose sessions provably
give the same answer over the spans' times, and request events at an address
are read once for all of its spans (``Resolver.resolve_at``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from processor.correlate.resolve import Memo, Resolver, SpanFacts
from processor.identity.directory import Directory
from processor.identity.sessions.store import SessionLookup
from processor.model import Attribution

Principals = tuple[tuple[str, str], ...]
_MISS: Any = object()
_EVENTS: Any = object()  # request events at the address: decided with them
_KNOWN_LIMIT = 65_536  # addresses whose answer is kept across batches


class Decision:
    """Decisions for one set of spans: per span, or per address when every span was
    decided by its address alone (``by_ip``)."""

    __slots__ = ("by_ip", "decisions", "no_address")

    def __init__(
        self,
        decisions: list[Attribution | None],
        by_ip: dict[str | None, Attribution | None] | None,
        no_address: int,
    ) -> None:
        self.decisions = decisions
        self.by_ip = by_ip
        self.no_address = no_address


class Decider:
    """Decides spans by request events, long sessions and the directory."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        # ip -> (sessions stamp, valid from, valid until, decision, store generation):
        # answers kept across batches until the address's sessions change.
        self._known: dict[str, tuple[int, int, int, Attribution | None, int]] = {}
        self._known_for: Directory | None = None  # the directory they were made with

    def _address_answer(
        self,
        ip: str,
        first: int,
        last: int,
        sessions: SessionLookup,
        directory: Directory,
        memo: Memo,
    ) -> Attribution | Any | None:
        """The one long-session answer for spans at ``ip`` from ``first`` to ``last``
        (no request events there), ``_MISS`` when the sessions there change in
        between, or ``_EVENTS`` when request events at ``ip`` must decide."""
        if directory is not self._known_for:
            self._known.clear()
            self._known_for = directory
        generation = sessions.generation
        hit = self._known.get(ip)
        if hit is not None and hit[1] <= first and last < hit[2]:
            if hit[4] == generation:  # nothing stored changed since
                return hit[3]
            if not sessions.has_events(ip) and hit[0] == sessions.stamp(ip):
                self._known[ip] = (*hit[:4], generation)
                return hit[3]
        if sessions.has_events(ip):
            return _EVENTS
        stamp = sessions.stamp(ip)
        a = self._resolver.by_address(ip, first, sessions, directory, memo)
        until = memo[ip][1]
        if last >= until:
            return _MISS
        if len(self._known) >= _KNOWN_LIMIT:
            self._known.clear()
        self._known[ip] = (stamp, first, until, a, generation)
        return a

    def decide(
        self,
        ips: list[str | None],
        starts: list[int],
        models: Callable[[], list[str]],
        decisions: list[Attribution | None],
        pending: list[int] | None,
        sessions: SessionLookup,
        directory: Directory,
        principals: Sequence[Principals] | None = None,
        per_ip: Counter[str | None] | None = None,
    ) -> Decision:
        """Fill ``decisions`` for the spans of ``pending`` (None: every span).

        ``models`` is called only when request events need the spans' models.
        With ``principals``, spans that carry some are decided one by one (the
        directory's principals come before its addresses).
        """
        n = len(ips)
        resolver = self._resolver
        no_address = 0
        if principals is not None and any(principals):
            every = range(n) if pending is None else pending
            mine = [i for i in every if principals[i]]
            pending = [i for i in every if not principals[i]]
            if mine:
                given = models()
                for i in mine:
                    facts = SpanFacts(ips[i], starts[i], given[i], principals[i])
                    decisions[i] = resolver.resolve(facts, sessions, directory)
        by_ip: dict[str | None, Attribution | None] | None = None
        if pending is None:
            counts = per_ip if per_ip is not None else Counter(ips)
            pending, by_ip = self._by_batch(ips, counts, starts, decisions, sessions, directory)
        spans_models: list[str] | None = None
        for ip, group in _groups(ips, pending, n):
            if ip is not None and self._by_address(
                ip, group, starts, decisions, sessions, directory
            ):
                continue
            if spans_models is None:
                spans_models = models()
            if ip is not None:  # request events at ip
                found = resolver.resolve_at(
                    ip,
                    [starts[i] for i in group],
                    [spans_models[i] for i in group],
                    sessions,
                    directory,
                )
                for i, a in zip(group, found, strict=True):
                    decisions[i] = a
                continue
            for i in group:
                a = decisions[i] = resolver.resolve(
                    SpanFacts(None, starts[i], spans_models[i]), sessions, directory
                )
                if a is None:
                    no_address += 1
        return Decision(decisions, by_ip, no_address)

    def _by_batch(
        self,
        ips: list[str | None],
        distinct: Counter[str | None],
        starts: list[int],
        decisions: list[Attribution | None],
        sessions: SessionLookup,
        directory: Directory,
    ) -> tuple[list[int] | None, dict[str | None, Attribution | None] | None]:
        """Decide every span at an address whose long-session answer holds from the
        batch's first start to its last.

        Returns the spans left (None: all), and the decision per address when none
        is left.
        """
        first, last = min(starts), max(starts)
        decided: dict[str | None, Attribution | None] = {}
        memo: Memo = {}
        answer = self._address_answer
        for ip in distinct:
            if ip is None:
                continue
            a = answer(ip, first, last, sessions, directory, memo)
            if a is not _MISS and a is not _EVENTS:
                decided[ip] = a
        if not decided:
            return None, None
        if len(decided) == len(distinct):
            # Every address was decided: the caller keys its bookkeeping by address,
            # so ``decisions`` is not filled in.
            return [], decided
        found = list(map(decided.get, ips, repeat(_MISS, len(ips))))
        decisions[:] = [None if a is _MISS else a for a in found]
        return [i for i, a in enumerate(found) if a is _MISS], None

    def _by_address(
        self,
        ip: str,
        group: range | list[int],
        starts: list[int],
        decisions: list[Attribution | None],
        sessions: SessionLookup,
        directory: Directory,
    ) -> bool:
        """Decide the spans of ``group`` (all at ``ip``) by long sessions and the
        directory; False when request events at ``ip`` need the per-span path.

        One lookup at the earliest start answers the whole group when the
        sessions on ``ip`` provably give the same answer until after the latest.
        """
        if sessions.has_events(ip):
            return False
        by_address = self._resolver.by_address
        memo: Memo = {}
        if isinstance(group, range):
            first, last = min(starts), max(starts)
        else:
            times = [starts[i] for i in group]
            first, last = min(times), max(times)
        a = self._address_answer(ip, first, last, sessions, directory, memo)
        if a is not _MISS:
            if isinstance(group, range):
                decisions[:] = [a] * len(group)
            else:
                for i in group:
                    decisions[i] = a
            return True
        for i in group:
            decisions[i] = by_address(ip, starts[i], sessions, directory, memo)
        return True


def _groups(
    ips: list[str | None], pending: list[int] | None, n: int
) -> list[tuple[str | None, range | list[int]]]:
    """The spans to decide (``pending``, or all ``n``), grouped by address."""
    if pending is None and n and ips.count(ips[0]) == n:
        return [(ips[0], range(n))]
    groups: dict[str | None, list[int]] = {}
    for i in range(n) if pending is None else pending:
        group = groups.get(ips[i])
        if group is None:
            groups[ips[i]] = [i]
        else:
            group.append(i)
    return list(groups.items())
