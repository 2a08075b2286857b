"""Deciding by the learned lag: likelihood with a margin, and call events claimed once (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from correlation_kit import ANA, GW, MIKE, MS, Kit, S, attrs, gateway_span, request_of, sent
from test_lag import CONFIGURED, busy_address

from processor.app.config import parse_config
from processor.correlate.claims import Claims
from processor.correlate.identity import MARGIN, attribution_attributes
from processor.correlate.lag import LagLearner
from processor.correlate.resolve import AMBIGUOUS, HIGH, Resolver, SpanFacts
from processor.errors import ConfigError
from processor.identity.directory import Directory
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.shared import session_from_json, session_to_json
from processor.model import Session, SessionKind, User

NOBODY = Directory.empty()


def trained() -> tuple[LagLearner, int]:
    """A learner that knows GW's lag is 5-80 ms for both kinds of event, and a time after it."""
    learner = LagLearner(CONFIGURED, min_samples=30)
    for kind in ("request", "call"):
        last = busy_address(
            learner, spans=400, rate_per_s=4.0, lag=(5 * MS, 80 * MS), ip=GW, kind=kind
        )
    return learner, last + 10 * S


def resolver(lags: LagLearner | None, margin: float = 10.0) -> Resolver:
    """The resolver as the service builds it (5 s / 500 ms window, skip policy)."""
    return Resolver(window_ns=5 * S, skew_ns=500 * MS, policy="skip", lags=lags, margin=margin)


def store_with(*events: tuple[User, int], kind: SessionKind = "request") -> MemorySessionStore:
    """A store holding events of ``kind`` at GW."""
    store = MemorySessionStore(1000)
    for user, at in events:
        store.add(Session(GW, user, at, at, kind=kind))
    return store


def test_the_likelier_user_is_named_and_the_margin_written() -> None:
    """Ana's event 20 ms before the span, Mike's 2 s before: Ana, by a wide margin."""
    learner, t = trained()
    store = store_with((ANA, t - 20 * MS), (MIKE, t - 2 * S))
    found = resolver(learner).resolve(SpanFacts(GW, t), store, NOBODY)
    assert found is not None and found.user == ANA and found.confidence == HIGH
    assert found.candidate_count == 2 and found.margin >= 10
    written = {kv.key: kv.value.int_value for kv in attribution_attributes(found)}
    assert written[MARGIN] == found.margin


def test_two_events_inside_the_lag_stay_ambiguous() -> None:
    """Ana 20 ms and Mike 50 ms before: both lags are usual, so nobody is named."""
    learner, t = trained()
    store = store_with((ANA, t - 20 * MS), (MIKE, t - 50 * MS))
    found = resolver(learner).resolve(SpanFacts(GW, t), store, NOBODY)
    assert found is not None and found.user is None and found.confidence == AMBIGUOUS
    assert found.candidate_count == 2 and found.margin < 10


def test_the_margin_is_the_bar() -> None:
    """The same clear case is left ambiguous when the margin asked for is above its ratio
    (the written margin is the ratio rounded down to one digit, so ten times it is above)."""
    learner, t = trained()
    store = store_with((ANA, t - 20 * MS), (MIKE, t - 2 * S))
    clear = resolver(learner).resolve(SpanFacts(GW, t), store, NOBODY)
    assert clear is not None and clear.user == ANA
    strict = resolver(learner, margin=10.0 * clear.margin).resolve(SpanFacts(GW, t), store, NOBODY)
    assert strict is not None and strict.user is None and strict.candidate_count == 2


@pytest.mark.parametrize(("kind", "second"), [("call", None), ("request", ANA)])
def test_a_call_event_explains_one_span(kind: SessionKind, second: User | None) -> None:
    """Ana's one event, two spans 20 and 40 ms after it.

    A ``call`` event is one model call: the first span claims it and the second,
    whose own event never came, gets nobody. A ``request`` event (a message,
    which may cause several calls) explains both.
    """
    learner, t = trained()
    store = store_with((ANA, t), kind=kind)
    r = resolver(learner)
    first = r.resolve(SpanFacts(GW, t + 20 * MS), store, NOBODY)
    assert first is not None and first.user == ANA
    later = r.resolve(SpanFacts(GW, t + 40 * MS), store, NOBODY)
    assert (later.user if later is not None else None) == second


def test_without_a_learned_lag_call_events_are_not_claimed() -> None:
    """Before anything is learned, window membership decides as it always did: both spans."""
    t = 1_795_000_000 * S
    store = store_with((ANA, t), kind="call")
    r = resolver(None)
    for offset in (20 * MS, 40 * MS):
        found = r.resolve(SpanFacts(GW, t + offset), store, NOBODY)
        assert found is not None and found.user == ANA
    assert len(r.claims) == 0


def test_a_batch_is_decided_in_start_order() -> None:
    """Listed later-first, the span that started first still claims Ana's call event."""
    learner, t = trained()
    store = store_with((ANA, t), kind="call")
    later, first = resolver(learner).resolve_at(
        GW, [t + 40 * MS, t + 20 * MS], ["", ""], store, NOBODY
    )
    assert first is not None and first.user == ANA
    assert later is None


def test_held_spans_are_decided_in_start_order() -> None:
    """Two held spans released together: the one that started first claims the call event."""
    learner, t = trained()
    kit = Kit(hold_ms=6000, lags=learner)
    early, late = gateway_span(1, start=t + 20 * MS), gateway_span(2, start=t + 40 * MS)
    kit.receive(request_of(late, early), now=t + S)  # later-starting span listed first
    kit.add(Session(GW, ANA, t, t, kind="call"), now=t + S)
    out = kit.correlator.tick(t + 10 * S)
    by_trace = {s.trace_id[-1]: attrs(s) for s in sent(out)}
    assert by_trace[1].get("user.email") == ANA.email
    assert "user.email" not in by_trace[2]


def test_claims_are_bounded_and_only_calls_are_claimed() -> None:
    """Past the limit the oldest claim is forgotten; request events are never claimed."""
    claims = Claims(limit=3)
    calls = [Session(GW, ANA, n, n, kind="call") for n in range(5)]
    for e in calls:
        claims.claim(e)
    claims.claim(Session(GW, MIKE, 9, 9, kind="request"))
    assert len(claims) == 3
    assert claims.open(calls) == calls[:2]


def test_the_call_kind_survives_the_shared_store() -> None:
    """A call event shared through Redis is still a call event on the other replica."""
    call = Session(GW, ANA, 5, 5, model="gpt-4o", kind="call")
    assert session_from_json(session_to_json(call)) == call


@pytest.mark.parametrize(
    ("margin", "problem"),
    [
        (0.5, "correlation.likelihood_margin: must be at least 1"),
        (2_000_000, "correlation.likelihood_margin: must be at most 1000000"),
        ("nan", "correlation.likelihood_margin"),
    ],
)
def test_the_margin_is_checked(margin: object, problem: str) -> None:
    """check-config refuses margins below 1, absurdly high ones and non-numbers."""
    raw = {"exporter": {"endpoint": "127.0.0.1:4317"}, "api": {"enabled": False}}
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {**raw, "correlation": {"likelihood_margin": margin}}, base_dir=Path.cwd(), env={}
        )
    assert any(problem in str(p) for p in caught.value.problems), caught.value.problems
    ok = parse_config({**raw, "correlation": {"likelihood_margin": 3}}, base_dir=Path.cwd(), env={})
    assert ok.correlation.likelihood_margin == 3.0


def test_the_written_margin_is_rounded_down_to_one_digit() -> None:
    """Decisions repeat (and are encoded once) because margins are shown coarsely."""
    from processor.correlate.resolve import MARGIN_CAP, _shown_margin

    assert [_shown_margin(r) for r in (0.5, 1.0, 9.9, 12.7, 380.0, 99_999.0)] == [
        0,
        1,
        9,
        10,
        300,
        MARGIN_CAP,
    ]
