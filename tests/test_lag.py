"""The lag learner: each address's real event -> span lag, learned from traffic (pure)."""

from __future__ import annotations

import math
import random

from processor.correlate.lag import MAX_OFFSETS_PER_SPAN, LagLearner, Window
from processor.correlate.resolve import Resolver, SpanFacts
from processor.identity.directory import Directory
from processor.identity.sessions.memory import MemorySessionStore
from processor.model import Session, User

MS = 1_000_000
S = 1000 * MS
T0 = 1_795_000_000 * S
IP = "172.18.0.5"
CONFIGURED = Window(-500 * MS, 5 * S)


def busy_address(
    learner: LagLearner,
    *,
    spans: int,
    rate_per_s: float,
    lag: tuple[int, int],
    seed: int = 1,
    ip: str = IP,
    kind: str = "request",
) -> int:
    """Feed ``spans`` spans whose true event leads by ``lag`` among Poisson others.

    Returns the last span's start time.
    """
    rng = random.Random(seed)
    t = T0
    events: list[int] = []
    starts: list[int] = []
    for _ in range(spans):
        t += int(rng.expovariate(rate_per_s) * S)
        events.append(t)
        starts.append(t + rng.randint(*lag))
    for start in starts:
        near = [e for e in events if CONFIGURED.covers(start - e)]
        learner.observe(ip, start, near, kind)
    return starts[-1]


def test_without_evidence_the_configured_window_applies() -> None:
    """An address never seen, or seen with too few spans, uses the configured window."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    assert learner.window(IP, T0) == CONFIGURED
    last = busy_address(learner, spans=20, rate_per_s=1.0, lag=(5 * MS, 80 * MS))
    assert learner.window(IP, last) == CONFIGURED
    assert learner.summary(IP, last) is None


def test_a_narrow_lag_on_a_busy_address_is_learned() -> None:
    """100 spans at 4 calls/s with a 5-80 ms lag: a window around 5-80 ms, inside the configured."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    last = busy_address(learner, spans=400, rate_per_s=4.0, lag=(5 * MS, 80 * MS))
    window = learner.window(IP, last)
    assert window.learned
    assert window.lo_ns <= 5 * MS and window.hi_ns >= 80 * MS
    assert window.lo_ns >= CONFIGURED.lo_ns and window.hi_ns <= 200 * MS
    summary = learner.summary(IP, last)
    assert summary is not None
    assert 5 * MS <= summary.p50_ns <= 80 * MS
    assert summary.samples >= 30


def test_learning_starts_at_min_samples() -> None:
    """Both sides of the line: the same traffic learns with a low bar, not with a high one."""
    low, high = LagLearner(CONFIGURED, min_samples=30), LagLearner(CONFIGURED, min_samples=5000)
    for learner in (low, high):
        last = busy_address(learner, spans=200, rate_per_s=1.0, lag=(5 * MS, 80 * MS))
    assert low.window(IP, last).learned
    assert high.window(IP, last) == CONFIGURED


def test_a_lag_wider_than_the_peak_is_not_used() -> None:
    """A heavy-tailed lag (20 ms - 3 s, log-uniform) on a busy address is not narrowed."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    rng = random.Random(3)
    t, events, starts = T0, [], []
    for _ in range(600):
        t += int(rng.expovariate(2.0) * S)
        events.append(t)
        starts.append(t + int(20 * MS * 150 ** rng.random()))
    for start in starts:
        learner.observe(IP, start, [e for e in events if CONFIGURED.covers(start - e)])
    window = learner.window(IP, starts[-1])
    if window.learned:  # any learned window must hold nearly every true lag
        inside = sum(window.covers(s - e) for s, e in zip(starts, events, strict=True))
        assert inside >= 0.98 * len(starts)


def test_events_far_in_the_past_or_future_cannot_move_it() -> None:
    """Offsets outside the configured window are never counted."""
    learner = LagLearner(CONFIGURED, min_samples=10)
    for i in range(1000):
        start = T0 + i * S
        learner.observe(IP, start, [start - 3600 * S, start + 86_400 * S, start - 6 * S])
    assert learner.window(IP, T0 + 1000 * S) == CONFIGURED
    assert learner.summaries(T0 + 1000 * S) == {}


def test_a_flood_without_a_peak_is_not_learned() -> None:
    """Uniformly spread events (a source flooding the address) teach nothing."""
    learner = LagLearner(CONFIGURED, min_samples=10)
    rng = random.Random(5)
    for i in range(2000):
        start = T0 + i * S
        offsets = [rng.randint(CONFIGURED.lo_ns, CONFIGURED.hi_ns) for _ in range(20)]
        learner.observe(IP, start, [start - o for o in offsets])
    assert learner.window(IP, T0 + 2000 * S) == CONFIGURED


def test_a_span_with_too_many_candidates_is_skipped() -> None:
    """A span with more events than the cap adds nothing (a cap must not bend the floor)."""
    learner = LagLearner(CONFIGURED, min_samples=10)
    for i in range(100):
        start = T0 + i * S
        learner.observe(IP, start, [start - 10 * MS] * (MAX_OFFSETS_PER_SPAN + 1))
    assert learner.window(IP, T0 + 100 * S) == CONFIGURED


def test_an_address_without_new_evidence_falls_back() -> None:
    """Past ``stale_ns`` of span time without evidence, the configured window is back."""
    learner = LagLearner(CONFIGURED, min_samples=30, stale_ns=60 * S)
    last = busy_address(learner, spans=300, rate_per_s=4.0, lag=(5 * MS, 80 * MS))
    assert learner.window(IP, last + 59 * S).learned
    assert learner.window(IP, last + 61 * S) == CONFIGURED


def test_the_window_stays_inside_the_configured_one() -> None:
    """Even a lag at the very edge of the configured window is clamped to it."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    last = busy_address(learner, spans=300, rate_per_s=0.1, lag=(4900 * MS, 5000 * MS))
    window = learner.window(IP, last)
    assert window.hi_ns <= CONFIGURED.hi_ns and window.lo_ns >= CONFIGURED.lo_ns


def test_sources_are_bounded() -> None:
    """At most ``max_sources`` addresses are kept; the least recently seen goes first."""
    learner = LagLearner(CONFIGURED, max_sources=3)
    for n in range(5):
        learner.observe(f"10.0.0.{n}", T0, [T0 - 10 * MS])
    assert len(learner._sources) == 3
    assert ("10.0.0.0", "request") not in learner._sources


def test_old_evidence_decays() -> None:
    """After a source's lag changes, the new lag takes over (counts halve as they grow)."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    busy_address(learner, spans=1500, rate_per_s=4.0, lag=(5 * MS, 80 * MS), seed=1)
    rng = random.Random(9)
    last = T0 + 3000 * S
    for _ in range(12000):  # the lag moved to about 2 s (say, the filter became a webhook)
        last += S
        learner.observe(IP, last, [last - 2 * S - rng.randint(0, 50 * MS)])
    window = learner.window(IP, last)
    assert window.learned and window.lo_ns > 1 * S


def test_learned_lags_are_finite() -> None:
    """Quantiles are real numbers inside the configured window."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    last = busy_address(learner, spans=300, rate_per_s=2.0, lag=(5 * MS, 80 * MS))
    summary = learner.summary(IP, last)
    assert summary is not None
    for value in (summary.p50_ns, summary.p99_ns, summary.samples):
        assert math.isfinite(value)
        assert CONFIGURED.lo_ns <= summary.p50_ns <= summary.p99_ns <= CONFIGURED.hi_ns


# --------------------------------------------------------------------------- in the resolver

ANN = User(id="ann", email="ann@example.com")
BOB = User(id="bob", email="bob@example.com")


def resolver(lags: LagLearner | None) -> Resolver:
    """The resolver as the service builds it, with the configured 5 s / 500 ms window."""
    return Resolver(window_ns=5 * S, skew_ns=500 * MS, policy="skip", lags=lags)


def trained() -> LagLearner:
    """A learner that knows the address's lag is 5-80 ms."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    busy_address(learner, spans=400, rate_per_s=4.0, lag=(5 * MS, 80 * MS))
    return learner


def store_with(*events: tuple[User, int]) -> MemorySessionStore:
    """A session store holding request events at IP."""
    store = MemorySessionStore(1000)
    for user, at in events:
        store.add(Session(IP, user, at, at, kind="request"))
    return store


def test_a_learned_lag_names_the_user_a_wide_window_cannot() -> None:
    """Bob's event 2 s before and Ann's 20 ms before: ambiguous by the configured window only."""
    span_at = T0 + 3000 * S
    store = store_with((BOB, span_at - 2 * S), (ANN, span_at - 20 * MS))
    facts = SpanFacts(IP, span_at)
    before = resolver(None).resolve(facts, store, Directory.empty())
    assert before is not None and before.user is None and before.candidate_count == 2
    after = resolver(trained()).resolve(facts, store, Directory.empty())
    assert after is not None and after.user == ANN
    (batched,) = resolver(trained()).resolve_at(IP, [span_at], [""], store, Directory.empty())
    assert batched == after


def test_a_lone_event_far_outside_the_learned_lag_is_weighed_against_a_lost_one() -> None:
    """Bob's lone event 2 s before a span, where every call lagged 5-80 ms.

    Unlearned, window membership names Bob, as always. Learned, a 2 s lag is as
    unlikely as "the span's own event was lost and Bob's belongs to another
    call" on an address this busy, so no user is named from events.
    """
    span_at = T0 + 3000 * S
    store = store_with((BOB, span_at - 2 * S))
    facts = SpanFacts(IP, span_at)
    before = resolver(None).resolve(facts, store, Directory.empty())
    assert before is not None and before.user == BOB
    assert resolver(trained()).resolve(facts, store, Directory.empty()) is None
    (batched,) = resolver(trained()).resolve_at(IP, [span_at], [""], store, Directory.empty())
    assert batched is None


def test_spans_train_the_learner_through_the_resolver() -> None:
    """Deciding spans at an address with events teaches its lag (from the configured window)."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    r = resolver(learner)
    rng = random.Random(2)
    store = MemorySessionStore(100_000)
    t = T0
    spans = []
    for n in range(300):
        t += int(rng.expovariate(4.0) * S)
        store.add(Session(IP, ANN if n % 2 else BOB, t, t, kind="request"))
        spans.append(t + rng.randint(5 * MS, 80 * MS))
    for start in spans:
        r.resolve(SpanFacts(IP, start), store, Directory.empty())
    assert learner.window(IP, spans[-1]).learned


def test_learned_lags_are_exposed_per_address() -> None:
    """/metrics shows the learned median and 99th percentile per address and event kind."""
    from processor.app.gauges import lag_quantiles as _lag_quantiles
    from processor.metrics import Metrics

    learner = trained()
    now = T0 + 200 * S
    metrics = Metrics()
    metrics.learned_lag.set_function(lambda: _lag_quantiles(learner, now))
    text = metrics.scrape().decode()
    sample = f'user_enricher_learned_lag_seconds{{address="{IP}",kind="request",quantile="0.5"}}'
    assert sample in text
    assert 0.005 <= metrics.learned_lag.value((IP, "request", "0.5")) <= 0.08
    assert metrics.learned_lag.value((IP, "call", "0.5")) == 0.0
    assert metrics.learned_lag.value(("10.9.9.9", "request", "0.5")) == 0.0


def test_each_kind_of_event_has_its_own_lag() -> None:
    """Call events 5-80 ms ahead and request events 1-2 s ahead on one address: two lags."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    busy_address(learner, spans=400, rate_per_s=1.0, lag=(5 * MS, 80 * MS), kind="call")
    last = busy_address(learner, spans=400, rate_per_s=1.0, lag=(1 * S, 2 * S), seed=2)
    fast, slow = learner.summary(IP, last, "call"), learner.summary(IP, last, "request")
    assert fast is not None and slow is not None
    assert 5 * MS <= fast.p50_ns <= 80 * MS
    assert 1 * S <= slow.p50_ns <= 2 * S


def test_a_kind_not_learned_yet_is_decided_by_the_window() -> None:
    """Only call events are learned: a span whose candidates are request events is
    decided by window membership, as before anything was learned."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    last = busy_address(learner, spans=400, rate_per_s=4.0, lag=(5 * MS, 80 * MS), kind="call")
    span_at = last + 10 * S
    store = store_with((BOB, span_at - 2 * S))  # a request event, lag never learned
    found = resolver(learner).resolve(SpanFacts(IP, span_at), store, Directory.empty())
    assert found is not None and found.user == BOB and found.margin == 0


def test_one_users_back_to_back_calls_teach_the_real_lag() -> None:
    """One user's 40 calls ~185 ms apart (an agent loop), each 4-11 ms after its event:
    the learned lag is the 4-11 ms, not the call interval's multiples (seen on a real
    Open WebUI by `make e2e-openwebui` with no think time)."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    r = resolver(learner)
    rng = random.Random(1)
    store = MemorySessionStore(1000)
    t, spans = T0, []
    for _ in range(40):
        t += rng.randint(180 * MS, 190 * MS)
        store.add(Session(IP, ANN, t, t, kind="call"))
        spans.append(t + rng.randint(4 * MS, 11 * MS))
    for start in spans:
        r.resolve(SpanFacts(IP, start), store, Directory.empty())
    summary = learner.summary(IP, spans[-1], "call")
    assert summary is not None
    assert summary.p99_ns <= 20 * MS and summary.window.hi_ns < 100 * MS


def test_a_very_busy_address_still_learns() -> None:
    """30 calls/s on one address put about 165 events in a span's window; the lag is
    still learned (a span is skipped only past MAX_OFFSETS_PER_SPAN offsets)."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    last = busy_address(learner, spans=1500, rate_per_s=30.0, lag=(5 * MS, 80 * MS))
    summary = learner.summary(IP, last)
    assert summary is not None
    assert 5 * MS <= summary.p50_ns <= 80 * MS


def test_every_offset_in_the_peak_survives_many_halvings() -> None:
    """One event per address and every span within a second of it (the filter's events
    on a busy gateway): nothing lies outside the peak, and after many halvings of the
    counts the mean outside it comes out a rounding error below zero. The learner must
    still answer (it raised on the square root, and the spans went out unattributed)."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    event = T0 - S
    rng = random.Random(7)
    summary = None
    for round_ in range(60):
        for _ in range(4000):
            learner.observe(IP, T0 + rng.randrange(0, 512 * MS), [event])
        summary = learner.summary(IP, T0 + round_)
    assert summary is not None
    assert summary.window.lo_ns <= S and summary.window.hi_ns >= S + 512 * MS
