"""The timing and directory links of the attribution chain (pure).

Given what a span says about itself (source address, start time, model,
principals), decide who sent it from request events, long sessions and the
static directory. The span and trace links come before this and need no state
beyond a trace map, so they live with the span walk in ``correlator``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from processor.correlate.lag import LagLearner, Window
from processor.directory import Directory
from processor.model import Attribution, Session, User
from processor.sessions.store import SessionLookup

AmbiguityPolicy = Literal["skip", "nearest", "candidates"]
# Spans of one batch and address that train the lag learner at most (evenly spread).
_LEARN_PER_BATCH = 32
# Per-batch memo of long-session decisions: ip -> (valid from, valid until, decision).
Memo = dict[str, tuple[int, int, "Attribution | None"]]

SESSION = "session"
DIRECTORY = "directory"
EXACT = "exact"
HIGH = "high"
AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """What a span tells about its origin; all the resolver looks at."""

    ip: str | None
    start_ns: int
    model: str = ""
    principals: tuple[tuple[str, str], ...] = ()


def same_model(event_model: str, span_model: str) -> bool:
    """Whether an event's model and a span's model name the same model.

    Open WebUI may prefix ids with a connection name ("openai/gpt-4o") where the
    gateway reports "gpt-4o"; case is not significant.
    """
    a, b = event_model.lower(), span_model.lower()
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


class Resolver:
    """Session and directory links, with the ambiguity policy; built once from config."""

    def __init__(
        self,
        *,
        window_ns: int,
        skew_ns: int,
        policy: AmbiguityPolicy,
        lags: LagLearner | None = None,
    ) -> None:
        self._window_ns = window_ns
        self._skew_ns = skew_ns
        self._policy = policy
        # Learns each address's real lag from spans with events in the configured
        # window; until it is confident the configured window decides.
        self.lags = lags

    def _window(self, ip: str, t_ns: int) -> Window | None:
        """The learned window at ``ip``, or None where the configured one applies."""
        if self.lags is None:
            return None
        window = self.lags.window(ip, t_ns)
        return window if window.learned else None

    def resolve(
        self, facts: SpanFacts, sessions: SessionLookup, directory: Directory
    ) -> Attribution | None:
        """Who sent the span, by events, then long sessions, then the directory."""
        if facts.ip is not None:
            found = self._by_events(facts, sessions) or self._by_sessions(facts, sessions)
            if found is not None:
                return found
        return self._by_directory(facts, directory)

    def by_address(
        self, ip: str, t_ns: int, sessions: SessionLookup, directory: Directory, memo: Memo
    ) -> Attribution | None:
        """:meth:`resolve` for a span at ``ip`` with no events there and no principals.

        Long sessions and directory addresses do not depend on the model, so the
        decision is shared by every span of the batch at ``ip`` whose start lies in
        the range where the sessions on ``ip`` provably give the same answer.
        """
        hit = memo.get(ip)
        if hit is not None and hit[0] <= t_ns < hit[1]:
            return hit[2]
        match = sessions.users_at(ip, t_ns)
        decision = self._decide(match.users)
        if decision is None:
            user = directory.by_address(ip)
            decision = Attribution(user, DIRECTORY, HIGH) if user is not None else None
        memo[ip] = (t_ns, match.until_ns, decision)
        return decision

    def resolve_at(
        self,
        ip: str,
        times: Sequence[int],
        models: Sequence[str],
        sessions: SessionLookup,
        directory: Directory,
    ) -> list[Attribution | None]:
        """:meth:`resolve` for many spans at ``ip`` (no principals), sharing the work.

        The events near the whole batch are read once; a span's candidates are a
        slice of them. Spans whose candidates name a single user (or none, which
        leaves long sessions and the directory) share one decision per slice and
        model. Only spans between several users are decided one by one, since
        the order of their candidates depends on each span's time.
        """
        if not times:
            return []
        window, skew = self._window_ns, self._skew_ns
        events = sessions.events_near(ip, min(times) - window, max(times) + skew)
        at = [e.start_ns for e in events]
        # Each span's candidates: the events in the learned window, else (none
        # there, or nothing learned) those in the configured window.
        narrow: tuple[int, int] | None = None
        if self.lags is not None:
            self._learn_at(ip, times, at)
            learned = self._window(ip, max(times))
            if learned is not None:
                narrow = learned.hi_ns, -learned.lo_ns
        shared: dict[tuple[int, int, str], Attribution | _Open | None] = {}
        memo: Memo = {}
        out: list[Attribution | None] = []
        for t, model in zip(times, models, strict=True):
            key = (bisect_left(at, t - window), bisect_right(at, t + skew), model)
            if narrow is not None:
                lo, hi = bisect_left(at, t - narrow[0]), bisect_right(at, t + narrow[1])
                if lo < hi:
                    key = (lo, hi, model)
            decision = shared.get(key, _UNSEEN)
            if decision is _UNSEEN:
                decision = shared[key] = self._shared(events[key[0] : key[1]], model)
            if decision is _NO_EVENT:
                hit = memo.get(ip)
                if hit is not None and hit[0] <= t < hit[1]:
                    out.append(hit[2])
                else:
                    out.append(self.by_address(ip, t, sessions, directory, memo))
            elif decision is _PER_SPAN:
                facts = SpanFacts(ip, t, model)
                found = self._by_events(facts, sessions, learn=False)
                if found is None:
                    found = self._by_sessions(facts, sessions) or self._by_directory(
                        facts, directory
                    )
                out.append(found)
            else:
                out.append(decision)  # type: ignore[arg-type]
        return out

    def _shared(self, events: list[Session], model: str) -> Attribution | _Open:
        """The decision every span with these candidate events shares, if any."""
        if model:
            events = [e for e in events if not e.model or same_model(e.model, model)]
        users = _distinct(e.user for e in events)
        if not users:
            return _NO_EVENT
        if len(users) > 1:
            return _PER_SPAN
        return Attribution(users[0], SESSION, HIGH)

    def _event_candidates(
        self, facts: SpanFacts, sessions: SessionLookup, *, learn: bool = True
    ) -> list[Session]:
        """Request events the span may answer, nearest first, after model narrowing.

        A span starting at S answers an event at T when T - skew <= S <= T + window
        (the configured window), or, once the address's lag is learned, when S - T
        lies in the learned window. Events naming a different model than the span
        are ruled out; events without a model stay in. With ``learn`` the span's
        offsets to the events in the configured window train the learner.
        """
        ip = facts.ip
        assert ip is not None
        start = facts.start_ns
        events = sessions.events_near(ip, start - self._window_ns, start + self._skew_ns)
        if facts.model:
            events = [e for e in events if not e.model or same_model(e.model, facts.model)]
        if self.lags is not None:
            if learn:
                self.lags.observe(ip, start, [e.start_ns for e in events])
            learned = self._window(ip, start)
            if learned is not None:
                # No event in the learned window: the configured one decides, as
                # before anything was learned (the true event may lie in a tail).
                inside = [e for e in events if learned.covers(start - e.start_ns)]
                events = inside or events
        events.sort(key=lambda e: abs(start - e.start_ns))
        return events

    def _by_events(
        self, facts: SpanFacts, sessions: SessionLookup, *, learn: bool = True
    ) -> Attribution | None:
        assert facts.ip is not None
        if not sessions.has_events(facts.ip):
            return None
        users = _distinct(e.user for e in self._event_candidates(facts, sessions, learn=learn))
        return self._decide(users)

    def _learn_at(self, ip: str, times: Sequence[int], at: Sequence[int]) -> None:
        """Train the learner with a batch's spans at ``ip`` (at most _LEARN_PER_BATCH)."""
        assert self.lags is not None
        window, skew = self._window_ns, self._skew_ns
        step = max(1, len(times) // _LEARN_PER_BATCH)
        for t in times[::step]:
            self.lags.observe(ip, t, at[bisect_left(at, t - window) : bisect_right(at, t + skew)])

    def _by_sessions(self, facts: SpanFacts, sessions: SessionLookup) -> Attribution | None:
        assert facts.ip is not None
        return self._decide(sessions.users_at(facts.ip, facts.start_ns).users)

    def _decide(self, users: tuple[User, ...]) -> Attribution | None:
        if not users:
            return None
        if len(users) == 1:
            return Attribution(users[0], SESSION, HIGH)
        n = len(users)
        if self._policy == "nearest":  # users are sorted nearest first
            return Attribution(users[0], SESSION, AMBIGUOUS, candidate_count=n)
        listed = users if self._policy == "candidates" else ()
        return Attribution(None, SESSION, AMBIGUOUS, candidate_count=n, candidates=listed)

    def _by_directory(self, facts: SpanFacts, directory: Directory) -> Attribution | None:
        for key, value in facts.principals:
            user = directory.by_principal(key, value)
            if user is not None:
                return Attribution(user, DIRECTORY, EXACT)
        if facts.ip is not None:
            user = directory.by_address(facts.ip)
            if user is not None:
                return Attribution(user, DIRECTORY, HIGH)
        return None


class _Open:
    """A decision :meth:`Resolver.resolve_at` cannot share: see there."""


_NO_EVENT, _PER_SPAN, _UNSEEN = _Open(), _Open(), _Open()


def _distinct(users: Iterable[User]) -> tuple[User, ...]:
    """Users in first-seen order, each once."""
    seen: dict[str, User] = {}
    for user in users:
        seen.setdefault(user.key, user)
    return tuple(seen.values())
