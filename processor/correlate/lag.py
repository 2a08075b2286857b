"""Learning how far an identity source's events run ahead of the spans they explain (pure).

The configured window (``request_window`` after an event, ``clock_skew`` before it)
must be wide enough for any source, so on a busy shared address it holds many
people's events and most spans are ambiguous. Each address's real lag is narrow
(Open WebUI's filter ``request`` hook fires a few ms before the gateway span), and
the traffic itself shows it:

For every span with events in the *configured* window, the offsets
``span start - event time`` of all of them are counted in a histogram. The true
event of each span adds to a peak at the real lag; the other users' events fall
anywhere in the window and add a flat floor. The floor is estimated from the
quietest bins and subtracted; what stands above it is the lag distribution. Its
central 99.8% of mass, padded, becomes the address's window once enough spans
stood above the floor. The evidence is taken from the configured window only,
never the learned one, so the estimate cannot feed on its own decisions.

Bounds: offsets outside the configured window are never counted (events from the
far past or future cannot move it), the learned window always lies inside the
configured one, counts decay by halving so an address that changes is relearned,
an address with no evidence for ``stale_ns`` of span time falls back to the
configured window, and at most ``max_sources`` sources are tracked (least
recently seen dropped).

A source is an address *and* a kind of event: the filter's ``call`` events lead
their spans by milliseconds, a webhook's ``request`` events by seconds, so each
kind at each address has its own histogram.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

BIN_NS = 5_000_000  # 5 ms: the filter hook's lag is 5-80 ms
# A source of events: the address they report and their kind ("call", "request").
Source = tuple[str, str]
# The peak must stand this many standard deviations of the floor's noise above it.
_SIGNIFICANCE = 5.0
# The peak is the run of bins above the floor by this many of its standard
# deviations (so the floor's own noise does not extend it), found in this many
# rounds of re-estimating the floor without the peak.
_RUN_SIGMAS = 0.5
# Share of the observed spans whose true event the learned window must hold.
_EXPLAINED = 0.98
_FLOOR_ROUNDS = 3
# Share of the signal mass left outside the learned window at each end.
_TAIL = 0.001
# The learned window is padded by this share of its width, and at least _MIN_PAD_NS.
_PAD_SHARE = 0.5
_MIN_PAD_NS = 20_000_000
# Counts are halved once this many offsets, or offsets of this many spans, are
# held: old evidence fades, and a source whose lag changed is relearned.
_DECAY_AT = 20_000.0
_DECAY_SPANS = 4_000.0
# The window is recomputed after this many newly observed spans (fewer while
# nothing is learned yet), and when first asked.
_REFRESH_EVERY = 256
_REFRESH_EARLY = 8
# Shape of the learned lag (see _shape): the tail is measured in segments of
# this many bins, a prior of this many spans is spread evenly over all bins, and this
# share of spans is assumed to have lost its event (fire-and-forget sources
# lose a few).
_TAIL_SEGMENT = 50
_TAIL_SIGMAS = 1.0
_PRIOR_SPANS = 2.0
_LOST = 0.02
# Offsets taken from one span at most (nearest to the span first are not
# preferred: a cap must not bend the flat floor, so the span is skipped instead).
# 256 covers about 45 calls/s on one address with the default 5.5 s window; at 64
# an address past about 12 calls/s never learned its lag.
MAX_OFFSETS_PER_SPAN = 256


@dataclass(frozen=True, slots=True)
class Window:
    """An event at ``t`` matches spans starting in ``[t + lo_ns, t + hi_ns]``.

    The configured window is ``[-clock_skew, request_window]``; a learned one may
    start after 0 (a source whose events always lead by a second or more).
    """

    lo_ns: int
    hi_ns: int
    learned: bool = False

    def covers(self, offset_ns: int) -> bool:
        """Whether a span starting ``offset_ns`` after an event lies in the window."""
        return self.lo_ns <= offset_ns <= self.hi_ns


@dataclass(frozen=True, slots=True, eq=False)
class LagSummary:
    """One address's learned lag: quantiles and evidence for /metrics, and its shape.

    ``density[i]`` is the learned probability that a span's own event lies in
    offset bin ``i`` (bins of ``BIN_NS`` from the configured window's start);
    ``null`` is, on the same scale, how likely a candidate is another person's
    event when the span's own event never arrived. Both are smoothed so that no
    offset in the configured window is impossible.
    """

    samples: float  # offsets that stood above the floor (decayed)
    p50_ns: int
    p99_ns: int
    window: Window
    base_ns: int = 0
    density: tuple[float, ...] = ()
    null: float = 0.0

    def likelihood(self, offset_ns: int) -> float:
        """How likely a span starting ``offset_ns`` after an event is that event's call."""
        i = (offset_ns - self.base_ns) // BIN_NS
        if 0 <= i < len(self.density):
            return self.density[i]
        return 0.0


class _Source:
    """One address's offset histogram and its cached learned window."""

    __slots__ = ("added", "bins", "dirty", "last_seen_ns", "spans", "summary", "total")

    def __init__(self, bins: int) -> None:
        self.bins = array("d", bytes(8 * bins))
        self.total = 0.0
        self.spans = 0.0  # spans observed: each explains at most one unit of signal
        self.added = 0
        self.dirty = True
        self.last_seen_ns = 0
        self.summary: LagSummary | None = None


class LagLearner:
    """Per-address learned match windows, falling back to the configured one."""

    def __init__(
        self,
        configured: Window,
        *,
        min_samples: int = 30,
        stale_ns: int = 900 * 1_000_000_000,
        max_sources: int = 1024,
    ) -> None:
        self.configured = configured
        self._min_samples = min_samples
        self._stale_ns = stale_ns
        self._max_sources = max_sources
        self._lo = configured.lo_ns
        self._nbins = (configured.hi_ns - configured.lo_ns) // BIN_NS + 1
        self._sources: OrderedDict[Source, _Source] = OrderedDict()

    def observe(
        self, ip: str, span_start_ns: int, event_starts: Iterable[int], kind: str = "request"
    ) -> None:
        """Count the offsets of a span to every ``kind`` event in its configured window."""
        offsets = [span_start_ns - t for t in event_starts]
        if not offsets or len(offsets) > MAX_OFFSETS_PER_SPAN:
            return
        source = self._source((ip, kind))
        source.last_seen_ns = max(source.last_seen_ns, span_start_ns)
        lo, nbins, bins = self._lo, self._nbins, source.bins
        source.spans += 1.0
        for offset in offsets:
            i = (offset - lo) // BIN_NS
            if 0 <= i < nbins:
                bins[i] += 1.0
                source.total += 1.0
        source.added += 1
        if source.added >= (_REFRESH_EVERY if source.summary is not None else _REFRESH_EARLY):
            source.dirty = True
        if source.total >= _DECAY_AT or source.spans >= _DECAY_SPANS:
            for i in range(nbins):
                bins[i] *= 0.5
            source.total *= 0.5
            source.spans *= 0.5

    def window(self, ip: str, now_ns: int, kind: str = "request") -> Window:
        """The window for spans at ``ip`` starting near ``now_ns``, for ``kind`` events."""
        summary = self.summary(ip, now_ns, kind)
        return summary.window if summary is not None else self.configured

    def summary(self, ip: str, now_ns: int, kind: str = "request") -> LagSummary | None:
        """The learned lag of ``kind`` events at ``ip``; None while unconfident or stale."""
        source = self._sources.get((ip, kind))
        if source is None or now_ns - source.last_seen_ns > self._stale_ns:
            return None
        if source.dirty:
            source.summary = self._learn(source)
            source.dirty, source.added = False, 0
        return source.summary

    def summaries(self, now_ns: int) -> dict[Source, LagSummary]:
        """Every (address, event kind) with a learned lag (for /metrics)."""
        out = {}
        for ip, kind in list(self._sources):
            summary = self.summary(ip, now_ns, kind)
            if summary is not None:
                out[(ip, kind)] = summary
        return out

    def _source(self, key: Source) -> _Source:
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= self._max_sources:
                self._sources.popitem(last=False)
            source = self._sources[key] = _Source(self._nbins)
        else:
            self._sources.move_to_end(key)
        return source

    def _explains(self, source: _Source, window: Window, seen_floor: float) -> bool:
        """Whether ``window`` holds (nearly) every observed span's true event.

        Each observed span has one true event, so of all offsets counted, those
        beyond one per span are other people's: a floor spread evenly over the
        configured window, whatever the lag. Above that floor, the window must
        hold nearly one offset per span. A lag with a tail the peak did not show
        (heavy-tailed, or too few samples yet to see it) fails this: a window cut
        from it would leave true events out and let other users' in.
        """
        floor = max(seen_floor, source.total - source.spans, 0.0) / len(source.bins)
        first = (window.lo_ns - self._lo) // BIN_NS
        last = (window.hi_ns - self._lo) // BIN_NS
        inside = source.bins[first : last + 1]
        excess = sum(inside) - floor * len(inside)
        allowance = 2.0 * math.sqrt(floor * len(inside))
        return excess + allowance >= _EXPLAINED * source.spans

    def _learn(self, source: _Source) -> LagSummary | None:
        """The window holding the peak above the floor, if it stands out enough."""
        bins = source.bins
        floor = source.total / len(bins)  # an overestimate: it includes the peak
        first, last = 0, -1
        for _ in range(_FLOOR_ROUNDS):  # the floor is the mean outside the peak
            first, last = _peak(bins, floor + _RUN_SIGMAS * math.sqrt(floor))
            outside = len(bins) - (last - first + 1)
            if outside < len(bins) // 4:
                break
            # A mean of counts; halved many times, the difference can round below zero.
            floor = max(0.0, (source.total - sum(bins[first : last + 1])) / outside)
        signal = [
            max(0.0, bins[i] - floor) if first <= i <= last else 0.0 for i in range(len(bins))
        ]
        mass = sum(signal)
        noise = math.sqrt(floor * (last - first + 1))
        if mass < self._min_samples or mass < _SIGNIFICANCE * noise:
            return None
        low, median, p99, high = _quantile_bins(signal, mass, (_TAIL, 0.5, 0.99, 1 - _TAIL))
        lo_ns = self._lo + low * BIN_NS
        hi_ns = self._lo + (high + 1) * BIN_NS
        pad = max(_MIN_PAD_NS, int((hi_ns - lo_ns) * _PAD_SHARE))
        window = Window(
            max(self.configured.lo_ns, lo_ns - pad),
            min(self.configured.hi_ns, hi_ns + pad),
            learned=True,
        )
        if not self._explains(source, window, floor * len(bins)):
            return None
        center = self._lo + BIN_NS // 2
        density, null = _shape(
            source,
            (low, high),
            ((window.lo_ns - self._lo) // BIN_NS, (window.hi_ns - self._lo) // BIN_NS),
        )
        return LagSummary(
            mass,
            center + median * BIN_NS,
            center + p99 * BIN_NS,
            window,
            base_ns=self._lo,
            density=density,
            null=null,
        )


def _shape(
    source: _Source, core: tuple[int, int], window: tuple[int, int]
) -> tuple[tuple[float, ...], float]:
    """The lag's per-bin probability and the null weight (see :class:`LagSummary`).

    Between the lag's quantiles (bins ``core``, inclusive) the lag is taken as
    uniform: a few hundred spans cannot tell 20 ms from 60 ms apart, so every
    event there is as likely as any other. The padding around it, up to the
    learned window (bins ``window``), holds the rare true event just beyond the
    quantiles: it is given all the spans the core leaves unexplained (with the
    floor's noise), so a lag the core cuts short keeps its weight there, while a
    well-measured narrow one makes an event in the core outweigh one beside it.
    Outside, the evidence decides: other people's offsets are spread evenly, so
    the known floor is the offsets beyond one per span divided by the bins, and
    a segment's excess over it (_TAIL_SEGMENT bins, and only where it stands
    out of the floor's noise) is the tail's: a lag that sometimes runs to
    seconds. A prior of _PRIOR_SPANS spread over every bin keeps every offset
    possible, which keeps thin evidence cautious.
    """
    bins, spans = source.bins, max(source.spans, 1.0)
    n = len(bins)
    floor = max(0.0, source.total - source.spans) / n
    excess = [b - floor for b in bins]
    first, last = window
    prior = _PRIOR_SPANS / n
    scale = spans + _PRIOR_SPANS

    def measured(region: list[int]) -> float:
        """The region's excess per bin, or 0 where it is within the floor's noise."""
        mass = sum(excess[i] for i in region)
        noise = math.sqrt(floor * len(region))
        return mass / len(region) if region and mass > _TAIL_SIGMAS * noise else 0.0

    width = core[1] - core[0] + 1
    explained = max(0.0, sum(excess[core[0] : core[1] + 1]))
    inside = explained / width + prior
    # What the core does not explain (with its noise) may all lie in the padding.
    pad_bins = max(1, (last - first + 1) - width)
    missing = max(0.0, spans - explained) + 2.0 * math.sqrt(floor * width)
    padding = missing / pad_bins + prior
    shape = [inside] * n
    # Outward from the core in segments, so that a tail is measured where it is.
    right = [
        list(range(i, min(n, i + _TAIL_SEGMENT))) for i in range(core[1] + 1, n, _TAIL_SEGMENT)
    ]
    left = [list(range(max(0, i - _TAIL_SEGMENT), i)) for i in range(core[0], 0, -_TAIL_SEGMENT)]
    for segment in right + left:
        seen = measured(segment) + prior
        for i in segment:
            base = padding if first <= i <= last else prior
            shape[i] = min(inside, max(base, seen))
    # The null: the span's event was lost (share _LOST) and the candidate is one
    # of the floor's other people, who land in a bin at rate floor / spans.
    null = (floor / spans) * _LOST / (1.0 - _LOST)
    return tuple(v / scale for v in shape), null


def _peak(bins: array[float], floor: float) -> tuple[int, int]:
    """The run of bins whose summed excess over ``floor`` is largest (Kadane)."""
    best, best_run = 0.0, (0, -1)
    running, begin = 0.0, 0
    for i, count in enumerate(bins):
        if running <= 0.0:
            running, begin = 0.0, i
        running += count - floor
        if running > best:
            best, best_run = running, (begin, i)
    return best_run


def _quantile_bins(signal: list[float], mass: float, shares: tuple[float, ...]) -> list[int]:
    """The bin index at which the cumulative signal first reaches each share of ``mass``."""
    out: list[int] = []
    targets = iter(shares)
    target = next(targets) * mass
    running = 0.0
    for i, value in enumerate(signal):
        running += value
        while running >= target and value > 0:
            out.append(i)
            following = next(targets, None)
            if following is None:
                return out
            target = following * mass
    while len(out) < len(shares):
        out.append(len(signal) - 1)
    return out
