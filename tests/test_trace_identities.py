"""Trace identities: which user each recent trace belongs to, learned span by span or a
batch at a time, with the same answers either way."""

from __future__ import annotations

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
    """Same traces learned in the same order, the first user of a trace kept, and the
    bound applied as each trace arrives."""
    batch, reference = TraceIdentities(60, most), TraceIdentities(60, most)
    learned = batch.learn([t for t, _ in pairs], [u for _, u in pairs], NOW)
    assert learned == _one_by_one(reference, pairs)
    assert dict(batch.entries) == dict(reference.entries)
    assert len(batch) <= most


def test_a_known_trace_keeps_its_first_user() -> None:
    """A later span naming someone else does not move the trace."""
    traces = TraceIdentities(60, 10)
    assert traces.learn([b"t", b"t"], [USERS[0], USERS[1]], NOW) == [b"t"]
    assert traces.learn([b"t"], [USERS[2]], NOW) == []
    assert traces.get(b"t") == USERS[0]
