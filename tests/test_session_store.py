"""Tables for the embedded session store: coverage, merging, expiry, bounds."""

from __future__ import annotations

import pytest

from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.store import NEVER
from processor.model import Session, User

MIKE = User(id="mike", email="mike.chen@example.com", name="Mike Chen")
ANA = User(id="ana", email="ana.lima@example.com")
IP = "172.18.0.5"


def store_with(*sessions: Session, limit: int = 100) -> MemorySessionStore:
    """A store holding ``sessions``."""
    store = MemorySessionStore(limit)
    for s in sessions:
        store.add(s)
    return store


@pytest.mark.parametrize(
    ("t", "expected"),
    [(99, ()), (100, (MIKE,)), (150, (MIKE,)), (200, (MIKE,)), (201, ())],
)
def test_one_session_covers_its_interval(t: int, expected: tuple[User, ...]) -> None:
    """A session covers its start and end inclusive and nothing outside."""
    assert store_with(Session(IP, MIKE, 100, 200)).users_at(IP, t).users == expected


def test_other_address_sees_nothing() -> None:
    """Sessions are keyed by address."""
    assert store_with(Session(IP, MIKE, 100, 200)).users_at("10.0.0.1", 150).users == ()


@pytest.mark.parametrize(
    ("t", "expected"),
    [(120, (MIKE,)), (160, (MIKE, ANA)), (190, (ANA,))],
)
def test_two_users_on_one_address(t: int, expected: tuple[User, ...]) -> None:
    """Overlapping sessions of two users both come back; disjoint times separate them."""
    store = store_with(Session(IP, MIKE, 100, 170), Session(IP, ANA, 150, 300))
    assert set(store.users_at(IP, t).users) == set(expected)


def test_same_user_twice_counts_once() -> None:
    """Two overlapping sessions of one user are merged and return that user once."""
    store = store_with(Session(IP, MIKE, 100, 200), Session(IP, MIKE, 150, 400))
    assert len(store) == 1
    assert store.users_at(IP, 300).users == (MIKE,)
    assert store.users_at(IP, 120).users == (MIKE,)


def test_activity_after_end_extends_session() -> None:
    """A push that starts when the last one ended extends it (TTL after last activity)."""
    store = store_with(Session(IP, MIKE, 100, 200), Session(IP, MIKE, 200, 300))
    assert len(store) == 1


def test_disjoint_sessions_of_one_user_stay_apart() -> None:
    """A gap between two sessions of one user is not covered."""
    store = store_with(Session(IP, MIKE, 100, 200), Session(IP, MIKE, 300, 400))
    assert len(store) == 2
    assert store.users_at(IP, 250).users == ()


@pytest.mark.parametrize(
    ("t", "until"),
    [(50, 100), (100, 151), (160, 300), (250, 300), (320, 351), (400, NEVER)],
)
def test_match_validity(t: int, until: int) -> None:
    """The answer is valid until the next session start or covering session end."""
    store = store_with(Session(IP, MIKE, 100, 150), Session(IP, ANA, 300, 350))
    match = store.users_at(IP, t)
    assert match.until_ns == until


def test_expire_drops_only_ended_sessions() -> None:
    """Expiry removes sessions that ended before the given time and keeps the rest."""
    store = store_with(Session(IP, MIKE, 100, 200), Session(IP, ANA, 100, 500))
    assert store.expire(300) == 1
    assert store.users_at(IP, 150).users == (ANA,)
    assert store.expire(300) == 0


def test_expire_after_merge_uses_the_new_end() -> None:
    """A merged session is not expired at its old end."""
    store = store_with(Session(IP, MIKE, 100, 200), Session(IP, MIKE, 150, 400))
    assert store.expire(300) == 0
    assert store.users_at(IP, 350).users == (MIKE,)


def test_bounded_store_evicts_oldest() -> None:
    """Past the limit, the oldest inserted session goes first."""
    store = store_with(
        Session("10.0.0.1", MIKE, 100, 200), Session("10.0.0.2", ANA, 100, 200), limit=1
    )
    assert len(store) == 1
    assert store.evicted == 1
    assert store.users_at("10.0.0.1", 150).users == ()
    assert store.users_at("10.0.0.2", 150).users == (ANA,)


def test_long_and_short_sessions_mix() -> None:
    """A long session started far back is still found next to many short ones."""
    sessions = [Session(IP, User(id=f"u{i}"), 1000 + i * 10, 1005 + i * 10) for i in range(50)]
    store = store_with(Session(IP, MIKE, 0, 10_000), *sessions, limit=1000)
    assert set(store.users_at(IP, 1002).users) == {MIKE, User(id="u0")}
    assert store.users_at(IP, 1008).users == (MIKE,)


def test_request_events_share_users_and_expire_in_order() -> None:
    """Events keep their user, model and trace, share equal users, and expire by time."""
    store = MemorySessionStore(100)
    for n in range(5):
        user = User(id="mike", email="mike.chen@example.com")  # a fresh, equal object
        store.add(
            Session(
                IP, user, 100 + n, 100 + n, model="gpt-4o", trace_id=f"{n:032x}", kind="request"
            )
        )
    events = store.events_near(IP, 0, 1000)
    assert [e.start_ns for e in events] == [100, 101, 102, 103, 104]
    assert all(e.user is events[0].user for e in events)
    assert events[2].trace_id == f"{2:032x}" and events[2].model == "gpt-4o"
    assert store.expire(102) == 2
    assert [e.start_ns for e in store.events_near(IP, 0, 1000)] == [102, 103, 104]
    assert len(store) == 3


def test_events_are_evicted_oldest_first_when_full() -> None:
    """Past the bound, the oldest request events go before any long session."""
    store = MemorySessionStore(3)
    store.add(Session(IP, MIKE, 0, 10_000))
    for t in (300, 100, 200):
        store.add(Session(IP, ANA, t, t, kind="request"))
    assert store.evicted == 1
    assert [e.start_ns for e in store.events_near(IP, 0, 1000)] == [100, 200]
    assert store.users_at(IP, 50).users == (MIKE,)
