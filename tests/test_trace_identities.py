"""Trace identities: which user each recent trace belongs to, learned span by span or a
batch at a time, with the same answers either way."""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from processor.identity.sessions.traces import TraceIdentities
from processor.model import User

USERS = [User(id=f"u{i}", email=f"u{i}@example.com") for i in range(3)]
NOW = 1_000


def _one_by_one(traces: TraceIdentities, pairs: list[tuple[bytes, User | None]]) -> list[bytes]:
    """The reference: put() for each span with a trace id and a user."""
    return [t for t, u in pairs if u is not None and t and traces.put(t, u, NOW)]


@given(
    st.lists(
        st.tuples(st.sampled_from([b"", b"a", b"b", b"c", b"d"]), st.sampled_from([None, *USERS])),
        max_size=12,
    ),
    st.integers(min_value=1, max_value=4),
)
def test_learning_a_batch_is_putting_each_span(
    pairs: list[tuple[bytes, User | None]], most: int
) -> None:
    """Same traces learned (each once) in the same order, the first user of a trace
    kept, and the bound applied as each trace arrives."""
    batch, reference = TraceIdentities(60, most), TraceIdentities(60, most)
    learned = batch.learn([t for t, _ in pairs], [u for _, u in pairs], NOW)
    assert list(learned) == list(dict.fromkeys(_one_by_one(reference, pairs)))
    assert dict(batch.entries) == dict(reference.entries)
    assert len(batch) <= most


def test_a_known_trace_keeps_its_first_user() -> None:
    """A later span naming someone else does not move the trace."""
    traces = TraceIdentities(60, 10)
    assert traces.learn([b"t", b"t"], [USERS[0], USERS[1]], NOW) == {b"t": USERS[0]}
    assert traces.learn([b"t"], [USERS[2]], NOW) == {}
    assert traces.get(b"t") == USERS[0]


class Put(NamedTuple):
    trace_id: bytes
    user: User


class Learn(NamedTuple):
    pairs: list[tuple[bytes, User | None]]


class Tick(NamedTuple):
    ns: int


_STEP = st.one_of(
    st.builds(Put, st.sampled_from([b"a", b"b", b"c", b"d", b"e"]), st.sampled_from(USERS)),
    st.builds(
        Learn,
        st.lists(
            st.tuples(
                st.sampled_from([b"", b"a", b"b", b"c", b"d", b"e"]),
                st.sampled_from([None, *USERS]),
            ),
            max_size=6,
        ),
    ),
    st.builds(Tick, st.integers(min_value=0, max_value=40)),
)


@given(st.lists(_STEP, max_size=20), st.integers(min_value=1, max_value=5))
def test_puts_batches_and_expiry_agree_with_one_trace_at_a_time(
    steps: list[Put | Learn | Tick], most: int
) -> None:
    """Whatever mix of puts, batches and clock steps: the same entries as a reference
    that keeps each trace with its own expiry and drops the oldest past the bound."""
    ttl, now = 50, 0
    traces = TraceIdentities(ttl, most)
    reference: dict[bytes, tuple[int, User]] = {}  # insertion order is age order

    def remember(trace_id: bytes, user: User | None) -> None:
        if user is not None and trace_id and trace_id not in reference:
            reference[trace_id] = (now + ttl, user)
            if len(reference) > most:
                del reference[next(iter(reference))]

    for step in steps:
        if isinstance(step, Put):
            traces.put(step.trace_id, step.user, now)
            remember(step.trace_id, step.user)
        elif isinstance(step, Learn):
            traces.learn([t for t, _ in step.pairs], [u for _, u in step.pairs], now)
            for trace_id, user in step.pairs:
                remember(trace_id, user)
        else:
            now += step.ns
            gone = [t for t, (expiry, _) in reference.items() if expiry < now]
            for trace_id in gone:
                del reference[trace_id]
            assert traces.expire(now) == len(gone)
        assert dict(traces.entries) == {t: u for t, (_, u) in reference.items()}
