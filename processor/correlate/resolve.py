"""The timing and directory links of the attribution chain (pure).

Given what a span says about itself (source address, start time, model,
principals), decide who sent it from request events, long sessions and the
static directory. The span and trace links come before this and need no state
beyond a trace map, so they live with the span walk in ``correlator``.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from processor.correlate.claims import Claims
from processor.correlate.lag import LagLearner, LagSummary
from processor.correlate.lag_training import observe_events
from processor.identity.directory import Directory
from processor.identity.sessions.store import SessionLookup
from processor.model import Attribution, Session, User, unset

AmbiguityPolicy = Literal["skip", "nearest", "candidates"]
# Spans of one batch and address that train the lag learner at most (evenly spread).
_LEARN_PER_BATCH = 32
# The learned lag of each event kind at one address.
Learned = dict[str, LagSummary]
# Per-batch memo of long-session decisions: ip -> (valid from, valid until, decision).
Memo = dict[str, tuple[int, int, "Attribution | None"]]

SESSION = "session"
DIRECTORY = "directory"
EXACT = "exact"
HIGH = "high"
AMBIGUOUS = "ambiguous"
# With a learned lag, the best user must be this many times likelier than the
# next (and than a lost event); the margin written on spans is capped here.
DEFAULT_MARGIN = 10.0
MARGIN_CAP = 10_000
# Distinct likelihood decisions kept as shared objects at most.
_DECISIONS_LIMIT = 16_384


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
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self._window_ns = window_ns
        self._skew_ns = skew_ns
        self._policy = policy
        # Learns each address's real lag from spans with events in the configured
        # window; until it is confident, window membership decides.
        self.lags = lags
        self._margin = margin
        self.claims = Claims()
        self._decisions: dict[tuple[str, str, int, int], Attribution] = {}
        # (method, confidence) -> id(user) -> the decision; each entry keeps its user
        # alive, so an id is not reused while it is remembered.
        self._named: dict[tuple[str, str], dict[int, Attribution]] = {}

    def _learned(self, ip: str, t_ns: int, events: Sequence[Session]) -> Learned | None:
        """The learned lag of every kind among ``events`` at ``ip``.

        None where window membership decides: nothing learned, no events, or one
        of their kinds not learned yet (its events could not be weighed).
        """
        if self.lags is None or not events:
            return None
        out: Learned = {}
        for kind in {e.kind for e in events}:
            summary = self.lags.summary(ip, t_ns, kind)
            if summary is None:
                return None
            out[kind] = summary
        return out

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
            decision = self.named(user, DIRECTORY, HIGH) if user is not None else None
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
        learned: Learned | None = None
        if self.lags is not None:
            self._learn_at(ip, times, events)
            learned = self._learned(ip, max(times), events)
        shared: dict[tuple[int, int, str], Attribution | _Open | None] = {}
        memo: Memo = {}
        out: list[Attribution | None] = []
        if learned is not None:
            # Decided by the learned lag, each span by its own offsets, in start
            # order so that claimed call events pass from earlier calls to later.
            decided: list[Attribution | None] = [None] * len(times)
            for i in sorted(range(len(times)), key=times.__getitem__):
                t = times[i]
                lo, hi = bisect_left(at, t - window), bisect_right(at, t + skew)
                found = self._likeliest(_same_model(events[lo:hi], models[i]), t, learned)
                decided[i] = found or self.by_address(ip, t, sessions, directory, memo)
            return decided
        for t, model in zip(times, models, strict=True):
            lo, hi = bisect_left(at, t - window), bisect_right(at, t + skew)
            key = (lo, hi, model)
            decision = shared.get(key, _UNSEEN)
            if decision is _UNSEEN:
                decision = shared[key] = self._shared(events[lo:hi], model)
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
        users = _distinct(e.user for e in _same_model(events, model))
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
        (the configured window). Events naming a different model than the span
        are ruled out; events without a model stay in. With ``learn`` the span's
        offsets to the events in the window train the learner.
        """
        ip = facts.ip
        assert ip is not None
        start = facts.start_ns
        events = sessions.events_near(ip, start - self._window_ns, start + self._skew_ns)
        events = _same_model(events, facts.model)
        if self.lags is not None and learn:
            observe_events(self.lags, ip, start, events)
        events.sort(key=lambda e: abs(start - e.start_ns))
        return events

    def _by_events(
        self, facts: SpanFacts, sessions: SessionLookup, *, learn: bool = True
    ) -> Attribution | None:
        assert facts.ip is not None
        if not sessions.has_events(facts.ip):
            return None
        events = self._event_candidates(facts, sessions, learn=learn)
        learned = self._learned(facts.ip, facts.start_ns, events)
        if learned is not None:
            return self._likeliest(events, facts.start_ns, learned)
        return self._decide(_distinct(e.user for e in events))

    def _likeliest(
        self, events: list[Session], start_ns: int, learned: Learned
    ) -> Attribution | None:
        """The user whose events best explain a span starting at ``start_ns``.

        Each candidate event weighs as likely as its offset is under the learned
        lag; a user's weight is the sum over their events. The best user is named
        only when it outweighs both the next user and the null (the span's own
        event was lost and the best is someone else's) by the margin, and then
        claims its event if it is the user's only candidate and a ``call`` (see
        ``claims``); claimed events are no candidates. Below the margin: ambiguous between several
        users, or no event-based answer for one.
        """
        weights: dict[str, float] = {}
        users: dict[str, User] = {}
        own: dict[str, list[Session]] = {}
        for e in self.claims.open(events):
            key = e.user.key
            users.setdefault(key, e.user)
            own.setdefault(key, []).append(e)
            lag = learned.get(e.kind)
            w = lag.likelihood(start_ns - e.start_ns) if lag is not None else 0.0
            weights[key] = weights.get(key, 0.0) + w
        if not weights:
            return None
        ranked = sorted(weights, key=weights.__getitem__, reverse=True)
        best = weights[ranked[0]]
        null = max(lag.null for lag in learned.values())
        rival = max(weights[ranked[1]] if len(ranked) > 1 else 0.0, null)
        ratio = best / rival if rival > 0.0 else math.inf
        margin = _shown_margin(ratio)
        n = len(ranked)
        if ratio >= self._margin:
            mine = own[ranked[0]]
            if len(mine) == 1:  # which of several of the user's events is unknown
                self.claims.claim(mine[0])
            return self._interned(users[ranked[0]], HIGH, n, margin)
        if n == 1:
            return None  # more likely a lost event than this user's
        if self._policy == "nearest":
            return self._interned(users[ranked[0]], AMBIGUOUS, n, margin)
        if self._policy == "candidates":
            listed = tuple(users[k] for k in ranked)
            return Attribution(
                None, SESSION, AMBIGUOUS, candidate_count=n, candidates=listed, margin=margin
            )
        return self._interned(None, AMBIGUOUS, n, margin)

    def named(self, user: User, method: str, confidence: str) -> Attribution:
        """The shared Attribution naming ``user`` this way (one object per user object,
        so a busy user's attribute bytes are encoded once, not per span or batch)."""
        by_user = self._named_by(method, confidence)
        hit = by_user.get(id(user))
        if hit is None:
            if len(by_user) >= _DECISIONS_LIMIT:
                by_user.clear()
            hit = by_user[id(user)] = Attribution(user, method, confidence)
        return hit

    def named_all(
        self, users: Sequence[User | None], method: str, confidence: str
    ) -> list[Attribution | None]:
        """:meth:`named` for each of ``users`` (None stays None); one look-up in C per
        user seen before."""
        ids = list(map(id, users))
        found = list(map(self._named_by(method, confidence).get, ids))
        if unset(found) != unset(users):  # a user not seen before
            for i, (a, user) in enumerate(zip(found, users, strict=True)):
                if a is None and user is not None:
                    found[i] = self.named(user, method, confidence)
        return found

    def _named_by(self, method: str, confidence: str) -> dict[int, Attribution]:
        by_user = self._named.get((method, confidence))
        if by_user is None:
            by_user = self._named[method, confidence] = {}
        return by_user

    def _interned(self, user: User | None, confidence: str, n: int, margin: int) -> Attribution:
        """One Attribution object per distinct decision, so the span writer encodes each
        once (it caches encoded attributes by object)."""
        key = (user.key if user is not None else "", confidence, n, margin)
        found = self._decisions.get(key)
        if found is None or found.user != user:
            if len(self._decisions) >= _DECISIONS_LIMIT:
                self._decisions.clear()
            found = self._decisions[key] = Attribution(
                user, SESSION, confidence, candidate_count=n, margin=margin
            )
        return found

    def _learn_at(self, ip: str, times: Sequence[int], events: Sequence[Session]) -> None:
        """Train the learner with a batch's spans at ``ip`` (at most _LEARN_PER_BATCH)."""
        assert self.lags is not None
        window, skew = self._window_ns, self._skew_ns
        at = [e.start_ns for e in events]
        step = max(1, len(times) // _LEARN_PER_BATCH)
        for t in times[::step]:
            observe_events(
                self.lags, ip, t, events[bisect_left(at, t - window) : bisect_right(at, t + skew)]
            )

    def _by_sessions(self, facts: SpanFacts, sessions: SessionLookup) -> Attribution | None:
        assert facts.ip is not None
        return self._decide(sessions.users_at(facts.ip, facts.start_ns).users)

    def _decide(self, users: tuple[User, ...]) -> Attribution | None:
        if not users:
            return None
        if len(users) == 1:
            return self.named(users[0], SESSION, HIGH)
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


def _shown_margin(ratio: float) -> int:
    """The margin written on a span: the ratio rounded down to one significant digit
    (12.7 -> 10, 380 -> 300), capped at MARGIN_CAP, so that decisions repeat."""
    if ratio >= MARGIN_CAP:
        return MARGIN_CAP
    if ratio < 1.0:
        return 0
    step = 10 ** int(math.log10(ratio))
    return int(ratio // step * step)


def _same_model(events: Iterable[Session], model: str) -> list[Session]:
    """The events a span asking for ``model`` may answer (those without a model stay in)."""
    if not model:
        return list(events)
    return [e for e in events if not e.model or same_model(e.model, model)]


def _distinct(users: Iterable[User]) -> tuple[User, ...]:
    """Users in first-seen order, each once."""
    seen: dict[str, User] = {}
    for user in users:
        seen.setdefault(user.key, user)
    return tuple(seen.values())
