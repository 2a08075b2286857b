"""What a span teaches the lag learner: its offsets to the events that could be its own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from processor.correlate.lag import LagLearner
from processor.model import Session

# A person's events closer together than this train the learner as one (see
# one_per_burst).
_BURST_NS = 60_000_000


def observe_events(lags: LagLearner, ip: str, start_ns: int, events: Sequence[Session]) -> None:
    """Train each kind's learner at ``ip`` with the span's offsets to that kind's events."""
    kinds = {e.kind for e in events}
    for kind in kinds:
        own = events if len(kinds) == 1 else [e for e in events if e.kind == kind]
        lags.observe(ip, start_ns, one_per_burst(own, start_ns), kind)


def one_per_burst(events: Iterable[Session], start_ns: int) -> list[int]:
    """Event times that train the lag learner: one per burst of a person's events.

    A span is one person's call, so of a burst of that person's events close
    together (a message's follow-up calls, all requested at once) only one can
    be its own; counting each would stand several times near the true lag and
    overstate how much the peak explains. Per person, events less than _BURST_NS
    after the previous one join its burst, and the burst counts with the event
    nearest to ``start_ns``. Other people's events stay spread evenly.
    When every event is one person's, only the latest before the span counts.
    """
    ordered = sorted(events, key=lambda e: e.start_ns)
    if len({e.user.key for e in ordered}) == 1:
        # A quiet moment: only this person's events. Their regular calls (an agent,
        # a loop) would stand as peaks at every multiple of the call interval; the
        # span's own is the latest event before it.
        before = [e.start_ns for e in ordered if e.start_ns <= start_ns]
        return [before[-1] if before else ordered[0].start_ns]
    out: list[int] = []
    last: dict[str, tuple[int, int]] = {}  # user -> (latest event, index in out)
    for e in ordered:
        seen = last.get(e.user.key)
        if seen is not None and e.start_ns - seen[0] < _BURST_NS:
            i = seen[1]
            if abs(start_ns - e.start_ns) < abs(start_ns - out[i]):
                out[i] = e.start_ns
            last[e.user.key] = (e.start_ns, i)
            continue
        last[e.user.key] = (e.start_ns, len(out))
        out.append(e.start_ns)
    return out
